//! `PeriodicTask`: the operator is the beat; it pushes Celery messages on a schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::shared::BrokerRef;

/// A Celery task sent on an interval, a Celery crontab or a standard cron schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "celeryoperator.io",
    version = "v1alpha1",
    kind = "PeriodicTask",
    namespaced,
    shortname = "ptask",
    category = "celery",
    status = "PeriodicTaskStatus",
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".spec.task"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"Runs","type":"integer","jsonPath":".status.totalRuns"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PeriodicTaskSpec {
    /// Registered Celery task name, e.g. `myapp.tasks.refresh_cache`.
    pub task: String,
    /// When to send it.
    pub schedule: Schedule,
    /// The broker to push to.
    pub broker: BrokerRef,
}

/// Exactly one of `every`, `crontab` or `cron`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// A fixed interval such as `10s` or `1h15m40s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// A standard five-field cron expression, read as a Kubernetes CronJob reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

/// Observed state of a PeriodicTask.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodicTaskStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_runs: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
