//! PeriodicTask controller: the operator is Celery beat.
//!
//! Reconcile builds a [`plan::Plan`] (pure), resolves the broker URL and hands both to the
//! [`engine::Engine`], one timer queue over every task. The engine pushes messages and
//! reports what it did; the [`status_writer::StatusWriter`] merges those reports with what
//! reconcile saw and writes status.

mod concurrency;
pub mod engine;
mod entry;
mod fire;
pub(crate) mod outcomes;
pub mod plan;
pub(crate) mod run_history;
pub mod run_state;
pub(crate) mod slots;
pub mod stats;
pub(crate) mod status;
pub mod status_writer;
mod write_queue;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use self::engine::{Engine, Job, Key, Report};
use self::outcomes::Outcomes;
use self::run_state::RunState;
use self::status::{Results, Seen};
use self::status_writer::{Observation, StatusWriter};
use super::broker_ref::{self, ResolveError};
use super::labels::namespace;
use super::{Backoff, Context, Error, Result, requeue_failed};
use crate::api::periodic_task::{PeriodicTask, RUN_NOW_ANNOTATION};

/// Reconcile every task this often anyway. A safety net only: a spec change, a run-now and a
/// change of the Secret or RedisCache a task reads reconcile it at once (watches). At 10,000
/// tasks every minute it was 166 reconciles a second.
const RESYNC: Duration = Duration::from_secs(300);
/// Retry of a task whose broker Secret is missing.
const UNRESOLVED_RETRY: Duration = Duration::from_secs(5);
/// A broker reference that cannot be read again for this long is reported in `Ready`;
/// shorter API trouble (a restart, a timeout) goes unsaid.
const STALE_BROKER_AFTER: Duration = Duration::from_secs(60);

/// Shared by reconciles and the deletion watch.
pub struct State {
    pub ctx: Arc<Context>,
    pub engine: Engine,
    writer: Arc<StatusWriter>,
    /// Since when re-reading a scheduled task's broker reference fails (API trouble).
    unreadable_since: Mutex<HashMap<Key, Instant>>,
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
    let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
    let outcomes = Outcomes::start(outcomes_tx);
    let state = Arc::new(State {
        ctx: ctx.clone(),
        writer: StatusWriter::start(ctx.clone(), engine.clone(), outcomes),
        engine,
        unreadable_since: Mutex::new(HashMap::new()),
    });
    tokio::spawn(consume_reports(state.writer.clone(), reports));
    tokio::spawn(consume_outcomes(state.writer.clone(), outcomes_rx));
    // One watch feeds the store, the deletions and the reconciles. Status writes (one per
    // push) must not each trigger a reconcile: only spec changes (generation) and the run-now
    // annotation do, plus the periodic resync.
    let (reader, writer) = reflector::store();
    let mut follower = StoreFollower {
        store: reader.clone(),
        listed: HashSet::new(),
    };
    let tasks = state.clone();
    let trigger = watcher::watcher(ctx.watched::<PeriodicTask>(), watcher::Config::default())
        .default_backoff()
        .modify(strip_for_store)
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                follower.observe(event, &tasks);
            }
        })
        .applied_objects()
        .predicate_filter(trigger_hash, PredicateConfig::default());
    Controller::for_stream(trigger, reader.clone())
        .reconcile_on(broker_ref::referencing(
            &ctx,
            reader,
            |pt: &PeriodicTask| {
                std::iter::once(&pt.spec.broker)
                    .chain(&pt.spec.result_backend)
                    .collect()
            },
        ))
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
    requeue_failed(&st.ctx, &*pt, err)
}

async fn reconcile(pt: Arc<PeriodicTask>, st: Arc<State>) -> Result<Action> {
    let ctx = &st.ctx;
    let _timer = ctx.metrics.reconcile_started("PeriodicTask");
    let ns = namespace(&*pt)?;
    let key = key_of(&pt);
    if pt.meta().deletion_timestamp.is_some() {
        st.forget(&key);
        return Ok(Action::await_change());
    }
    let schedule = plan::schedule_text(&pt.spec);
    let plan = match plan::build(&pt, chrono::Utc::now()) {
        Ok(plan) => plan,
        Err(err) => {
            st.forget(&key);
            let message = err.to_string();
            let seen = if err.is_schedule() {
                Seen::InvalidSchedule { schedule, message }
            } else {
                Seen::InvalidMessage { schedule, message }
            };
            ctx.metrics.reconcile_failed("PeriodicTask", "invalid_spec");
            return st.reconciled(&pt, key, seen, Action::await_change());
        }
    };
    let resolved = match broker_ref::resolve(ctx, &ns, "spec.broker", &pt.spec.broker).await {
        Ok(resolved) => resolved,
        Err(err @ (ResolveError::NotFound(_) | ResolveError::Pending(_))) => {
            // Only a reference to nothing (yet) stops the task.
            st.forget(&key);
            let err = Error::from(err);
            ctx.metrics
                .reconcile_failed("PeriodicTask", err.metric_label());
            let pending = matches!(err, Error::Broker(ResolveError::Pending(_)));
            let message = err.to_string();
            let seen = Seen::BrokerUnresolved {
                schedule,
                message,
                pending,
            };
            return st.reconciled(&pt, key, seen, Action::requeue(UNRESOLVED_RETRY));
        }
        Err(err) => {
            // The API server did not answer: nothing is known of the reference, so the
            // engine keeps what it had; a long outage is said in Ready.
            if let Some(failing) = st.unreadable_for(&key)
                && failing >= STALE_BROKER_AFTER
            {
                let seen = Seen::Scheduled {
                    schedule,
                    suspend: pt.spec.suspend.unwrap_or(false),
                    stale_broker: Some(err.to_string()),
                    results: st.writer.results_of(&key),
                };
                st.writer
                    .observe(key, Observation::Reconciled(pt.clone(), seen));
            }
            let err = Error::from(err);
            ctx.metrics
                .reconcile_failed("PeriodicTask", err.metric_label());
            return Err(err);
        }
    };
    st.readable(&key);
    let results = match &pt.spec.result_backend {
        None => Results::NotSet,
        Some(rb) => match broker_ref::resolve(ctx, &ns, "spec.resultBackend", rb).await {
            Ok(resolved) => Results::Read(resolved.url),
            // Outcomes are not read, pushes go on.
            Err(ResolveError::NotFound(message) | ResolveError::Pending(message)) => {
                Results::Unresolved(message)
            }
            Err(err) => {
                let err = Error::from(err);
                ctx.metrics
                    .reconcile_failed("PeriodicTask", err.metric_label());
                return Err(err);
            }
        },
    };
    let results_url = match &results {
        Results::Read(url) => Some(url.clone()),
        _ => None,
    };
    let seen = Seen::Scheduled {
        schedule,
        suspend: plan.suspend,
        stale_broker: None,
        results,
    };
    // The writer knows the task before the engine can report a push of it.
    let action = st.reconciled(&pt, key.clone(), seen, Action::requeue(RESYNC));
    st.engine.upsert(
        key,
        Job {
            plan,
            url: resolved.url,
            results: results_url,
            status_runs: pt
                .status
                .as_ref()
                .map(RunState::from_status)
                .unwrap_or_default(),
            run_now: pt.annotations().get(RUN_NOW_ANNOTATION).cloned(),
        },
    );
    action
}

impl State {
    /// Hands what reconcile saw to the status writer and ends the reconcile.
    fn reconciled(
        &self,
        pt: &Arc<PeriodicTask>,
        key: Key,
        seen: Seen,
        action: Action,
    ) -> Result<Action> {
        self.ctx.backoff.succeeded(&Backoff::key(&**pt));
        self.writer
            .observe(key, Observation::Reconciled(pt.clone(), seen));
        Ok(action)
    }

    /// How long re-reading the broker reference of a task the engine runs has failed
    /// (None when the engine does not run it: there is nothing to keep).
    fn unreadable_for(&self, key: &Key) -> Option<Duration> {
        if !self.writer.knows(key) {
            return None;
        }
        let mut since = self
            .unreadable_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(
            since
                .entry(key.clone())
                .or_insert_with(Instant::now)
                .elapsed(),
        )
    }

    fn readable(&self, key: &Key) {
        self.unreadable_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Stops firing a task and forgets everything about it.
    fn forget(&self, key: &Key) {
        self.writer.remove(key);
        self.readable(key);
    }
}

/// Engine reports become status (and events).
async fn consume_reports(writer: Arc<StatusWriter>, mut reports: mpsc::UnboundedReceiver<Report>) {
    while let Some(report) = reports.recv().await {
        writer.observe(report.key.clone(), Observation::Report(report));
    }
}

/// What the result backends told becomes status (and events).
async fn consume_outcomes(
    writer: Arc<StatusWriter>,
    mut outcomes: mpsc::UnboundedReceiver<outcomes::Outcome>,
) {
    while let Some(outcome) = outcomes.recv().await {
        writer.observe(outcome.key.clone(), Observation::Outcome(outcome));
    }
}

/// What the store and the reconciles never read, but each of thousands of objects would
/// keep: the managed fields (rewritten with every status write) and kubectl's copy of the
/// last applied manifest.
fn strip_for_store(pt: &mut PeriodicTask) {
    pt.managed_fields_mut().clear();
    pt.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Keeps the engine and the status writer in step with the watch: deleted tasks leave the
/// timer queue at once (reconcile never sees a deleted object), and so do tasks a relist no
/// longer holds (deleted while the watch was down); a task whose status moved is handed the
/// store's copy of its object.
struct StoreFollower {
    store: reflector::Store<PeriodicTask>,
    listed: HashSet<Key>,
}

impl StoreFollower {
    fn observe(&mut self, event: &watcher::Event<PeriodicTask>, st: &State) {
        match event {
            watcher::Event::Delete(pt) => st.forget(&key_of(pt)),
            watcher::Event::Init => self.listed.clear(),
            watcher::Event::InitApply(pt) => {
                self.listed.insert(key_of(pt));
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.listed);
                for key in gone(st.writer.keys(), &listed) {
                    st.forget(&key);
                }
            }
            watcher::Event::Apply(pt) => {
                if let Some(current) = self.store.get(&ObjectRef::from_obj(pt)) {
                    st.writer.refresh(&key_of(pt), current);
                }
            }
        }
    }
}

/// The known keys a fresh list no longer holds (one set lookup each).
fn gone(known: Vec<Key>, listed: &HashSet<Key>) -> Vec<Key> {
    known.into_iter().filter(|k| !listed.contains(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_relist_no_longer_holds_is_gone() {
        let listed: HashSet<Key> = (0..50_000).map(|i| format!("ns/t{i}")).collect();
        let mut known: Vec<Key> = listed.iter().cloned().collect();
        known.push("ns/deleted".into());
        // 50,000 known against 50,000 listed: quadratic would be 2.5e9 comparisons.
        assert_eq!(gone(known, &listed), ["ns/deleted"]);
    }
}
