//! What admission refuses, per kind: the checks the controllers run, each problem as
//! `<field path>: <reason>` like the API server's own messages. Pure: no client, no clock.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::api::{PeriodicTask, RedisCache, WorkerPool};
use crate::celery::Field;
use crate::controller::periodic_task::plan::{self, PlanError};
use crate::controller::redis_cache::settings::{self, parse_quantity_bytes};
use crate::controller::worker_pool::deployment::extra_args_problems;
use crate::controller::worker_pool::policy;
use crate::schedule::{CrontabError, ScheduleError, SolarError};

/// The problems of a PeriodicTask: its schedule read in its time zone, and a sample of the
/// message it sends built and validated with the real size limit.
pub(crate) fn periodic_task(pt: &PeriodicTask, now: DateTime<Utc>) -> Vec<String> {
    let mut check = pt.clone();
    // A new object has no uid yet; the check only needs one to build the sample task id.
    check.metadata.uid.get_or_insert_with(|| "admission".into());
    match plan::build(&check, now) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("{}: {e}", plan_error_path(&e))],
    }
}

fn plan_error_path(e: &PlanError) -> String {
    match e {
        PlanError::Schedule(ScheduleError::Interval(_)) => "spec.schedule.every".into(),
        PlanError::Schedule(ScheduleError::Crontab(CrontabError::Field { field, .. })) => {
            format!("spec.schedule.crontab.{}", field.name())
        }
        PlanError::Schedule(ScheduleError::Crontab(_)) => "spec.schedule.crontab".into(),
        PlanError::Schedule(ScheduleError::Cron(_)) => "spec.schedule.cron".into(),
        PlanError::Schedule(ScheduleError::TimeZone(_)) => "spec.timeZone".into(),
        PlanError::Schedule(ScheduleError::Solar(SolarError::Event(_))) => {
            "spec.schedule.solar.event".into()
        }
        PlanError::Schedule(ScheduleError::Solar(SolarError::Latitude(_))) => {
            "spec.schedule.solar.latitude".into()
        }
        PlanError::Schedule(ScheduleError::Solar(SolarError::Longitude(_))) => {
            "spec.schedule.solar.longitude".into()
        }
        PlanError::Schedule(ScheduleError::Source(_)) => "spec.schedule".into(),
        PlanError::Expires(_) => "spec.expires".into(),
        PlanError::Message { field, .. } => match field {
            Some(Field::Task) => "spec.task",
            Some(Field::Args) => "spec.args",
            Some(Field::Kwargs) => "spec.kwargs",
            Some(Field::Queue) => "spec.queue",
            Some(Field::Priority) => "spec.priority",
            Some(Field::Expires) => "spec.expires",
            Some(Field::Headers) => "spec.headers",
            Some(Field::PrioritySteps | Field::Separator) => "spec.transportOptions",
            _ => "spec",
        }
        .into(),
        PlanError::Missing(_) => "metadata".into(),
    }
}

/// The problems of a RedisCache: the settings the controller resolves (sizes, owned
/// directives, auth) and its resource quantities.
pub(crate) fn redis_cache(rc: &RedisCache) -> Vec<String> {
    let mut problems: Vec<String> = settings::resolve(&rc.spec).err().into_iter().collect();
    problems.extend(quantities("spec.resources", rc.spec.resources.as_ref()));
    problems
}

/// The problems of a WorkerPool: its autoscaling durations, `extraArgs` that clash with the
/// operator's flags, and resource quantities.
pub(crate) fn worker_pool(wp: &WorkerPool) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(a) = &wp.spec.autoscaling
        && let Err(e) = policy(a, wp.spec.concurrency)
    {
        problems.push(e);
    }
    problems.extend(extra_args_problems(&wp.spec));
    problems.extend(quantities("spec.resources", wp.spec.resources.as_ref()));
    problems
}

/// Quantities the API server would only refuse when the Deployment or StatefulSet is
/// applied, long after the user's `kubectl apply` succeeded.
fn quantities(path: &str, resources: Option<&ResourceRequirements>) -> Vec<String> {
    let Some(r) = resources else {
        return Vec::new();
    };
    [("limits", &r.limits), ("requests", &r.requests)]
        .into_iter()
        .flat_map(|(kind, map)| map.iter().flatten().map(move |(name, q)| (kind, name, q)))
        .filter_map(|(kind, name, q)| {
            parse_quantity_bytes(&q.0)
                .err()
                .map(|e| format!("{path}.{kind}.{name}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(spec: serde_json::Value) -> PeriodicTask {
        let mut base = serde_json::json!({
            "task": "proj.tasks.refresh", "broker": {"redisCache": "broker"},
        });
        if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
            b.extend(s.clone());
        }
        PeriodicTask::new("t", serde_json::from_value(base).expect("spec"))
    }

    fn problems(spec: serde_json::Value) -> String {
        periodic_task(&pt(spec), Utc::now()).join("; ")
    }

    #[test]
    fn a_valid_task_has_no_problems() {
        assert_eq!(
            problems(serde_json::json!({"schedule": {"every": "10s"}})),
            ""
        );
    }

    #[test]
    fn each_problem_names_its_field() {
        for (spec, path) in [
            (
                serde_json::json!({"schedule": {"crontab": {"minute": "61"}}}),
                "spec.schedule.crontab.minute: ",
            ),
            (
                serde_json::json!({"schedule": {"crontab": {"dayOfWeek": "funday"}}}),
                "spec.schedule.crontab.dayOfWeek: ",
            ),
            (
                serde_json::json!({"schedule": {"crontab": {"dayOfMonth": "31", "monthOfYear": "2"}}}),
                "spec.schedule.crontab: ",
            ),
            (
                serde_json::json!({"schedule": {"cron": "61 * * * *"}}),
                "spec.schedule.cron: ",
            ),
            (
                serde_json::json!({"schedule": {"cron": "0 0 31 2 *"}}),
                "spec.schedule.cron: ",
            ),
            (
                serde_json::json!({"schedule": {"every": "1m"}, "timeZone": "Mars/Olympus"}),
                "spec.timeZone: ",
            ),
            (
                serde_json::json!({"schedule": {"every": "1m"}, "kwargs": {"": 1}}),
                "spec.kwargs: ",
            ),
            (
                serde_json::json!({"schedule": {"every": "1m"}, "headers": {"id": "x"}}),
                "spec.headers: ",
            ),
            (
                serde_json::json!({"schedule": {"every": "1m"}, "args": [{"__type__": "nope", "__value__": 1}]}),
                "spec.args: ",
            ),
        ] {
            let p = problems(spec.clone());
            assert!(p.starts_with(path), "{spec}: {p}");
        }
    }

    #[test]
    fn quantities_the_api_server_would_refuse_later_are_named() {
        let mut wp = WorkerPool::new("w", Default::default());
        wp.spec.resources = Some(
            serde_json::from_value(serde_json::json!({"limits": {"cpu": "lots"}})).expect("r"),
        );
        let p = worker_pool(&wp).join("; ");
        assert!(p.starts_with("spec.resources.limits.cpu: "), "{p}");
    }
}
