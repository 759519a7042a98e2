//! `PeriodicTask`: the operator is the beat; it pushes Celery messages on a schedule.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::KubeSchema;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::shared::{BrokerRef, TransportOptionsSpec};
use crate::celery::names::{QUEUE_NAME, TASK_NAME};
pub use crate::celery::result::TaskState;

/// Annotation whose every new value pushes one extra run at once (like
/// `kubectl create job --from=cronjob/...`).
pub const RUN_NOW_ANNOTATION: &str = "celeryoperator.io/run-now";

/// At most this many missed slots are pushed by `missedRunPolicy: RunAll` (the most recent
/// ones); older missed slots are skipped.
pub const RUN_ALL_CAP: usize = 100;

/// Runs kept in `status.recentRuns` unless `historyLimit` says otherwise (a CronJob keeps 3
/// successful and 1 failed Job).
pub const DEFAULT_HISTORY_LIMIT: usize = 5;
/// The most `historyLimit` may be: every run is a few hundred bytes of status, rewritten
/// with each run.
pub const MAX_HISTORY_LIMIT: usize = 20;

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
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".status.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"Runs","type":"integer","jsonPath":".status.totalRuns"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.lastResult"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.startTime) || !has(self.endTime) || timestamp(self.startTime) < timestamp(self.endTime)"
).message("startTime must be before endTime").field_path(".endTime"))]
#[x_kube(validation = Rule::new(
    "!has(self.concurrencyPolicy) || self.concurrencyPolicy == 'Allow' || has(self.resultBackend)"
).message("concurrencyPolicy Forbid and Replace need resultBackend: it is how the operator knows whether the previous run has finished").field_path(".concurrencyPolicy"))]
pub struct PeriodicTaskSpec {
    /// Registered Celery task name, e.g. `myapp.tasks.refresh_cache`.
    #[schemars(length(min = 1, max = TASK_NAME.max_len))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", TASK_NAME.pattern()))
        .message("task must be a dotted Python name such as proj.tasks.refresh (letters, digits and _ . : -)"))]
    pub task: String,
    /// Positional arguments: a JSON array (default `[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "json_array")]
    pub args: Option<Value>,
    /// Keyword arguments: a JSON object (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "json_object")]
    pub kwargs: Option<Value>,
    /// Queue (and routing key) to send to; default `celery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = QUEUE_NAME.max_len))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", QUEUE_NAME.pattern()))
        .message("queue may hold letters, digits and _ . : @ / -"))]
    pub queue: Option<String>,
    /// Message priority 0-9; on Redis 0 is served first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 9))]
    pub priority: Option<i32>,
    /// The message expires this long after its slot (e.g. `30s`, `1h`); a worker discards
    /// an expired message unrun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = crate::schedule::INTERVAL_PATTERN))]
    #[x_kube(validation = Rule::new(crate::schedule::NONZERO_INTERVAL_RULE)
        .message("expires must be at least 1s"))]
    pub expires: Option<String>,
    /// Extra string headers; a worker sees them as `task.request.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        // One less than a message may carry: the operator adds `periodic_task_name`.
        "maxProperties" = crate::celery::validate::MAX_HEADERS - 1,
        "additionalProperties" = {"type": "string", "maxLength": crate::celery::validate::MAX_HEADER_VALUE_LEN}
    ))]
    pub headers: BTreeMap<String, String>,
    /// When to send it.
    pub schedule: ScheduleSpec,
    /// IANA time zone crontab and cron are read in (default `UTC`). For `crontab`, Celery's
    /// DST rules: a wall time skipped by a spring-forward gap fires shifted by the gap, an
    /// ambiguous one fires once, at its first occurrence. For `cron`, a CronJob's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// No slot at or before this instant; `every` slots are anchored here (default: the
    /// object's creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// No slot at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Stops sending while true. Slots that fall while suspended are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// What to do with slots missed while the operator was down or the broker unreachable.
    /// `Skip`: drop them; only a slot that is due now (at most a few seconds late) runs.
    /// `RunOnce` (default, Celery beat's behaviour): run once for all of them, for the latest.
    /// `RunAll`: run every missed slot, oldest first, at most the 100 most recent ones.
    /// `startingDeadlineSeconds` drops older slots in every case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_run_policy: Option<MissedRunPolicy>,
    /// A slot older than this many seconds when it could be pushed is never pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// The broker to push to.
    pub broker: BrokerRef,
    /// The kombu Redis transport options of the workers; a publisher must use the same or
    /// its messages are never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_options: Option<TransportOptionsSpec>,
    /// The workers' result backend (their `CELERY_RESULT_BACKEND`), read for how each run
    /// ended (`status.lastRun`, `recentRuns`, the `LastRunSucceeded` condition). Unset:
    /// outcomes are not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_backend: Option<BrokerRef>,
    /// Runs kept in `status.recentRuns`, newest first (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_HISTORY_LIMIT))]
    pub history_limit: Option<i32>,
    /// What a slot does while the previous run has not finished (CronJob's names). `Allow`
    /// (default): push on every slot, whatever the previous run is doing. `Forbid`: skip the slot
    /// while the previous run is waiting, running or retrying; recorded as a SKIPPED run with the
    /// reason, counted in `status.skippedRuns`, and a `RunSkipped` event. `Replace`: revoke the
    /// previous run as `celery control revoke` does (workers discard it when they get to it; one
    /// already running runs to its end), then push. "Not finished" is read from `resultBackend`
    /// (STARTED needs the workers' `task_track_started`), which Forbid and Replace require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
}

/// `spec.concurrencyPolicy` (the field says what each value does).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    #[default]
    Allow,
    Forbid,
    Replace,
}

/// Exactly one of `every`, `crontab`, `cron`, `at` or `solar`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.every) ? 1 : 0) + (has(self.crontab) ? 1 : 0) + (has(self.cron) ? 1 : 0) + (has(self.at) ? 1 : 0) + (has(self.solar) ? 1 : 0) == 1"
).message("set exactly one of every, crontab, cron, at or solar"))]
pub struct ScheduleSpec {
    /// A fixed interval such as `10s` or `1h15m40s` (at least 1s); slots are anchored at
    /// `startTime` or creation, so they never drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = crate::schedule::INTERVAL_PATTERN))]
    #[x_kube(validation = Rule::new(crate::schedule::NONZERO_INTERVAL_RULE)
        .message("every must be at least 1s"))]
    pub every: Option<String>,
    /// Celery's crontab, with Celery's semantics (AND of the day fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crontab: Option<CrontabSpec>,
    /// A standard five-field cron expression or `@hourly`-style macro, read as a Kubernetes
    /// CronJob reads it (OR of the day fields when both are restricted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("!self.startsWith('@every')")
        .message("@every is not a CronJob macro: use schedule.every"))]
    pub cron: Option<String>,
    /// Once, at this RFC 3339 instant (django-celery-beat's clocked schedule), exactly once
    /// across restarts and failover like every slot; afterwards Ready is False with reason
    /// `Completed` and there is no next run. An instant at or before the task's creation (or
    /// `startTime`) never runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// When the Sun reaches an event at a place (Celery's `solar`), computed as Celery
    /// computes it, so a task ported from `solar('sunset', lat, lon)` fires in the same
    /// minute. A day on which the event does not occur there (polar day or night) has no
    /// slot; the next day that has one does. `timeZone` only changes how times are shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solar: Option<crate::schedule::SolarSpec>,
}

/// Celery's `crontab(minute, hour, day_of_week, day_of_month, month_of_year)`; each field
/// defaults to `*`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrontabSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub minute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub hour: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub day_of_week: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub day_of_month: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub month_of_year: Option<String>,
}

/// `spec.missedRunPolicy` (the field says what each value does).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum MissedRunPolicy {
    Skip,
    #[default]
    RunOnce,
    RunAll,
}

/// Observed state of a PeriodicTask.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodicTaskStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The schedule as written, e.g. `every 10s`, `crontab 0 */3 * * *`, `cron @hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The slot of the last run pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next slot, unless suspended, ended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Celery task id of the last run pushed (also its result key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_id: Option<String>,
    /// Runs pushed, scheduled and run-now alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_runs: Option<i64>,
    /// Slots skipped because the previous run had not finished (concurrencyPolicy Forbid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_runs: Option<i64>,
    /// The value of the run-now annotation that was last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_now: Option<String>,
    /// The newest run pushed and how it is doing (with `resultBackend` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<PeriodicTaskRun>,
    /// The last runs, newest first, at most `historyLimit` (with `resultBackend` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<PeriodicTaskRun>,
    /// `lastRun` in a word or two: `SUCCESS 0.4s`, `FAILURE ValueError`, `PENDING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One run of a PeriodicTask as its workers' result backend tells it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodicTaskRun {
    /// The Celery task id (its result key is `celery-task-meta-<taskId>`).
    pub task_id: String,
    /// The slot it was pushed for; for a run-now request, when it was pushed.
    pub schedule_time: Time,
    /// PENDING until a worker writes a state; UNKNOWN when none is written within the
    /// operator's wait (an expired result, `ignore_result`, a lost message).
    pub state: TaskState,
    /// When a worker finished it (`date_done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// From `scheduleTime` to `finishTime`: the wait in the queue plus the run, e.g. `0.42s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// For FAILURE, RETRY and REVOKED: the exception's type and the first line of its
    /// message, at most 200 characters. Never the arguments or the traceback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// Retries so far (with the workers' `result_extended` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// For SKIPPED: why the slot was not pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn json_array(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {"x-kubernetes-preserve-unknown-fields": true},
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn json_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 256,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn schema() -> Value {
        let crd = PeriodicTask::crd();
        serde_json::to_value(&crd.spec.versions[0].schema).expect("schema")
    }

    #[test]
    fn args_and_kwargs_keep_arbitrary_json() {
        let s = schema();
        let spec = &s["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["args"]["type"], "array");
        assert_eq!(spec["args"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(spec["kwargs"]["type"], "object");
        assert_eq!(spec["kwargs"]["x-kubernetes-preserve-unknown-fields"], true);
    }

    #[test]
    fn schedule_requires_exactly_one_source() {
        let s = schema();
        let rules = &s["openAPIV3Schema"]["properties"]["spec"]["properties"]["schedule"]["x-kubernetes-validations"];
        assert!(
            rules
                .to_string()
                .contains("exactly one of every, crontab, cron, at or solar")
        );
    }

    #[test]
    fn task_and_queue_names_are_checked_at_apply_by_the_rules_messages_are_checked_by() {
        let s = schema();
        let spec = &s["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let wp = serde_json::to_value(
            crate::api::WorkerPool::crd().spec.versions[0]
                .schema
                .clone(),
        )
        .expect("json");
        let queues = &wp["openAPIV3Schema"]["properties"]["spec"]["properties"]["queues"];
        for (field, rule) in [
            (&spec["task"], &TASK_NAME),
            (&spec["queue"], &QUEUE_NAME),
            (&queues["items"], &QUEUE_NAME),
        ] {
            assert_eq!(field["maxLength"], rule.max_len, "{field}");
        }
        let cel = |field: &Value| field["x-kubernetes-validations"][0]["rule"].to_string();
        assert!(cel(&spec["task"]).contains(&TASK_NAME.pattern()));
        assert!(cel(&spec["queue"]).contains(&QUEUE_NAME.pattern()));
        assert!(cel(queues).contains(&QUEUE_NAME.pattern()));
        // What the review found refused at apply but sent by the runtime, and the reverse.
        use crate::celery::validate::{validate_queue_name, validate_task_name};
        validate_task_name("proj.app:task-1").expect("'-' in a task name");
        validate_queue_name("tenant/high").expect("'/' in a queue name");
        validate_queue_name(&"q".repeat(QUEUE_NAME.max_len + 1)).expect_err("too long");
    }

    #[test]
    fn manifest_round_trips_with_defaults_omitted() {
        let yaml = r#"
task: proj.tasks.refresh
args: [1, "two", {"three": 3}]
kwargs: {"name": "Zoë ✓"}
priority: 5
schedule: {crontab: {minute: "0", hour: "*/3,8-12"}}
missedRunPolicy: RunAll
broker: {redisCache: broker}
"#;
        let spec: PeriodicTaskSpec = serde_yaml::from_str(yaml).expect("parse");
        assert_eq!(spec.missed_run_policy, Some(MissedRunPolicy::RunAll));
        assert_eq!(
            spec.schedule
                .crontab
                .as_ref()
                .and_then(|c| c.hour.as_deref()),
            Some("*/3,8-12")
        );
        let back: PeriodicTaskSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("json")).expect("back");
        assert_eq!(back, spec);
    }
}
