//! PeriodicTask controller: the operator is Celery beat.
//!
//! Reconcile builds a [`plan::Plan`] (pure), resolves the broker URL and hands both to the
//! [`engine::Engine`], one timer queue over every task. The engine pushes messages and
//! reports what it did; a status writer merges those reports with what reconcile saw and
//! writes status (coalesced: at most one write in flight per task, the latest wins).

pub mod engine;
pub mod plan;
pub mod slots;
pub mod stats;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use self::engine::{Engine, Job, Key, Report};
use self::status::Seen;
use super::apply::write_status;
use super::broker_ref;
use super::labels::namespace;
use super::{Backoff, Context, Error, Result};
use crate::api::periodic_task::{PeriodicTask, PeriodicTaskStatus, RUN_NOW_ANNOTATION};

/// Re-read the broker Secret this often (a rotated password is picked up).
const RESYNC: Duration = Duration::from_secs(60);
/// Retry of a task whose broker Secret is missing.
const UNRESOLVED_RETRY: Duration = Duration::from_secs(5);

/// Status writes per second over all tasks. Pushes never wait for status, but every write
/// costs the API server, etcd and every watcher; under load writes coalesce (latest wins),
/// so a status lags a little instead of the apiserver eating the CPU the beat needs.
pub const STATUS_WRITES_PER_SECOND: f64 = 100.0;

/// Shared by reconciles, the report consumer and the status writers.
pub struct State {
    pub ctx: Arc<Context>,
    pub engine: Engine,
    cells: Mutex<HashMap<Key, Cell>>,
    writes: TokenBucket,
}

/// A plain token bucket (burst = one second's worth).
struct TokenBucket {
    rate: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            state: tokio::sync::Mutex::new((rate, tokio::time::Instant::now())),
        }
    }

    async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = tokio::time::Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// What is known about one task, for its status.
struct Cell {
    obj: Arc<PeriodicTask>,
    seen: Seen,
    report: Option<Report>,
    written: Option<PeriodicTaskStatus>,
    writing: bool,
    dirty: bool,
}

/// Runs the controller with its own engine until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let engine = Engine::start(reports_tx, Some(ctx.metrics.clone()));
    run_with_engine(ctx, engine, reports_rx).await;
}

/// Like [`run`] with a given engine (the benchmark reads its stats).
pub async fn run_with_engine(
    ctx: Arc<Context>,
    engine: Engine,
    reports: mpsc::UnboundedReceiver<Report>,
) {
    let state = Arc::new(State {
        ctx: ctx.clone(),
        engine,
        cells: Mutex::new(HashMap::new()),
        writes: TokenBucket::new(STATUS_WRITES_PER_SECOND),
    });
    tokio::spawn(consume_reports(state.clone(), reports));
    tokio::spawn(watch_deletions(state.clone()));
    // Status writes (one per push) must not each trigger a reconcile: only spec changes
    // (generation) and the run-now annotation do, plus the periodic resync.
    let (reader, writer) = reflector::store();
    let trigger = watcher::watcher(ctx.watched::<PeriodicTask>(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, PredicateConfig::default());
    Controller::for_stream(trigger, reader)
        .shutdown_on_signal()
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

fn trigger_hash(pt: &PeriodicTask) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pt.metadata.generation.hash(&mut h);
    pt.annotations().get(RUN_NOW_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

fn key_of(pt: &PeriodicTask) -> Key {
    format!("{}/{}", pt.namespace().unwrap_or_default(), pt.name_any())
}

fn error_policy(pt: Arc<PeriodicTask>, err: &Error, st: Arc<State>) -> Action {
    let retry = st.ctx.backoff.failed(Backoff::key(&*pt), err);
    tracing::warn!(periodictask = %pt.name_any(), namespace = pt.namespace().unwrap_or_default(), error = %err, label = err.metric_label(), retry_in_s = retry.as_secs(), "reconcile failed");
    Action::requeue(retry)
}

async fn reconcile(pt: Arc<PeriodicTask>, st: Arc<State>) -> Result<Action> {
    let ctx = &st.ctx;
    let _timer = ctx.metrics.reconcile_started("PeriodicTask");
    let ns = namespace(&*pt)?;
    let key = key_of(&pt);
    if pt.meta().deletion_timestamp.is_some() {
        st.engine.remove(key.clone());
        forget(&st, &key);
        return Ok(Action::await_change());
    }
    let schedule = plan::schedule_text(&pt.spec);
    let (seen, action) = match plan::build(&pt, chrono::Utc::now()) {
        Err(err) => {
            st.engine.remove(key.clone());
            let message = err.to_string();
            let seen = if err.is_schedule() {
                Seen::InvalidSchedule { schedule, message }
            } else {
                Seen::InvalidMessage { schedule, message }
            };
            ctx.metrics.reconcile_failed("PeriodicTask", "invalid_spec");
            (seen, Action::await_change())
        }
        Ok(plan) => {
            match broker_ref::resolve(&ctx.client, &ns, "spec.broker", &pt.spec.broker).await {
                Err(message) => {
                    st.engine.remove(key.clone());
                    ctx.metrics
                        .reconcile_failed("PeriodicTask", "broker_unresolved");
                    (
                        Seen::BrokerUnresolved { schedule, message },
                        Action::requeue(UNRESOLVED_RETRY),
                    )
                }
                Ok(resolved) => {
                    let status = pt.status.clone().unwrap_or_default();
                    let suspend = plan.suspend;
                    st.engine.upsert(
                        key.clone(),
                        Job {
                            plan,
                            url: engine::BrokerUrl(resolved.url),
                            last_schedule: status.last_schedule_time.as_ref().and_then(|t| {
                                chrono::DateTime::from_timestamp_micros(t.0.as_microsecond())
                            }),
                            total_runs: status.total_runs.unwrap_or(0),
                            last_task_id: status.last_task_id,
                            run_now: pt.annotations().get(RUN_NOW_ANNOTATION).cloned(),
                            last_run_now: status.last_run_now,
                        },
                    );
                    (
                        Seen::Scheduled { schedule, suspend },
                        Action::requeue(RESYNC),
                    )
                }
            }
        }
    };
    ctx.backoff.succeeded(&Backoff::key(&*pt));
    observe(&st, key, Some(pt), Some(seen), None).await;
    Ok(action)
}

/// Records what reconcile saw (and its events when that changed) or an engine report, then
/// makes sure a status writer runs for the task.
async fn observe(
    st: &Arc<State>,
    key: Key,
    obj: Option<Arc<PeriodicTask>>,
    seen: Option<Seen>,
    report: Option<Report>,
) {
    let mut warn = None;
    let (start_writer, obj) = {
        let Ok(mut cells) = st.cells.lock() else {
            return;
        };
        let cell = match (cells.get_mut(&key), obj) {
            (Some(cell), obj) => {
                if let Some(obj) = obj {
                    cell.obj = obj;
                }
                cell
            }
            (None, Some(obj)) => cells.entry(key.clone()).or_insert(Cell {
                obj,
                seen: Seen::Scheduled {
                    schedule: String::new(),
                    suspend: false,
                },
                report: None,
                written: None,
                writing: false,
                dirty: false,
            }),
            // A report for a task reconcile has not seen (or already forgot).
            (None, None) => return,
        };
        if let Some(seen) = seen {
            if seen != cell.seen {
                warn = match &seen {
                    Seen::InvalidSchedule { message, .. } => {
                        Some(("InvalidSchedule", message.clone()))
                    }
                    Seen::InvalidMessage { message, .. } => {
                        Some(("InvalidMessage", message.clone()))
                    }
                    Seen::BrokerUnresolved { message, .. } => {
                        Some(("BrokerNotFound", message.clone()))
                    }
                    Seen::Scheduled { .. } => None,
                };
            }
            cell.seen = seen;
        }
        if let Some(r) = report {
            cell.report = Some(r);
        }
        cell.dirty = true;
        let start = !cell.writing;
        cell.writing = true;
        (start, cell.obj.clone())
    };
    if let Some((reason, note)) = warn {
        st.ctx
            .publish(&*obj, EventType::Warning, reason, "Schedule", note)
            .await;
    }
    if start_writer {
        tokio::spawn(write_loop(st.clone(), key));
    }
}

/// The object last seen for `key`.
fn object_of(st: &State, key: &Key) -> Option<Arc<PeriodicTask>> {
    st.cells
        .lock()
        .ok()
        .and_then(|c| c.get(key).map(|c| c.obj.clone()))
}

fn forget(st: &State, key: &Key) {
    if let Ok(mut cells) = st.cells.lock() {
        cells.remove(key);
    }
}

/// Writes the task's status until nothing new arrived meanwhile.
async fn write_loop(st: Arc<State>, key: Key) {
    loop {
        st.writes.acquire().await;
        let snapshot = {
            let Ok(mut cells) = st.cells.lock() else {
                return;
            };
            let Some(cell) = cells.get_mut(&key) else {
                return;
            };
            if !cell.dirty {
                cell.writing = false;
                return;
            }
            cell.dirty = false;
            // The object is only refreshed on spec changes: what we wrote last is newer.
            let old = cell.written.clone().or_else(|| cell.obj.status.clone());
            let new = status::build(
                &cell.obj,
                old.clone().unwrap_or_default(),
                &cell.seen,
                cell.report.as_ref(),
                Timestamp::now(),
            );
            (cell.obj.clone(), old, new)
        };
        let (obj, old, new) = snapshot;
        let ns = obj.namespace().unwrap_or_default();
        match write_status(&st.ctx.client, &*obj, &ns, old.as_ref(), new.clone()).await {
            Ok(()) => {
                if let Ok(mut cells) = st.cells.lock()
                    && let Some(cell) = cells.get_mut(&key)
                {
                    cell.written = Some(new);
                }
            }
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => {
                // Deleted: stop firing it.
                st.engine.remove(key.clone());
                forget(&st, &key);
                return;
            }
            Err(err) => {
                tracing::warn!(periodictask = %key, error = %err, "status write failed; retrying");
                if let Ok(mut cells) = st.cells.lock()
                    && let Some(cell) = cells.get_mut(&key)
                {
                    cell.dirty = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Engine reports become status (and events).
async fn consume_reports(st: Arc<State>, mut reports: mpsc::UnboundedReceiver<Report>) {
    while let Some(mut report) = reports.recv().await {
        let key = report.key.clone();
        let events = std::mem::take(&mut report.events);
        if !events.is_empty()
            && let Some(obj) = object_of(&st, &key)
        {
            let st2 = st.clone();
            tokio::spawn(async move {
                for e in events {
                    st2.ctx
                        .publish(&*obj, e.type_, e.reason, "Push", e.note)
                        .await;
                }
            });
        }
        observe(&st, key, None, None, Some(report)).await;
    }
}

/// Deleted tasks leave the timer queue at once (reconcile never sees a deleted object).
async fn watch_deletions(st: Arc<State>) {
    let stream = watcher::watcher(st.ctx.watched::<PeriodicTask>(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let mut listed: Vec<Key> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Delete(pt)) => {
                let key = key_of(&pt);
                st.engine.remove(key.clone());
                forget(&st, &key);
            }
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(pt)) => listed.push(key_of(&pt)),
            Ok(watcher::Event::InitDone) => {
                // Deleted while the watch was down: known here but not listed any more.
                let gone: Vec<Key> = st
                    .cells
                    .lock()
                    .map(|c| c.keys().filter(|k| !listed.contains(k)).cloned().collect())
                    .unwrap_or_default();
                for key in gone {
                    st.engine.remove(key.clone());
                    forget(&st, &key);
                }
            }
            Ok(watcher::Event::Apply(_)) => {}
            Err(err) => {
                tracing::debug!(error = %err, "periodic task deletion watch error; it retries");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
