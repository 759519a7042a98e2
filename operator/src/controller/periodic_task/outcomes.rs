//! Follows pushed runs in their workers' result backend until each ends. Reads are batched
//! (one MGET per backend per [`TICK`] for the runs due a look), each run is looked at less
//! often the longer it waits, and a final run is never read again. The follower runs beside
//! the engine, never in the push path.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;

use super::engine::Key;
use crate::broker::{BrokerError, BrokerUrl, Connections};
use crate::celery::result::{ResultMeta, result_key};

/// How often the follower wakes to read what is due.
const TICK: Duration = Duration::from_millis(250);
/// The first look, after the slot; later looks back off up to [`LOOK_MAX`].
const LOOK_FIRST: TimeDelta = TimeDelta::seconds(1);
const LOOK_MAX: TimeDelta = TimeDelta::seconds(10);
/// A run no worker wrote anything for this long after its slot is UNKNOWN: PENDING is
/// never stored, so an expired result, `ignore_result` or a lost message look the same.
pub(crate) const PENDING_UNKNOWN_AFTER: TimeDelta = TimeDelta::hours(1);
/// A run still not final this long after its slot is UNKNOWN (Celery's default
/// `result_expires`: after it even a final state may be gone).
pub(crate) const FOLLOW_FOR: TimeDelta = TimeDelta::hours(24);
/// Keys per MGET: a bounded reply, so no read holds Redis for long.
const BATCH: usize = 500;

/// A run to follow.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) key: Key,
    pub(crate) uid: String,
    pub(crate) task_id: String,
    pub(crate) due: DateTime<Utc>,
}

/// What the backend said of a run: a new state, or `meta` None for nothing within the wait.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) key: Key,
    pub(crate) uid: String,
    pub(crate) task_id: String,
    pub(crate) meta: Option<ResultMeta>,
}

/// One followed run: when to look next, what was seen last. Pure.
#[derive(Debug)]
struct Followed {
    run: Run,
    seen: Option<ResultMeta>,
    next_look: DateTime<Utc>,
    gap: TimeDelta,
}

/// What one look decided.
#[derive(Debug, PartialEq)]
enum Look {
    /// Report `meta` (None: UNKNOWN) and stop following.
    Final(Option<ResultMeta>),
    /// Report the new state, keep following.
    Changed(ResultMeta),
    Unchanged,
}

impl Followed {
    fn new(run: Run, now: DateTime<Utc>) -> Self {
        Self {
            next_look: (run.due + LOOK_FIRST).max(now),
            run,
            seen: None,
            gap: LOOK_FIRST,
        }
    }

    fn observe(&mut self, meta: Option<ResultMeta>, now: DateTime<Utc>) -> Look {
        let age = now - self.run.due;
        let look = match meta {
            Some(m) if m.settled() => return Look::Final(Some(m)),
            _ if age >= FOLLOW_FOR => return Look::Final(None),
            None if self.seen.is_none() && age >= PENDING_UNKNOWN_AFTER => {
                return Look::Final(None);
            }
            Some(m) if self.seen.as_ref() != Some(&m) => {
                self.seen = Some(m.clone());
                // A new state (a retry's next attempt is near): look soon again.
                self.gap = LOOK_FIRST;
                Look::Changed(m)
            }
            _ => {
                self.gap = (self.gap * 2).min(LOOK_MAX);
                Look::Unchanged
            }
        };
        self.next_look = now + self.gap;
        look
    }
}

enum Command {
    Follow(BrokerUrl, Run),
    Forget(Key),
}

/// The handle reconciles and the status writer use.
#[derive(Clone)]
pub(crate) struct Outcomes {
    commands: mpsc::UnboundedSender<Command>,
}

impl Outcomes {
    /// Starts the follower; what it learns goes to `report`.
    pub(crate) fn start(report: mpsc::UnboundedSender<Outcome>) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(follow_loop(rx, report));
        Self { commands }
    }

    pub(crate) fn follow(&self, backend: BrokerUrl, run: Run) {
        let _ = self.commands.send(Command::Follow(backend, run));
    }

    /// Stops following every run of `key` (deleted, or its backend changed).
    pub(crate) fn forget(&self, key: &Key) {
        let _ = self.commands.send(Command::Forget(key.clone()));
    }
}

type Backends = HashMap<BrokerUrl, HashMap<String, Followed>>;

async fn follow_loop(
    mut commands: mpsc::UnboundedReceiver<Command>,
    report: mpsc::UnboundedSender<Outcome>,
) {
    let conns = Connections::new();
    let mut backends: Backends = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Follow(url, run)) => {
                    backends
                        .entry(url)
                        .or_default()
                        .entry(run.task_id.clone())
                        .or_insert_with(|| Followed::new(run, Utc::now()));
                }
                Some(Command::Forget(key)) => {
                    for runs in backends.values_mut() {
                        runs.retain(|_, f| f.run.key != key);
                    }
                    let idle: Vec<BrokerUrl> =
                        backends.iter().filter(|(_, r)| r.is_empty()).map(|(u, _)| u.clone()).collect();
                    for url in idle {
                        backends.remove(&url);
                        conns.forget(&url).await;
                    }
                }
                None => return,
            },
            _ = tick.tick() => look(&conns, &mut backends, &report).await,
        }
    }
}

/// Reads every run due a look, in batches per backend, and reports what changed.
async fn look(
    conns: &Connections,
    backends: &mut Backends,
    report: &mpsc::UnboundedSender<Outcome>,
) {
    let now = Utc::now();
    for (url, runs) in backends.iter_mut() {
        let due: Vec<String> = runs
            .iter()
            .filter(|(_, f)| f.next_look <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for batch in due.chunks(BATCH) {
            let values = match read(conns, url, batch).await {
                Ok(values) => values,
                Err(err) => {
                    // Nothing is known: the runs keep their state and are read again later.
                    tracing::debug!(error = %err, "result backend read failed; retrying");
                    conns.forget(url).await;
                    for id in batch {
                        if let Some(f) = runs.get_mut(id) {
                            f.next_look = now + LOOK_MAX;
                        }
                    }
                    break;
                }
            };
            for (id, raw) in batch.iter().zip(values) {
                let meta = raw.and_then(|raw| match ResultMeta::parse(&raw) {
                    Ok(m) => Some(m),
                    Err(err) => {
                        tracing::debug!(task_id = %id, error = %err, "unreadable result value");
                        None
                    }
                });
                let Some(f) = runs.get_mut(id) else { continue };
                let (meta, done) = match f.observe(meta, now) {
                    Look::Final(meta) => (meta, true),
                    Look::Changed(meta) => (Some(meta), false),
                    Look::Unchanged => continue,
                };
                let _ = report.send(Outcome {
                    key: f.run.key.clone(),
                    uid: f.run.uid.clone(),
                    task_id: id.clone(),
                    meta,
                });
                if done {
                    runs.remove(id);
                }
            }
        }
    }
    backends.retain(|_, runs| !runs.is_empty());
}

async fn read(
    conns: &Connections,
    url: &BrokerUrl,
    task_ids: &[String],
) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
    let mut conn = conns.get(url).await?;
    let keys: Vec<String> = task_ids.iter().map(|id| result_key(id)).collect();
    redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::periodic_task::TaskState;
    use crate::broker::test_server::Server;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + s, 0).expect("ts")
    }

    fn run(id: &str, due: DateTime<Utc>) -> Run {
        Run {
            key: "ns/t".into(),
            uid: "u".into(),
            task_id: id.into(),
            due,
        }
    }

    fn meta(state: TaskState) -> Option<ResultMeta> {
        Some(ResultMeta::of(state))
    }

    #[test]
    fn a_waiting_run_is_looked_at_less_and_less_often_and_unknown_after_the_wait() {
        let mut f = Followed::new(run("a", at(0)), at(0));
        assert_eq!(f.next_look, at(1));
        let mut looks = Vec::new();
        let mut now = f.next_look;
        while now < at(60) {
            assert_eq!(f.observe(None, now), Look::Unchanged);
            looks.push((f.next_look - now).num_seconds());
            now = f.next_look;
        }
        assert_eq!(&looks[..5], [2, 4, 8, 10, 10]);
        let late = at(0) + PENDING_UNKNOWN_AFTER;
        assert_eq!(f.observe(None, late), Look::Final(None));
    }

    #[test]
    fn each_new_state_is_reported_once_and_a_final_one_ends_the_following() {
        let mut f = Followed::new(run("a", at(0)), at(0));
        assert_eq!(
            f.observe(meta(TaskState::Retry), at(1)),
            Look::Changed(meta(TaskState::Retry).expect("m"))
        );
        assert_eq!(f.next_look, at(2), "a new state is looked at again soon");
        assert_eq!(f.observe(meta(TaskState::Retry), at(2)), Look::Unchanged);
        // A retry seen once is not UNKNOWN after the pending wait; only after FOLLOW_FOR.
        let later = at(0) + PENDING_UNKNOWN_AFTER;
        assert_eq!(f.observe(meta(TaskState::Retry), later), Look::Unchanged);
        assert_eq!(
            f.observe(meta(TaskState::Retry), at(0) + FOLLOW_FOR),
            Look::Final(None)
        );
        let mut f = Followed::new(run("b", at(0)), at(0));
        assert_eq!(
            f.observe(meta(TaskState::Success), at(1)),
            Look::Final(meta(TaskState::Success))
        );
    }

    #[tokio::test]
    async fn results_are_read_in_batches_and_a_final_run_is_not_read_again() {
        let server = Server::start().await;
        let mut conn = redis::Client::open(server.url.expose())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let success = std::fs::read(format!(
            "{}/tests/data/celery-wire/result_meta_success.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("capture");
        let _: () = redis::cmd("SET")
            .arg(result_key("done"))
            .arg(&success)
            .query_async(&mut conn)
            .await
            .expect("set");
        let conns = Connections::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut backends: Backends = HashMap::new();
        let runs = backends.entry(server.url.clone()).or_default();
        let past = Utc::now() - TimeDelta::seconds(100);
        // More runs than one batch: all are read in this one look.
        for i in 0..(BATCH + 10) {
            let id = format!("waiting-{i}");
            runs.insert(id.clone(), Followed::new(run(&id, past), past));
        }
        runs.insert("done".into(), Followed::new(run("done", past), past));
        look(&conns, &mut backends, &tx).await;
        let outcome = rx.try_recv().expect("one outcome");
        assert_eq!(outcome.task_id, "done");
        assert_eq!(outcome.meta.map(|m| m.state), Some(TaskState::Success));
        assert!(rx.try_recv().is_err(), "waiting runs report nothing");
        let runs = &backends[&server.url];
        assert!(
            !runs.contains_key("done"),
            "a final run is followed no more"
        );
        assert_eq!(runs.len(), BATCH + 10);
        assert!(
            runs.values().all(|f| f.next_look > Utc::now()),
            "every run was read"
        );
    }
}
