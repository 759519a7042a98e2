//! `WorkerPool`: Celery worker Deployments, autoscaled by the queue backlog in Redis.

use crate::celery::names::QUEUE_NAME;
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::shared::{BrokerRef, PodOverrides, TransportOptionsSpec};

/// Default grace period: Celery's warm shutdown waits for running tasks to finish.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 300;

/// A pool of `celery -A <app> worker` pods consuming some queues.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "celeryoperator.io",
    version = "v1alpha1",
    kind = "WorkerPool",
    namespaced,
    shortname = "wpool",
    category = "celery",
    status = "WorkerPoolStatus",
    printcolumn = r#"{"name":"Queues","type":"string","jsonPath":".spec.queues"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.waiting"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// Image with the project and `celery` on PATH.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The Celery application, the value of `celery -A` (e.g. `proj` or `proj.celery:app`).
    #[schemars(length(min = 1, max = 200))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_.:]*$')")
        .message("app must be a Python module path such as proj or proj.celery:app"))]
    pub app: String,
    /// Queues the workers consume (`-Q`), default `[celery]`.
    #[serde(default = "default_queues")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = QUEUE_NAME.max_len)))]
    #[x_kube(validation = Rule::new(format!("self.all(q, q.matches('{}'))", QUEUE_NAME.pattern()))
        .message("queue names may hold letters, digits and _ . : @ / - only"))]
    pub queues: Vec<String>,
    /// Child processes or threads per worker (`--concurrency`); default: Celery's (CPU count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: Option<i32>,
    /// Execution pool (`--pool`), default `prefork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<WorkerPoolKind>,
    /// Messages each process prefetches (`--prefetch-multiplier`); 1 is fairest for long tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub prefetch_multiplier: Option<i32>,
    /// Replace a child process after this many tasks (`--max-tasks-per-child`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tasks_per_child: Option<i32>,
    /// Replace a child process above this resident memory, in KiB (`--max-memory-per-child`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_memory_per_child: Option<i32>,
    /// `--loglevel`, default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
    /// Further arguments appended to `celery worker` (e.g. `--without-gossip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Extra environment variables (Django settings module, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Environment from ConfigMaps or Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Resource requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Worker pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// The broker the workers consume from (`CELERY_BROKER_URL`).
    pub broker: BrokerRef,
    /// Where results are stored (`CELERY_RESULT_BACKEND`); unset: no result backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_backend: Option<BrokerRef>,
    /// Seconds a stopping worker gets to finish its tasks (Celery's warm shutdown) before it
    /// is killed; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Pod scheduling and metadata overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
    /// Scale the workers on the queue backlog in Redis. While set, the operator owns the
    /// Deployment's replicas and `replicas` is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// The kombu Redis transport options of the workers (priority steps, separator, key
    /// prefix), so the autoscaler reads the same keys the workers consume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_options: Option<TransportOptionsSpec>,
}

/// Backlog-driven scaling of a WorkerPool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// Fewest workers (default 1; 0 scales to zero after `idleBeforeScaleToZero`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: Option<i32>,
    /// Most workers.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Tasks (waiting plus in flight) one worker pod takes; default `concurrency`, or 1 when
    /// concurrency is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_tasks_per_replica: Option<i32>,
    /// How often the backlog is read (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), regex(pattern = crate::schedule::INTERVAL_PATTERN))]
    #[x_kube(validation = Rule::new(crate::schedule::NONZERO_INTERVAL_RULE)
        .message("pollInterval must be at least 1s"))]
    pub poll_interval: Option<String>,
    /// Scale down only to the highest replica count wanted within this window (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), regex(pattern = crate::schedule::INTERVAL_PATTERN))]
    pub scale_down_stabilization: Option<String>,
    /// With `minReplicas: 0`, keep one worker until the queues were empty this long
    /// (default `300s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), regex(pattern = crate::schedule::INTERVAL_PATTERN))]
    pub idle_before_scale_to_zero: Option<String>,
}

fn default_queues() -> Vec<String> {
    vec!["celery".into()]
}

/// Celery execution pools.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WorkerPoolKind {
    Prefork,
    Threads,
    Solo,
    Gevent,
    Eventlet,
}

/// Celery log levels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

/// Observed state of a WorkerPool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Worker pods of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Worker pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Messages waiting in the pool's queues (every priority key), when autoscaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<i64>,
    /// Messages the pool's workers hold: running (heartbeats' `active`) plus reserved
    /// (`unacked` entries of the pool's queues), when autoscaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<i64>,
    /// Replicas the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When the autoscaler last changed the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// `Ready`, `BrokerResolved`, and with autoscaling `ScalingActive` and `ScalingLimited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
