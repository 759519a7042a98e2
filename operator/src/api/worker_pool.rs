//! `WorkerPool`: Celery worker Deployments, autoscaled by the queue backlog in Redis.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::BrokerRef;

/// A pool of `celery -A <app> worker` pods consuming some queues.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
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
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// Image with the Django/Celery project and `celery` on PATH.
    pub image: String,
    /// The Celery application, the value of `celery -A`.
    pub app: String,
    /// Queues the workers consume.
    #[serde(default = "default_queues")]
    pub queues: Vec<String>,
    /// Number of worker pods (when not autoscaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// The broker the workers consume from.
    pub broker: BrokerRef,
}

fn default_queues() -> Vec<String> {
    vec!["celery".into()]
}

/// Observed state of a WorkerPool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
