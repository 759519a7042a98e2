//! The beat: one timer queue over every PeriodicTask, driven by one tokio task that sleeps
//! until the earliest slot. Reconciles feed it (upsert/remove); each entry's state changes
//! in [`super::entry`], and firing runs in its own task per PeriodicTask
//! ([`super::fire`]) so a slow broker never delays the others. A firing starts a [`lead`]
//! ahead of its slot, stamps the task's message (see [`crate::celery::Stamp`]) and hands
//! it to the push thread ([`PushThread`]), which pushes everything due at an instant in one
//! pipeline per broker.
//!
//! Exactly once per slot: the task id is derived from (uid, slot) and the push is the atomic
//! "SET dedupe key NX, then LPUSH" script, so a crash between push and status write, a
//! restart or a second operator cannot push a slot twice.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::entry::{Entry, Update};
use super::fire::{Fired, Firing, fire, probe, watch_broker};
use super::plan::Plan;
use super::run_state::RunState;
use super::stats::Stats;
use crate::broker::{BrokerUrl, Connections, PushThread, PushWindow, UrlUsers};
use crate::metrics::Metrics;
use crate::timer_queue::{TimerQueue, instant_of, sleep_until};

/// A PeriodicTask's key: `namespace/name`.
pub type Key = String;

/// How long before its slot a task's message is built and handed to the push thread, so
/// that a busy main runtime (reconciles, status writes, thousands of tasks on one instant)
/// never makes a push late: a base plus the time building every task's message could take,
/// capped below the shortest interval (1 s). A suspend or spec change inside this window
/// applies from the next slot.
fn lead(tasks: usize) -> TimeDelta {
    const BASE: TimeDelta = TimeDelta::milliseconds(200);
    const PER_TASK: TimeDelta = TimeDelta::microseconds(40);
    const MAX: TimeDelta = TimeDelta::milliseconds(800);
    let tasks = i32::try_from(tasks).unwrap_or(i32::MAX);
    (BASE + PER_TASK * tasks.min(1_000_000)).min(MAX)
}

/// What the controller hands the engine for one PeriodicTask.
#[derive(Clone, Debug)]
pub struct Job {
    pub plan: Plan,
    pub url: BrokerUrl,
    /// The workers' result backend, where a concurrency policy reads the previous run.
    pub results: Option<BrokerUrl>,
    /// The runs its status records: where catch-up starts when the engine first sees it.
    pub status_runs: RunState,
    /// Value of the run-now annotation.
    pub run_now: Option<String>,
}

/// The broker as last seen by the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BrokerState {
    #[default]
    Unknown,
    Reachable,
    Unreachable(String),
}

/// What the engine tells the controller after it acted (for status and events).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub key: Key,
    pub uid: String,
    pub runs: RunState,
    pub next_schedule: Option<DateTime<Utc>>,
    pub broker: BrokerState,
    /// A message that could not be built (it is never pushed).
    pub message_error: Option<String>,
    pub events: Vec<Notice>,
    /// The runs this firing pushed (or found pushed by another replica), oldest first.
    pub pushed: Vec<PushedRun>,
    /// The slots concurrencyPolicy Forbid held back (never pushed), and why.
    pub skipped: Vec<(PushedRun, String)>,
}

/// One run in the broker: its task id, and the slot it is for (for a run-now request, when
/// it was pushed).
#[derive(Clone, Debug, PartialEq)]
pub struct PushedRun {
    pub task_id: String,
    pub due: DateTime<Utc>,
}

/// An event to record on the PeriodicTask.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

enum Command {
    Upsert(Key, Box<Job>),
    Remove(Key),
}

/// Handle of the running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<Command>,
    pub stats: Arc<Stats>,
    window: Arc<PushWindow>,
}

impl Engine {
    /// Starts the engine loop. Reports go to `reports`; `metrics` (if any) mirror the stats.
    pub fn start(reports: mpsc::UnboundedSender<Report>, metrics: Option<Arc<Metrics>>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let pusher = PushThread::start();
        let window = pusher.window();
        let shared = Arc::new(Shared {
            pusher,
            conns: Connections::new(),
            lead_us: AtomicI64::new(0),
            stats: stats.clone(),
            metrics,
        });
        tokio::spawn(run_loop(rx, reports, shared));
        Engine { tx, stats, window }
    }

    /// When the pushes of many tasks go out, which status writes keep clear of.
    pub(crate) fn push_window(&self) -> Arc<PushWindow> {
        self.window.clone()
    }

    pub fn upsert(&self, key: Key, job: Job) {
        // The loop only ends when every handle is gone, so a send cannot fail while we
        // hold one; nothing to do if it did.
        let _ = self.tx.send(Command::Upsert(key, Box::new(job)));
    }

    pub fn remove(&self, key: Key) {
        let _ = self.tx.send(Command::Remove(key));
    }
}

/// What every firing shares.
pub(crate) struct Shared {
    /// Pushes go through the push thread.
    pub(crate) pusher: PushThread,
    /// Connectivity probes.
    pub(crate) conns: Connections,
    /// The current [`lead`] in microseconds (it grows with the number of tasks).
    lead_us: AtomicI64,
    pub(crate) stats: Arc<Stats>,
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl Shared {
    fn set_lead(&self, tasks: usize) {
        let us = lead(tasks).num_microseconds().unwrap_or(0);
        self.lead_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn lead(&self) -> TimeDelta {
        TimeDelta::microseconds(self.lead_us.load(Ordering::Relaxed))
    }

    /// Closes the connections to a broker no task uses any more.
    fn forget(self: &Arc<Self>, url: BrokerUrl) {
        self.pusher.forget(&url);
        let shared = self.clone();
        tokio::spawn(async move { shared.conns.forget(&url).await });
    }
}

type Timers = TimerQueue<Key, DateTime<Utc>>;

/// The brokers whose pushes fail, each watched by one [`watch_broker`] task.
#[derive(Default)]
struct Watched(HashMap<BrokerUrl, AbortHandle>);

impl Watched {
    fn start(
        &mut self,
        url: &BrokerUrl,
        shared: &Arc<Shared>,
        back: &mpsc::UnboundedSender<BrokerUrl>,
    ) {
        if !self.0.contains_key(url) {
            let task = tokio::spawn(watch_broker(url.clone(), shared.clone(), back.clone()));
            self.0.insert(url.clone(), task.abort_handle());
        }
    }

    /// The broker answered (its task ended) or no task uses it any more.
    fn stop(&mut self, url: &BrokerUrl) {
        if let Some(task) = self.0.remove(url) {
            task.abort();
        }
    }
}

fn arm(timers: &mut Timers, e: &mut Entry, at: Option<DateTime<Utc>>, key: &Key) {
    if let Some(t) = e.timer.take() {
        timers.cancel(t);
    }
    e.armed = at;
    e.timer = at.map(|at| timers.push(at, key.clone()));
}

async fn run_loop(
    mut rx: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
    shared: Arc<Shared>,
) {
    let mut entries: HashMap<Key, Entry> = HashMap::new();
    let mut timers = Timers::default();
    let mut users = UrlUsers::default();
    let mut watched = Watched::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Fired>();
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<BrokerUrl>();
    loop {
        let wake = timers.earliest().map(instant_of);
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Remove(key) => {
                        if let Some(mut entry) = entries.remove(&key) {
                            arm(&mut timers, &mut entry, None, &key);
                            if users.release(&entry.job.url) {
                                watched.stop(&entry.job.url);
                                shared.forget(entry.job.url.clone());
                            }
                        }
                        shared.set_lead(entries.len());
                    }
                    Command::Upsert(key, job) => {
                        let now = Utc::now();
                        let job = Arc::new(*job);
                        users.add(&job.url);
                        let (entry, update, old_url) = match entries.entry(key.clone()) {
                            Slot::Occupied(o) => {
                                let e = o.into_mut();
                                let old_url = e.job.url.clone();
                                let update = e.update(job, now);
                                (e, update, Some(old_url))
                            }
                            Slot::Vacant(v) => (v.insert(Entry::new(job)), Update::Fresh, None),
                        };
                        if let Some(old) = old_url
                            && users.release(&old)
                        {
                            watched.stop(&old);
                            shared.forget(old);
                        }
                        let fresh = update == Update::Fresh;
                        let mut changed = update == Update::Same { suspend_changed: true };
                        if !entry.busy {
                            let at = entry.next_timer(now, shared.lead());
                            if fresh || entry.armed != at {
                                changed |= entry.armed != at;
                                arm(&mut timers, entry, at, &key);
                            }
                        }
                        if fresh || changed {
                            let _ = reports.send(entry.report(&key, vec![]));
                        }
                        if fresh {
                            tokio::spawn(probe(key, entry.job.clone(), shared.clone(), done_tx.clone()));
                        }
                        shared.set_lead(entries.len());
                    }
                }
            }
            Some(mut fired) = done_rx.recv() => {
                let key = fired.key.clone();
                let Some(entry) = entries.get_mut(&key) else { continue };
                if entry.job.plan.uid != fired.uid {
                    continue;
                }
                let probe = fired.probe;
                let pushed = std::mem::take(&mut fired.pushed);
                let skipped = fired.skipped_runs();
                let events = entry.absorb(fired);
                if !probe {
                    let at = entry.timer_after_firing(Utc::now(), shared.lead());
                    arm(&mut timers, entry, at, &key);
                }
                // Watched after a failed probe too: else a task whose next slot is an hour
                // away would show Unreachable for that hour.
                if entry.broker_unreachable() {
                    watched.start(&entry.job.url, &shared, &back_tx);
                }
                let mut report = entry.report(&key, events);
                report.pushed = pushed;
                report.skipped = skipped;
                let _ = reports.send(report);
            }
            Some(url) = back_rx.recv() => {
                watched.stop(&url);
                let now = Utc::now();
                for (key, entry) in entries.iter_mut() {
                    if entry.job.url != url {
                        continue;
                    }
                    if entry.failing() {
                        if !entry.busy {
                            arm(&mut timers, entry, Some(now), key);
                        }
                    } else if entry.broker_unreachable() {
                        // Only its probe had failed: the watcher's PING answers for it.
                        let answered = Fired::new(key.clone(), entry.job.plan.uid.clone(), true, RunState::default());
                        let events = entry.absorb(answered);
                        let _ = reports.send(entry.report(key, events));
                    }
                }
            }
            _ = sleep_until(wake) => {
                let now = Utc::now();
                while let Some(key) = timers.pop_due(now) {
                    let Some(entry) = entries.get_mut(&key) else { continue };
                    entry.timer = None;
                    entry.armed = None;
                    if entry.busy {
                        continue;
                    }
                    entry.busy = true;
                    let firing = Firing {
                        key,
                        job: entry.job.clone(),
                        runs: entry.runs.clone(),
                        cursor: entry.cursor(),
                        run_now: entry.run_now_pending(),
                    };
                    tokio::spawn(fire(firing, shared.clone(), done_tx.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::test_server::Server;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn lead_grows_with_the_tasks_and_stays_below_a_second() {
        assert_eq!(lead(1).num_milliseconds(), 200);
        assert_eq!(lead(5_000).num_milliseconds(), 400);
        assert_eq!(lead(10_000).num_milliseconds(), 600);
        assert_eq!(lead(1_000_000).num_milliseconds(), 800);
        assert_eq!(lead(usize::MAX).num_milliseconds(), 800);
    }

    fn job(name: &str, url: &BrokerUrl) -> Job {
        job_every(name, url, "1s")
    }

    fn job_every(name: &str, url: &BrokerUrl, every: &str) -> Job {
        let spec = serde_json::from_value(serde_json::json!({
            "task": "a.b", "schedule": {"every": every}, "broker": {"redisCache": "r"},
        }))
        .expect("spec");
        let mut pt = crate::api::PeriodicTask::new(name, spec);
        pt.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
        Job {
            plan: super::super::plan::build(&pt, Utc::now()).expect("plan"),
            url: url.clone(),
            results: None,
            status_runs: RunState::default(),
            run_now: None,
        }
    }

    #[tokio::test]
    async fn the_connections_of_a_broker_close_when_its_last_task_goes() {
        let server = Server::start().await;
        let idle = server.clients().await;
        let (tx, mut reports) = mpsc::unbounded_channel();
        let engine = Engine::start(tx, None);
        engine.upsert("ns/a".into(), job("a", &server.url));
        engine.upsert("ns/b".into(), job("b", &server.url));
        // Both run (the probe's connection and the push thread's).
        while engine.stats.snapshot().samples < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(server.clients().await, idle + 2);
        engine.remove("ns/a".into());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.clients().await, idle + 2, "b still uses the broker");
        engine.remove("ns/b".into());
        server.wait_for_clients(idle).await;
        while reports.try_recv().is_ok() {}
    }

    /// Waits for a report of every key in `keys` whose broker state is `want`.
    async fn until_all(
        reports: &mut mpsc::UnboundedReceiver<Report>,
        keys: &[String],
        want: fn(&BrokerState) -> bool,
    ) {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < keys.len() {
            let r = reports.recv().await.expect("engine runs");
            if want(&r.broker) {
                seen.insert(r.key);
            }
        }
    }

    #[tokio::test]
    async fn a_broker_down_at_first_sight_is_reported_reachable_when_it_answers_not_at_the_next_slot()
     {
        let mut server = Server::start().await;
        server.stop();
        let (tx, mut reports) = mpsc::unbounded_channel();
        let engine = Engine::start(tx, None);
        let keys = vec!["ns/hourly".to_string()];
        engine.upsert(keys[0].clone(), job_every("hourly", &server.url, "1h"));
        until_all(&mut reports, &keys, |b| {
            matches!(b, BrokerState::Unreachable(_))
        })
        .await;
        server.restart().await;
        tokio::time::timeout(
            Duration::from_secs(3),
            until_all(&mut reports, &keys, |b| *b == BrokerState::Reachable),
        )
        .await
        .expect(
            "Reachable within 3 s of the broker's return, though the next slot is an hour away",
        );
    }

    #[tokio::test]
    async fn a_returning_broker_resumes_its_waiting_tasks_at_once_not_after_their_backoff() {
        let mut server = Server::start().await;
        let (tx, mut reports) = mpsc::unbounded_channel();
        let engine = Engine::start(tx, None);
        let keys: Vec<String> = (0..5).map(|i| format!("ns/t{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            engine.upsert(key.clone(), job(&format!("t{i}"), &server.url));
        }
        until_all(&mut reports, &keys, |b| *b == BrokerState::Reachable).await;
        server.stop();
        until_all(&mut reports, &keys, |b| {
            matches!(b, BrokerState::Unreachable(_))
        })
        .await;
        // Failed pushes at 1 s and 2 s of backoff: the next retries are 4 s away.
        tokio::time::sleep(Duration::from_secs(4)).await;
        server.restart().await;
        let back = Instant::now();
        tokio::time::timeout(
            Duration::from_millis(1500),
            until_all(&mut reports, &keys, |b| *b == BrokerState::Reachable),
        )
        .await
        .expect("every task pushes again within 1.5 s of the broker's return");
        assert!(back.elapsed() < Duration::from_millis(1500));
    }
}
