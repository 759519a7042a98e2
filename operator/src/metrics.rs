//! Prometheus metrics of the operator, one registry for the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub name: String,
}

/// Every series the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Push time minus slot instant, in seconds.
    pub schedule_lateness: Histogram,
    pub pushes: Counter,
    pub push_failures: Family<FailureLabels, Counter>,
    /// Runs whose end the result backend told (or UNKNOWN), by final state.
    pub run_outcomes: Family<StateLabels, Counter>,
    pub pool_backlog: Family<PoolLabels, Gauge>,
    pub pool_desired_replicas: Family<PoolLabels, Gauge>,
    pub leader: Gauge,
    /// Events not recorded because the event queue was full.
    pub events_dropped: Counter,
    ready: AtomicBool,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("celery_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(
            reconcile_histogram as fn() -> Histogram,
        );
        let schedule_lateness = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
        ]);
        let pushes = Counter::default();
        let push_failures = Family::<FailureLabels, Counter>::default();
        let run_outcomes = Family::<StateLabels, Counter>::default();
        let pool_backlog = Family::<PoolLabels, Gauge>::default();
        let pool_desired_replicas = Family::<PoolLabels, Gauge>::default();
        let leader = Gauge::default();
        let events_dropped = Counter::default();
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and error",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            reconcile_duration.clone(),
        );
        registry.register(
            "schedule_lateness_seconds",
            "Periodic task push time minus the slot instant",
            schedule_lateness.clone(),
        );
        registry.register(
            "periodic_task_pushes",
            "Periodic task messages pushed to the broker",
            pushes.clone(),
        );
        registry.register(
            "periodic_task_push_failures",
            "Periodic task pushes that failed, by reason",
            push_failures.clone(),
        );
        registry.register(
            "periodic_task_run_outcomes",
            "Periodic task runs by the final state their result backend told",
            run_outcomes.clone(),
        );
        registry.register(
            "pool_backlog",
            "Waiting plus in-flight tasks of an autoscaled WorkerPool",
            pool_backlog.clone(),
        );
        registry.register(
            "pool_desired_replicas",
            "Replicas the autoscaler decided for a WorkerPool",
            pool_desired_replicas.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "events_dropped",
            "Events not recorded because the event queue was full",
            events_dropped.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            schedule_lateness,
            pushes,
            push_failures,
            run_outcomes,
            pool_backlog,
            pool_desired_replicas,
            leader,
            events_dropped,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` and times it until the returned guard drops.
    pub fn reconcile_started(&self, kind: &str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
        ReconcileTimer {
            metrics: self,
            kind: kind.into(),
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                error: error.into(),
            })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: String,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let kind = KindLabels {
            kind: std::mem::take(&mut self.kind),
        };
        self.metrics
            .reconcile_duration
            .get_or_create(&kind)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_holds_every_series_with_labels() {
        let m = Metrics::default();
        drop(m.reconcile_started("RedisCache"));
        m.reconcile_failed("WorkerPool", "broker_unresolved");
        m.schedule_lateness.observe(0.002);
        m.pushes.inc();
        m.leader.set(1);
        let pool = PoolLabels {
            namespace: "ns".into(),
            name: "default".into(),
        };
        m.pool_backlog.get_or_create(&pool).set(12);
        m.pool_desired_replicas.get_or_create(&pool).set(3);
        let text = m.render();
        for series in [
            "celery_operator_reconciles_total{kind=\"RedisCache\"} 1",
            "celery_operator_reconcile_errors_total{kind=\"WorkerPool\",error=\"broker_unresolved\"} 1",
            "celery_operator_reconcile_duration_seconds_count{kind=\"RedisCache\"} 1",
            "celery_operator_schedule_lateness_seconds_count 1",
            "celery_operator_periodic_task_pushes_total 1",
            "celery_operator_leader 1",
            "celery_operator_pool_backlog{namespace=\"ns\",name=\"default\"} 12",
            "celery_operator_pool_desired_replicas{namespace=\"ns\",name=\"default\"} 3",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
        // Every series the README's metrics table documents is exported.
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let documented: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`').map(|(name, _)| name))
            .filter(|name| name.starts_with("celery_operator_"))
            .collect();
        assert!(
            documented.len() >= 9,
            "README metrics table: {documented:?}"
        );
        m.push_failures
            .get_or_create(&FailureLabels {
                reason: "connect".into(),
            })
            .inc();
        m.run_outcomes
            .get_or_create(&StateLabels {
                state: "SUCCESS".into(),
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains("celery_operator_periodic_task_run_outcomes_total{state=\"SUCCESS\"} 1"),
            "{text}"
        );
        for name in documented {
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} is documented in the README but not exported:\n{text}"
            );
        }
    }
}
