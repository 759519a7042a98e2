//! The status writer: merges what reconciles saw and what the engine did into each task's
//! status, and writes it. Coalesced (at most one write in flight per task, the latest
//! wins), ordered (a first status or a changed condition ahead of routine bookkeeping, see
//! [`WriteQueue`]) and rate-limited over all tasks, so pushes never wait for status and
//! status never floods the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::engine::{Engine, Key, Report};
use super::outcomes::{Outcome, Outcomes, Run};
use super::run_history::{self, RunHistory};
use super::status::{self, Results, Seen};
use super::write_queue::{Priority, WriteQueue};
use crate::api::periodic_task::{PeriodicTask, PeriodicTaskStatus, TaskState};
use crate::controller::apply::write_status;
use crate::controller::{Context, Error};
use crate::metrics::StateLabels;

/// Status writes per second over all tasks, by default. Every write costs the API server,
/// etcd and every watcher; under load writes coalesce (latest wins), so a status lags a
/// little instead of the API server eating the CPU the beat needs.
pub const STATUS_WRITES_PER_SECOND: f64 = 100.0;
/// Status writes on their way at once (each waits for the API server's answer).
const WRITES_IN_FLIGHT: usize = 32;
/// Longest the writer keeps clear of a big push in one go (see `PushWindow`): ten thousand
/// pushes take well under this, and nothing can hold status back for longer.
const MAX_HOLD: Duration = Duration::from_millis(300);

/// What the writer learns about a task.
pub(crate) enum Observation {
    /// What a reconcile saw of the object.
    Reconciled(Arc<PeriodicTask>, Seen),
    /// What the engine did.
    Report(Report),
    /// What a result backend told of a run.
    Outcome(Outcome),
}

/// Shared by reconciles, the report consumer and the per-task writers.
pub(crate) struct StatusWriter {
    ctx: Arc<Context>,
    engine: Engine,
    outcomes: Outcomes,
    /// Boxed: a cell is several hundred bytes, and a map keeps up to twice the slots it
    /// fills (plus both tables while it grows); at 10,000 tasks that was 14 MB, 5 of it empty.
    cells: Mutex<HashMap<Key, Box<Cell>>>,
    /// Locked after `cells` when both are.
    queue: Mutex<WriteQueue>,
    queued: tokio::sync::Notify,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// What is known about one task, for its status.
struct Cell {
    obj: Arc<PeriodicTask>,
    seen: Seen,
    report: Option<Report>,
    history: RunHistory,
    written: Option<PeriodicTaskStatus>,
    written_at: Option<Instant>,
    /// A write is owed, this urgent.
    pending: Option<Priority>,
    in_flight: bool,
    failure_events: Bucket,
}

impl Cell {
    fn new(obj: Arc<PeriodicTask>) -> Self {
        Self {
            history: RunHistory::from_status(obj.status.as_ref()),
            obj,
            seen: Seen::default(),
            report: None,
            written: None,
            written_at: None,
            pending: None,
            in_flight: false,
            failure_events: Bucket::failure_events(),
        }
    }

    /// The status as it would be written now, and the one last written (else the object's).
    fn statuses(&self) -> (Option<PeriodicTaskStatus>, PeriodicTaskStatus) {
        // The object is only refreshed on spec changes: what we wrote last is newer.
        let old = self.written.clone().or_else(|| self.obj.status.clone());
        let new = status::build(
            &self.obj,
            old.clone().unwrap_or_default(),
            &self.seen,
            self.report.as_ref(),
            &self.history,
            Timestamp::now(),
        );
        (old, new)
    }

    /// Urgent when a user waits for it: no status yet, a new generation, a condition that
    /// changed, a next run that appeared or went; otherwise routine bookkeeping.
    fn priority(&self) -> Priority {
        let (Some(old), new) = self.statuses() else {
            return Priority::Urgent;
        };
        let same_conditions =
            old.conditions.len() == new.conditions.len()
                && old.conditions.iter().zip(&new.conditions).all(|(a, b)| {
                    (&a.type_, &a.status, &a.reason) == (&b.type_, &b.status, &b.reason)
                });
        if same_conditions
            && old.observed_generation == new.observed_generation
            && old.next_schedule_time.is_some() == new.next_schedule_time.is_some()
        {
            Priority::Routine
        } else {
            Priority::Urgent
        }
    }

    fn uid(&self) -> &str {
        self.obj.metadata.uid.as_deref().unwrap_or_default()
    }

    fn results(&self) -> Option<&crate::broker::BrokerUrl> {
        match &self.seen {
            Seen::Scheduled {
                results: Results::Read(url),
                ..
            } => Some(url),
            _ => None,
        }
    }

    /// Follows every run the backend has not told the end of.
    fn follow_unfinished(&self, key: &Key, outcomes: &Outcomes) {
        let Some(url) = self.results() else { return };
        for (task_id, due) in self.history.unfinished() {
            outcomes.follow(
                url.clone(),
                Run {
                    key: key.clone(),
                    uid: self.uid().to_string(),
                    task_id: task_id.to_string(),
                    due,
                },
            );
        }
    }
}

/// RunFailed events one task may record at once, and how often one more is allowed: a task
/// failing every few seconds must not fill etcd with events (client-go's spam filter does the
/// same per object). Every failure is still in `recentRuns` and the outcome metric.
const FAILURE_EVENT_BURST: f64 = 10.0;
const FAILURE_EVENT_EVERY: Duration = Duration::from_secs(60);

/// Tokens refilled at `rate` per second up to `burst`: the write rate over all tasks and
/// each task's RunFailed events.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// A task's RunFailed events.
    fn failure_events() -> Self {
        Self::new(1.0 / FAILURE_EVENT_EVERY.as_secs_f64(), FAILURE_EVENT_BURST)
    }
}

/// A Warning for a run that failed, once per run (within the budget above).
fn failed_note(run: &crate::api::periodic_task::PeriodicTaskRun) -> String {
    format!(
        "run {} (slot {}) failed: {}",
        run.task_id,
        run.schedule_time.0,
        run.exception.as_deref().unwrap_or("no exception recorded")
    )
}

impl StatusWriter {
    /// Starts the writer and its dispatcher, at `ctx.status_writes_per_second`.
    pub(crate) fn start(ctx: Arc<Context>, engine: Engine, outcomes: Outcomes) -> Arc<Self> {
        let rate = ctx.status_writes_per_second;
        let writer = Arc::new(Self {
            ctx,
            engine,
            outcomes,
            cells: Mutex::new(HashMap::new()),
            queue: Mutex::new(WriteQueue::default()),
            queued: tokio::sync::Notify::new(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(WRITES_IN_FLIGHT)),
        });
        tokio::spawn(writer.clone().dispatch(rate));
        writer
    }

    /// Queues the write `cell` owes, unless one is on its way (it queues again when done).
    fn enqueue(&self, key: &Key, cell: &Cell) {
        if cell.in_flight {
            return;
        }
        if let (Some(priority), Ok(mut queue)) = (cell.pending, self.queue.lock()) {
            queue.push(key, priority, cell.written_at, Instant::now());
            self.queued.notify_one();
        }
    }

    /// Records an observation (and the events of what changed), then makes sure a writer
    /// runs for the task.
    pub(crate) fn observe(self: &Arc<Self>, key: Key, observation: Observation) {
        let (warn, events, run_failed, obj) = {
            let Ok(mut cells) = self.cells.lock() else {
                return;
            };
            let mut run_failed = None;
            let (cell, warn, events) = match observation {
                Observation::Reconciled(obj, seen) => {
                    let cell = cells
                        .entry(key.clone())
                        .or_insert_with(|| Box::new(Cell::new(obj.clone())));
                    if cell.uid() != obj.metadata.uid.as_deref().unwrap_or_default() {
                        // Recreated under the same name: none of the old runs are its own.
                        self.outcomes.forget(&key);
                        **cell = Cell::new(obj.clone());
                    }
                    cell.obj = obj;
                    let warn = (seen != cell.seen).then(|| seen.warning()).flatten();
                    let results_before = cell.results().cloned();
                    cell.seen = seen;
                    if matches!(
                        &cell.seen,
                        Seen::Scheduled {
                            results: Results::NotSet,
                            ..
                        }
                    ) {
                        cell.history = RunHistory::default();
                    }
                    cell.history.truncate(run_history::limit(&cell.obj.spec));
                    if cell.results() != results_before.as_ref() {
                        self.outcomes.forget(&key);
                        cell.follow_unfinished(&key, &self.outcomes);
                    }
                    (cell, warn, Vec::new())
                }
                Observation::Report(mut report) => {
                    // A report for a task reconcile has not seen (or already forgot).
                    let Some(cell) = cells.get_mut(&key) else {
                        return;
                    };
                    let events = std::mem::take(&mut report.events);
                    let pushed = std::mem::take(&mut report.pushed);
                    let skipped = std::mem::take(&mut report.skipped);
                    if let Some(url) = cell.results().cloned()
                        && cell.uid() == report.uid
                    {
                        let limit = run_history::limit(&cell.obj.spec);
                        for run in pushed {
                            if cell.history.pushed(&run.task_id, run.due, limit) {
                                self.outcomes.follow(
                                    url.clone(),
                                    Run {
                                        key: key.clone(),
                                        uid: report.uid.clone(),
                                        task_id: run.task_id,
                                        due: run.due,
                                    },
                                );
                            }
                        }
                        for (run, reason) in skipped {
                            cell.history.skipped(&run.task_id, run.due, reason, limit);
                        }
                    }
                    cell.report = Some(report);
                    (cell, None, events)
                }
                Observation::Outcome(outcome) => {
                    let Some(cell) = cells.get_mut(&key) else {
                        return;
                    };
                    if cell.uid() != outcome.uid {
                        return;
                    }
                    let Some(run) = cell
                        .history
                        .observe(&outcome.task_id, outcome.meta.as_ref())
                    else {
                        return;
                    };
                    // Counted once, when nothing will change it any more.
                    if outcome.meta.as_ref().is_none_or(|m| m.settled()) {
                        self.ctx
                            .metrics
                            .run_outcomes
                            .get_or_create(&StateLabels {
                                state: run.state.as_str().into(),
                            })
                            .inc();
                    }
                    if run.state == TaskState::Failure
                        && cell.failure_events.take(Instant::now()).is_ok()
                    {
                        run_failed = Some((
                            format!("status.recentRuns{{{}}}", run.task_id),
                            failed_note(run),
                        ));
                    }
                    (cell, None, Vec::new())
                }
            };
            cell.pending = cell.pending.max(Some(cell.priority()));
            self.enqueue(&key, cell);
            (warn, events, run_failed, cell.obj.clone())
        };
        if let Some((reason, note)) = warn {
            self.ctx
                .publish(&*obj, EventType::Warning, reason, "Schedule", note);
        }
        if let Some((field_path, note)) = run_failed {
            self.ctx.publish_on(
                &*obj,
                Some(field_path),
                EventType::Warning,
                "RunFailed",
                "Run",
                note,
            );
        }
        for e in events {
            self.ctx.publish(&*obj, e.type_, e.reason, "Push", e.note);
        }
    }

    /// The result backend last resolved for `key`.
    pub(crate) fn results_of(&self, key: &Key) -> Results {
        self.cells
            .lock()
            .ok()
            .and_then(|c| match &c.get(key)?.seen {
                Seen::Scheduled { results, .. } => Some(results.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Takes the store's copy of a task's object when only its status moved (the writer's own
    /// writes), so that the object reconcile handed over is not kept as a second copy of
    /// each task. Another generation waits for its reconcile.
    pub(crate) fn refresh(&self, key: &Key, current: Arc<PeriodicTask>) {
        if let Ok(mut cells) = self.cells.lock()
            && let Some(cell) = cells.get_mut(key)
            && cell.obj.metadata.uid == current.metadata.uid
            && cell.obj.metadata.generation == current.metadata.generation
        {
            cell.obj = current;
        }
    }

    /// Whether the writer knows `key`.
    pub(crate) fn knows(&self, key: &Key) -> bool {
        self.cells.lock().is_ok_and(|c| c.contains_key(key))
    }

    /// The keys of every task the writer knows.
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.cells
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops firing a task and forgets it.
    pub(crate) fn remove(&self, key: &Key) {
        self.engine.remove(key.clone());
        self.outcomes.forget(key);
        if let Ok(mut cells) = self.cells.lock() {
            cells.remove(key);
        }
        if let Ok(mut queue) = self.queue.lock() {
            queue.remove(key);
        }
    }

    /// Hands queued writes out in the queue's order, at most `rate` a second and
    /// [`WRITES_IN_FLIGHT`] at once. A key is taken off the queue only once its token is
    /// there, and marked in flight at once, so what arrives while it waits for the token is
    /// part of that write rather than queued again behind it.
    async fn dispatch(self: Arc<Self>, rate: f64) {
        let mut budget = Bucket::new(rate, rate);
        let mut token = false;
        let window = self.engine.push_window();
        let mut holding_since: Option<Instant> = None;
        loop {
            // The pushes of many tasks go first: on a small machine the API server's work for
            // these writes would make them late. Held at most MAX_HOLD until the window clears.
            match window.hold(chrono::Utc::now()) {
                Some(wait) if holding_since.is_none_or(|s| s.elapsed() < MAX_HOLD) => {
                    holding_since.get_or_insert_with(Instant::now);
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Some(_) => {}
                None => holding_since = None,
            }
            if !token {
                while let Err(wait) = budget.take(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                token = true;
            }
            let next = match self.queue.lock() {
                Ok(mut queue) => queue.pop(Instant::now()),
                Err(_) => return,
            };
            let key = match next {
                Ok(key) => key,
                Err(due) => {
                    let queued = self.queued.notified();
                    match due {
                        Some(at) => {
                            tokio::select! {
                                _ = tokio::time::sleep_until(at.into()) => {}
                                _ = queued => {}
                            }
                        }
                        None => queued.await,
                    }
                    continue;
                }
            };
            let claimed = match self.cells.lock() {
                Ok(mut cells) => cells.get_mut(&key).is_some_and(|cell| {
                    let claim = cell.pending.is_some() && !cell.in_flight;
                    cell.in_flight |= claim;
                    claim
                }),
                Err(_) => return,
            };
            if !claimed {
                continue;
            }
            token = false;
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            tokio::spawn(self.clone().write(key, permit));
        }
    }

    /// Writes the task's status as it is now, then queues what arrived meanwhile.
    async fn write(self: Arc<Self>, key: Key, _permit: tokio::sync::OwnedSemaphorePermit) {
        let snapshot = {
            let Ok(mut cells) = self.cells.lock() else {
                return;
            };
            let Some(cell) = cells.get_mut(&key) else {
                return;
            };
            let Some(priority) = cell.pending.take() else {
                cell.in_flight = false;
                return;
            };
            let (old, new) = cell.statuses();
            (cell.obj.clone(), old, new, priority)
        };
        let (obj, old, new, priority) = snapshot;
        tracing::debug!(periodictask = %key, ?priority, "writing status");
        let ns = obj.namespace().unwrap_or_default();
        let result = write_status(&self.ctx.client, &*obj, &ns, old.as_ref(), new.clone()).await;
        let failed = match result {
            Ok(()) => false,
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => {
                // Deleted: stop firing it.
                self.remove(&key);
                return;
            }
            Err(err) => {
                tracing::warn!(periodictask = %key, error = %err, "status write failed; retrying");
                // Holding the permit: a failing API server gets fewer writes, not more.
                tokio::time::sleep(Duration::from_secs(1)).await;
                true
            }
        };
        if let Ok(mut cells) = self.cells.lock()
            && let Some(cell) = cells.get_mut(&key)
        {
            cell.in_flight = false;
            if failed {
                cell.pending = cell.pending.max(Some(priority));
            } else {
                cell.written = Some(new);
                cell.written_at = Some(Instant::now());
            }
            self.enqueue(&key, cell);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_failing_every_few_seconds_records_a_burst_of_events_then_one_a_minute() {
        let start = std::time::Instant::now();
        let mut budget = Bucket::failure_events();
        let at = |s: u64| start + Duration::from_secs(s);
        let first: Vec<bool> = (0..12).map(|i| budget.take(at(i)).is_ok()).collect();
        assert_eq!(first.iter().filter(|b| **b).count(), 10, "{first:?}");
        assert!(!first[10] && !first[11]);
        assert!(budget.take(at(30)).is_err(), "not yet a minute");
        assert!(budget.take(at(70)).is_ok(), "one more after a minute");
        assert!(budget.take(at(71)).is_err());
        assert!(
            (0..10).all(|_| budget.take(at(70 + 3600)).is_ok()),
            "an hour later the burst is back"
        );
    }
}
