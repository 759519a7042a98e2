//! The beat: one timer queue over every PeriodicTask, driven by one tokio task that sleeps
//! until the earliest slot. Reconciles feed it (upsert/remove); firing runs in its own task
//! per PeriodicTask so a slow broker never delays the others. A firing starts a [`lead`]
//! ahead of its slot, stamps the task's message (see [`crate::celery::Stamp`]) and hands
//! it to the push thread ([`PushThread`]), which pushes everything due at an instant in one
//! pipeline per broker.
//!
//! Exactly once per slot: the task id is derived from (uid, slot) and the push is the atomic
//! "SET dedupe key NX, then LPUSH" script, so a crash between push and status write, a
//! restart or a second operator cannot push a slot twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::plan::{Plan, run_now_task_id};
use super::slots;
use super::stats::Stats;
use crate::broker::{BrokerError, Connections, PublishOutcome, Push, PushThread, RunCounter};
use crate::celery::message::{EncodeError, EncodedMessage};
use crate::celery::{Field, dedupe_key, runs_key, task_id_for_slot};
use crate::metrics::{FailureLabels, Metrics};

/// A PeriodicTask's key: `namespace/name`.
pub type Key = String;

/// Dedupe keys of run-now requests live this long (annotation values are not reused).
pub const RUN_NOW_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Life of a task's run counter in the broker. It only bridges a push and the status write
/// that records it; once expired it starts again from the count the engine knows.
const RUNS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
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
/// Retry backoff after a failed push: 1 s doubling up to 30 s.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A broker URL; it holds a password, so Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl(pub String);

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerUrl(<redacted>)")
    }
}

/// What the controller hands the engine for one PeriodicTask.
#[derive(Clone, Debug)]
pub struct Job {
    pub plan: Plan,
    pub url: BrokerUrl,
    /// `status.lastScheduleTime`: where catch-up starts when the engine first sees the task.
    pub last_schedule: Option<DateTime<Utc>>,
    pub total_runs: i64,
    pub last_task_id: Option<String>,
    /// Value of the run-now annotation, and the last value acted on (status).
    pub run_now: Option<String>,
    pub last_run_now: Option<String>,
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
    pub last_schedule: Option<DateTime<Utc>>,
    pub next_schedule: Option<DateTime<Utc>>,
    pub last_task_id: Option<String>,
    pub total_runs: i64,
    pub last_run_now: Option<String>,
    pub broker: BrokerState,
    /// A message that could not be built (it is never pushed).
    pub message_error: Option<String>,
    pub events: Vec<Notice>,
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
}

impl Engine {
    /// Starts the engine loop. Reports go to `reports`; `metrics` (if any) mirror the stats.
    pub fn start(reports: mpsc::UnboundedSender<Report>, metrics: Option<Arc<Metrics>>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            pusher: PushThread::start(),
            conns: Connections::new(),
            lead_us: AtomicI64::new(0),
            stats: stats.clone(),
            metrics,
        });
        tokio::spawn(run_loop(rx, reports, shared));
        Engine { tx, stats }
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

struct Shared {
    /// Pushes go through the push thread.
    pusher: PushThread,
    /// Connectivity probes.
    conns: Connections,
    /// The current [`lead`] in microseconds (it grows with the number of tasks).
    lead_us: AtomicI64,
    stats: Arc<Stats>,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    fn set_lead(&self, tasks: usize) {
        let us = lead(tasks).num_microseconds().unwrap_or(0);
        self.lead_us.store(us, Ordering::Relaxed);
    }

    fn lead(&self) -> TimeDelta {
        TimeDelta::microseconds(self.lead_us.load(Ordering::Relaxed))
    }
}

struct Entry {
    job: Arc<Job>,
    last: Option<DateTime<Utc>>,
    total: i64,
    last_task_id: Option<String>,
    last_run_now: Option<String>,
    /// When the timer is armed for (a slot or a retry).
    armed: Option<DateTime<Utc>>,
    /// Heap items with another sequence number are stale.
    seq: u64,
    busy: bool,
    failures: u32,
    broker: BrokerState,
    message_error: Option<String>,
    /// When the task was last resumed: no slot at or before it runs.
    resumed: Option<DateTime<Utc>>,
}

impl Entry {
    /// Where the search for due slots starts.
    fn cursor(&self) -> Option<DateTime<Utc>> {
        self.last.max(self.resumed)
    }

    fn report(&self, key: &Key, events: Vec<Notice>) -> Report {
        let next = if self.job.plan.suspend {
            None
        } else {
            self.job.plan.next_slot(self.cursor())
        };
        Report {
            key: key.clone(),
            uid: self.job.plan.uid.clone(),
            last_schedule: self.last,
            next_schedule: next,
            last_task_id: self.last_task_id.clone(),
            total_runs: self.total,
            last_run_now: self.last_run_now.clone(),
            broker: self.broker.clone(),
            message_error: self.message_error.clone(),
            events,
        }
    }

    fn run_now_pending(&self) -> Option<String> {
        match (&self.job.run_now, &self.last_run_now) {
            (Some(v), last) if !v.is_empty() && last.as_ref() != Some(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// What one firing (or a connectivity probe) did.
struct Fired {
    key: Key,
    uid: String,
    probe: bool,
    /// The newest slot handled (pushed, found pushed already, or dropped by the policy).
    last: Option<DateTime<Utc>>,
    /// The run count the broker's counter returned last.
    total: Option<i64>,
    last_task_id: Option<String>,
    run_now_done: Option<String>,
    error: Option<FireError>,
    message_error: Option<String>,
    skipped: bool,
}

enum FireError {
    Broker(BrokerError),
}

async fn run_loop(
    mut rx: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
    shared: Arc<Shared>,
) {
    let mut entries: HashMap<Key, Entry> = HashMap::new();
    let mut timers = Timers::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Fired>();
    loop {
        let wake = timers.earliest().map(instant_of);
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Remove(key) => {
                        // Its heap items go stale: nothing matches their sequence any more.
                        entries.remove(&key);
                        shared.set_lead(entries.len());
                    }
                    Command::Upsert(key, job) => {
                        let now = Utc::now();
                        let was_suspended = entries.get(&key).map(|e| e.job.plan.suspend);
                        shared.set_lead(entries.len() + 1);
                        let (entry, fresh) = upsert(&mut entries, &key, Arc::new(*job), now);
                        let mut changed = was_suspended != Some(entry.job.plan.suspend);
                        if !entry.busy {
                            let at = next_timer(entry, now, shared.lead());
                            if fresh || entry.armed != at {
                                changed |= entry.armed != at;
                                timers.arm(entry, at, &key);
                            }
                        }
                        if changed && !fresh {
                            let _ = reports.send(entry.report(&key, vec![]));
                        }
                        if fresh {
                            let _ = reports.send(entry.report(&key, vec![]));
                            tokio::spawn(probe(key, entry.job.clone(), shared.clone(), done_tx.clone()));
                        }
                    }
                }
            }
            Some(fired) = done_rx.recv() => {
                let key = fired.key.clone();
                let Some(entry) = entries.get_mut(&key) else { continue };
                if entry.job.plan.uid != fired.uid {
                    continue;
                }
                let probe = fired.probe;
                let events = absorb(entry, fired);
                if !probe {
                    let now = Utc::now();
                    let at = if entry.failures > 0 {
                        chrono::TimeDelta::from_std(backoff(entry.failures))
                            .ok()
                            .map(|d| now + d)
                    } else {
                        next_timer(entry, now, shared.lead())
                    };
                    timers.arm(entry, at, &key);
                }
                let _ = reports.send(entry.report(&key, events));
            }
            _ = sleep_until(wake), if wake.is_some() => {
                let now = Utc::now();
                while let Some((seq, key)) = timers.pop_due(now) {
                    let Some(entry) = entries.get_mut(&key) else { continue };
                    if entry.seq != seq || entry.busy {
                        continue;
                    }
                    entry.busy = true;
                    entry.armed = None;
                    let cursor = entry.cursor();
                    let run_now = entry.run_now_pending();
                    tokio::spawn(fire(
                        key,
                        entry.job.clone(),
                        cursor,
                        entry.total,
                        run_now,
                        shared.clone(),
                        done_tx.clone(),
                    ));
                }
            }
        }
    }
}

/// The timer queue: a min-heap of (instant, sequence, key); an entry re-armed gets a new
/// sequence number, which makes its older items stale instead of searching the heap.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, Key)>>,
    seq: u64,
}

impl Timers {
    fn arm(&mut self, e: &mut Entry, at: Option<DateTime<Utc>>, key: &Key) {
        self.seq += 1;
        e.seq = self.seq;
        e.armed = at;
        if let Some(at) = at {
            self.heap.push(Reverse((at, self.seq, key.clone())));
        }
    }

    fn earliest(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self, now: DateTime<Utc>) -> Option<(u64, Key)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                self.heap.pop().map(|Reverse((_, seq, key))| (seq, key))
            }
            _ => None,
        }
    }
}

fn instant_of(at: DateTime<Utc>) -> Instant {
    let ahead = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + ahead
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(MAX_BACKOFF)
}

/// Inserts or updates the entry of `key`; true when it is new (first sight, or the object
/// was recreated under the same name).
fn upsert<'a>(
    entries: &'a mut HashMap<Key, Entry>,
    key: &Key,
    job: Arc<Job>,
    now: DateTime<Utc>,
) -> (&'a mut Entry, bool) {
    use std::collections::hash_map::Entry as Slot;
    let fresh = |job: Arc<Job>| Entry {
        last: job.last_schedule,
        total: job.total_runs,
        last_task_id: job.last_task_id.clone(),
        last_run_now: job.last_run_now.clone(),
        job,
        resumed: None,
        armed: None,
        seq: 0,
        busy: false,
        failures: 0,
        broker: BrokerState::Unknown,
        message_error: None,
    };
    match entries.entry(key.clone()) {
        Slot::Occupied(o) if o.get().job.plan.uid == job.plan.uid => {
            let e = o.into_mut();
            // Status can be ahead of memory only if someone else pushed (another replica).
            if job.last_schedule > e.last {
                e.last = job.last_schedule;
                e.last_task_id = job.last_task_id.clone();
            }
            e.total = e.total.max(job.total_runs);
            if e.last_run_now.is_none() {
                e.last_run_now = job.last_run_now.clone();
            }
            // Slots that fell while suspended are skipped, not caught up.
            if e.job.plan.suspend && !job.plan.suspend {
                e.resumed = Some(now);
            }
            if e.job.plan.template != job.plan.template
                || e.job.plan.transport != job.plan.transport
            {
                e.message_error = None;
            }
            e.job = job;
            (e, false)
        }
        Slot::Occupied(mut o) => {
            o.insert(fresh(job));
            (o.into_mut(), true)
        }
        Slot::Vacant(v) => (v.insert(fresh(job)), true),
    }
}

/// When to fire next: at once for a run-now request, else at the next slot (at once if that
/// is already past: catch-up), never while suspended.
fn next_timer(e: &Entry, now: DateTime<Utc>, lead: TimeDelta) -> Option<DateTime<Utc>> {
    if e.run_now_pending().is_some() {
        return Some(now);
    }
    if e.job.plan.suspend {
        return None;
    }
    e.job
        .plan
        .next_slot(e.cursor())
        .map(|slot| (slot - lead).max(now))
}

/// Takes a firing's result into the entry; returns the events to record.
fn absorb(e: &mut Entry, fired: Fired) -> Vec<Notice> {
    let mut events = Vec::new();
    if !fired.probe {
        e.busy = false;
    }
    if fired.last > e.last {
        e.last = fired.last;
    }
    // The broker counts pushes (a crash cannot lose one); never go backwards.
    e.total = e.total.max(fired.total.unwrap_or(0));
    if fired.last_task_id.is_some() {
        e.last_task_id = fired.last_task_id;
    }
    if let Some(v) = fired.run_now_done {
        events.push(Notice {
            type_: EventType::Normal,
            reason: "RunNow",
            note: format!("pushed the run requested by {RUN_NOW} = {v:?}"),
        });
        e.last_run_now = Some(v);
    }
    if fired.skipped {
        events.push(Notice {
            type_: EventType::Normal,
            reason: "MissedRuns",
            note: format!(
                "missed slots were skipped (missedRunPolicy {:?})",
                e.job.plan.policy
            ),
        });
    }
    if let Some(m) = fired.message_error {
        if e.message_error.as_ref() != Some(&m) {
            events.push(Notice {
                type_: EventType::Warning,
                reason: "InvalidMessage",
                note: format!("not pushed: {m}"),
            });
        }
        e.message_error = Some(m);
    }
    match fired.error {
        None => {
            if matches!(e.broker, BrokerState::Unreachable(_)) {
                events.push(Notice {
                    type_: EventType::Normal,
                    reason: "BrokerReachable",
                    note: "the broker is reachable again".into(),
                });
            }
            e.broker = BrokerState::Reachable;
            if !fired.probe {
                e.failures = 0;
            }
        }
        Some(FireError::Broker(err)) => {
            let text = err.to_string();
            if !matches!(e.broker, BrokerState::Unreachable(_)) {
                events.push(Notice {
                    type_: EventType::Warning,
                    reason: "BrokerUnreachable",
                    note: format!("{text}; retrying with backoff"),
                });
            }
            e.broker = BrokerState::Unreachable(text);
            if !fired.probe {
                e.failures += 1;
            }
        }
    }
    events
}

const RUN_NOW: &str = crate::api::periodic_task::RUN_NOW_ANNOTATION;

/// Pushes what is due for one task: a pending run-now request, then the slots in
/// (cursor, now] under the missed-run policy.
async fn fire(
    key: Key,
    job: Arc<Job>,
    cursor: Option<DateTime<Utc>>,
    total: i64,
    run_now: Option<String>,
    shared: Arc<Shared>,
    done: mpsc::UnboundedSender<Fired>,
) {
    let plan = &job.plan;
    let mut out = Fired {
        key,
        uid: plan.uid.clone(),
        probe: false,
        last: None,
        total: None,
        last_task_id: None,
        run_now_done: None,
        error: None,
        message_error: None,
        skipped: false,
    };
    if let Err(err) = push_due(&job, cursor, total, run_now, &shared, &mut out).await {
        shared.stats.failed();
        if let Some(m) = &shared.metrics {
            m.push_failures
                .get_or_create(&FailureLabels {
                    reason: err.metric_label().into(),
                })
                .inc();
        }
        out.error = Some(FireError::Broker(err));
    }
    let _ = done.send(out);
}

async fn push_due(
    job: &Job,
    cursor: Option<DateTime<Utc>>,
    total: i64,
    run_now: Option<String>,
    shared: &Shared,
    out: &mut Fired,
) -> Result<(), BrokerError> {
    let plan = &job.plan;
    let prefix = &plan.transport.global_key_prefix;
    let runs_key = runs_key(prefix, &plan.uid);
    let push = |dedupe_key, dedupe_ttl, enc: EncodedMessage, seed| Push {
        dedupe_key,
        dedupe_ttl,
        queue_key: enc.queue_key,
        envelope: enc.envelope,
        counter: RunCounter {
            key: runs_key.clone(),
            seed,
            ttl: RUNS_TTL,
        },
    };
    let url = &job.url.0;
    if let Some(value) = run_now {
        let id = run_now_task_id(&plan.uid, &value);
        let now = Utc::now();
        match plan.template.encode(&plan.transport, id, now, now) {
            Ok(enc) => {
                let p = push(dedupe_key(prefix, id), RUN_NOW_TTL, enc, total);
                let (published, acked) = shared.pusher.push(url, Instant::now(), p).await?;
                count(shared, published.outcome, None, acked);
                out.total = Some(published.runs);
                out.last_task_id = Some(id.to_string());
            }
            Err(e) => out.message_error = Some(e.to_string()),
        }
        out.run_now_done = Some(value);
    }
    if plan.suspend {
        return Ok(());
    }
    // The timer wakes `lead` early: messages are built before their slot, so at the slot
    // only the push is left.
    let due = slots::due(plan, cursor, Utc::now() + shared.lead());
    out.skipped = due.skipped;
    let mut ready = Vec::with_capacity(due.slots.len());
    for slot in due.slots {
        let id = match task_id_for_slot(&plan.uid, &slot) {
            Ok(id) => id,
            Err(e) => {
                out.message_error = Some(e.to_string());
                out.last = Some(slot);
                continue;
            }
        };
        match plan.encode_run(id, slot, Utc::now()) {
            Ok(enc) => ready.push((slot, id, Some(enc))),
            // Late enough that it would expire before a worker sees it: a missed run.
            Err(EncodeError::Invalid(v)) if v.field == Field::Expires => {
                out.skipped = true;
                shared.stats.skipped(1);
                ready.push((slot, id, None));
            }
            Err(e) => {
                out.message_error = Some(e.to_string());
                ready.push((slot, id, None));
            }
        }
    }
    for (slot, id, enc) in ready {
        if let Some(enc) = enc {
            let seed = out.total.unwrap_or(total);
            let p = push(dedupe_key(prefix, id), plan.dedupe_ttl, enc, seed);
            let (published, acked) = shared.pusher.push(url, instant_of(slot), p).await?;
            count(shared, published.outcome, Some(slot), acked);
            out.total = Some(published.runs);
            out.last_task_id = Some(id.to_string());
        }
        out.last = Some(slot);
    }
    if due.newest > out.last {
        out.last = due.newest;
    }
    Ok(())
}

/// Lateness is the broker's acknowledgement minus the slot.
fn count(
    shared: &Shared,
    outcome: PublishOutcome,
    slot: Option<DateTime<Utc>>,
    acked: DateTime<Utc>,
) {
    match outcome {
        PublishOutcome::Pushed => {
            let lateness = slot
                .and_then(|s| (acked - s).to_std().ok())
                .unwrap_or(Duration::ZERO);
            if slot.is_some() {
                shared.stats.pushed(lateness);
                tracing::trace!(lateness_us = lateness.as_micros() as u64, "pushed");
            } else {
                shared.stats.pushed_unscheduled();
            }
            if let Some(m) = &shared.metrics {
                m.pushes.inc();
                if slot.is_some() {
                    m.schedule_lateness.observe(lateness.as_secs_f64());
                }
            }
        }
        PublishOutcome::Duplicate => shared.stats.duplicate(),
    }
}

/// Connects (and PINGs) so BrokerReachable is known before the first slot.
async fn probe(key: Key, job: Arc<Job>, shared: Arc<Shared>, done: mpsc::UnboundedSender<Fired>) {
    let result = async {
        let mut conn = shared.conns.get(&job.url.0).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))
    }
    .await;
    let _ = done.send(Fired {
        key,
        uid: job.plan.uid.clone(),
        probe: true,
        last: None,
        total: None,
        last_task_id: None,
        run_now_done: None,
        error: result.err().map(FireError::Broker),
        message_error: None,
        skipped: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn lead_grows_with_the_tasks_and_stays_below_a_second() {
        assert_eq!(lead(1).num_milliseconds(), 200);
        assert_eq!(lead(5_000).num_milliseconds(), 400);
        assert_eq!(lead(10_000).num_milliseconds(), 600);
        assert_eq!(lead(1_000_000).num_milliseconds(), 800);
        assert_eq!(lead(usize::MAX).num_milliseconds(), 800);
    }

    #[test]
    fn a_url_never_shows_in_debug() {
        let u = BrokerUrl("redis://:hunter2@h:6379/0".into());
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
