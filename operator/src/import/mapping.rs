//! One beat entry to one PeriodicTask, validated by the code the controller runs. Pure: no
//! Python, no cluster.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::export::{Entry, ExportedSchedule};
use crate::api::PeriodicTask;
use crate::api::periodic_task::{CrontabSpec, PeriodicTaskSpec, ScheduleSpec};
use crate::api::shared::BrokerRef;
use crate::controller::periodic_task::plan;
use crate::controller::time::{from_time, to_time};
use crate::schedule::{Interval, SolarEvent, SolarSpec};

/// The entry's name as Celery knows it (names of Kubernetes objects are stricter).
pub(crate) const ENTRY_NAME_ANNOTATION: &str = "celeryoperator.io/beat-entry";
/// The header django-celery-beat sets on every message, so tasks that read it keep working.
pub(crate) const ENTRY_NAME_HEADER: &str = "periodic_task_name";
/// Longest object name written: a DNS label, so the name fits wherever one is used.
const MAX_NAME_LEN: usize = 63;

/// Where the imported tasks go.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) namespace: String,
    pub(crate) broker: BrokerRef,
}

/// The PeriodicTask of `entry`, or every reason it cannot be one (each naming its field).
pub(crate) fn map_entry(
    entry: &Entry,
    object_name: &str,
    app_timezone: &str,
    target: &Target,
    now: DateTime<Utc>,
) -> Result<PeriodicTask, Vec<String>> {
    let mut problems = entry.errors.clone();
    let mut spec = PeriodicTaskSpec {
        broker: target.broker.clone(),
        ..Default::default()
    };
    match entry.task.as_deref() {
        Some(task) if !task.is_empty() => spec.task = task.to_owned(),
        _ => problems.push("task: missing".into()),
    }
    match schedule(&entry.schedule, app_timezone) {
        Ok((schedule, zone)) => {
            if let Some(at) = schedule.at.as_ref().and_then(from_time)
                && at <= now
            {
                problems.push(format!(
                    "schedule: clocked at {at} has passed; a PeriodicTask created now would never run it"
                ));
            }
            spec.schedule = schedule;
            spec.time_zone = zone;
        }
        Err(p) => problems.push(p),
    }
    spec.args = json_of_kind(
        &entry.args,
        "args",
        Value::is_array,
        "a list",
        &mut problems,
    );
    spec.kwargs = json_of_kind(
        &entry.kwargs,
        "kwargs",
        Value::is_object,
        "a dict",
        &mut problems,
    );
    let mut end_time = entry
        .end_time
        .as_deref()
        .and_then(|t| instant("end_time", t, &mut problems));
    options(entry, &mut spec, &mut end_time, &mut problems);
    if let Some(headers) = &entry.headers {
        headers_into(headers, "headers", &mut spec.headers, &mut problems);
    }
    spec.headers
        .entry(ENTRY_NAME_HEADER.to_owned())
        .or_insert_with(|| entry.name.clone());
    spec.start_time = entry
        .start_time
        .as_deref()
        .and_then(|t| instant("start_time", t, &mut problems))
        .and_then(to_time);
    spec.end_time = end_time.and_then(to_time);
    if !entry.enabled {
        spec.suspend = Some(true);
    }
    // A clocked row must be one-off in django-celery-beat; `at` runs once anyway.
    if entry.one_off && entry.schedule.clocked.is_none() {
        problems.push(
            "one_off: a PeriodicTask has no one-off mode; give it an endTime after its first \
             slot, or use a Celery countdown/eta instead"
                .into(),
        );
    }

    let mut pt = PeriodicTask::new(object_name, spec);
    pt.metadata.namespace = Some(target.namespace.clone());
    let mut annotations = BTreeMap::from([(ENTRY_NAME_ANNOTATION.to_owned(), entry.name.clone())]);
    if let Some(d) = entry.description.as_deref().filter(|d| !d.is_empty()) {
        annotations.insert("celeryoperator.io/description".into(), d.to_owned());
    }
    pt.metadata.annotations = Some(annotations);
    if !problems.is_empty() {
        return Err(problems);
    }
    // The controller's own check: what passes here is what it schedules.
    let mut check = pt.clone();
    check.metadata.uid = Some("import-check".into());
    plan::build(&check, now).map_err(|e| vec![e.to_string()])?;
    Ok(pt)
}

fn schedule(
    s: &ExportedSchedule,
    app_timezone: &str,
) -> Result<(ScheduleSpec, Option<String>), String> {
    if let Some(u) = &s.unsupported {
        return Err(format!(
            "schedule: {u} has no PeriodicTask counterpart (every, crontab, cron, at or solar)"
        ));
    }
    if let Some(solar) = &s.solar {
        let event = SolarEvent::parse(&solar.event).map_err(|e| format!("schedule: {e}"))?;
        let spec = ScheduleSpec {
            solar: Some(SolarSpec {
                event,
                latitude: solar.latitude,
                longitude: solar.longitude,
            }),
            ..Default::default()
        };
        return Ok((spec, None));
    }
    if let Some(text) = &s.clocked {
        let at = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("schedule: clocked {text} is not an RFC 3339 instant ({e})"))?;
        let spec = ScheduleSpec {
            at: to_time(at.with_timezone(&Utc)),
            ..Default::default()
        };
        return Ok((spec, None));
    }
    if let Some(seconds) = s.every_seconds {
        let every = whole_seconds(seconds).map_err(|why| {
            format!("schedule: every {seconds}s {why}, the resolution of `every`")
        })?;
        let spec = ScheduleSpec {
            every: Some(every.to_string()),
            ..Default::default()
        };
        return Ok((spec, None));
    }
    if let Some(c) = &s.crontab {
        let field = |v: &str| (v != "*").then(|| v.to_owned());
        let spec = ScheduleSpec {
            crontab: Some(CrontabSpec {
                minute: field(&c.minute),
                hour: field(&c.hour),
                day_of_week: field(&c.day_of_week),
                day_of_month: field(&c.day_of_month),
                month_of_year: field(&c.month_of_year),
            }),
            ..Default::default()
        };
        let zone = s.timezone.as_deref().unwrap_or(app_timezone);
        return Ok((spec, (zone != "UTC").then(|| zone.to_owned())));
    }
    Err("schedule: missing".into())
}

/// `seconds` as an interval: `every` and `expires` have a resolution of one second.
fn whole_seconds(seconds: f64) -> Result<Interval, &'static str> {
    if seconds < 1.0 {
        return Err("is shorter than 1s");
    }
    if seconds.fract() != 0.0 {
        return Err("is not a whole number of seconds");
    }
    Interval::parse(&format!("{seconds:.0}s")).map_err(|_| "is too long")
}

/// `value` when it is of the wanted JSON kind; null or absent is the default.
fn json_of_kind(
    value: &Option<Value>,
    field: &str,
    is_kind: fn(&Value) -> bool,
    kind: &str,
    problems: &mut Vec<String>,
) -> Option<Value> {
    match value {
        None | Some(Value::Null) => None,
        Some(v) if is_kind(v) => Some(v.clone()).filter(|v| !is_empty(v)),
        Some(v) => {
            problems.push(format!("{field}: {v} is not {kind}"));
            None
        }
    }
}

fn is_empty(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(|o| o.is_empty())
}

fn instant(field: &str, text: &str, problems: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            problems.push(format!("{field}: {text} is not an RFC 3339 instant ({e})"));
            None
        }
    }
}

fn headers_into(
    value: &Value,
    field: &str,
    headers: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (name, v) in map {
                match v {
                    Value::String(s) => {
                        headers.insert(name.clone(), s.clone());
                    }
                    other => problems.push(format!(
                        "{field}.{name}: {other} is not a string (PeriodicTask headers are strings)"
                    )),
                }
            }
        }
        other => problems.push(format!("{field}: {other} is not a dict")),
    }
}

/// Celery's `apply_async` options that have a PeriodicTask field.
fn options(
    entry: &Entry,
    spec: &mut PeriodicTaskSpec,
    end_time: &mut Option<DateTime<Utc>>,
    problems: &mut Vec<String>,
) {
    let text = |key: &str| entry.options.get(key).and_then(Value::as_str);
    let queue = text("queue").or(text("routing_key"));
    if let (Some(q), Some(r)) = (queue, text("routing_key"))
        && q != r
    {
        problems.push(format!(
            "options.routing_key: {r} differs from queue {q}; a PeriodicTask sends to the \
             queue's own routing key"
        ));
    }
    if let Some(e) = text("exchange").filter(|e| !e.is_empty() && Some(*e) != queue) {
        problems.push(format!(
            "options.exchange: {e} is not the queue's own exchange; a PeriodicTask sends \
             through the default exchange"
        ));
    }
    spec.queue = queue.filter(|q| *q != "celery").map(str::to_owned);
    for (key, value) in &entry.options {
        match key.as_str() {
            "queue" | "routing_key" | "exchange" => {
                if !value.is_string() && !value.is_null() {
                    problems.push(format!("options.{key}: {value} is not a name"));
                }
            }
            "priority" => match value.as_i64().and_then(|p| i32::try_from(p).ok()) {
                Some(p) => spec.priority = Some(p).filter(|p| *p != 0),
                None => problems.push(format!("options.priority: {value} is not an integer")),
            },
            "expires_seconds" => match value
                .as_f64()
                .ok_or("is not a number")
                .and_then(whole_seconds)
            {
                Ok(i) => spec.expires = Some(i.to_string()),
                Err(why) => problems.push(format!(
                    "options.expires: {value} seconds {why}, the resolution of `expires`"
                )),
            },
            // Every message sent after an absolute expiry is discarded unrun: the schedule
            // ends there.
            "expires_at" => {
                if let Some(at) = value
                    .as_str()
                    .and_then(|t| instant("options.expires", t, problems))
                {
                    *end_time = Some(end_time.map_or(at, |e| e.min(at)));
                }
            }
            "headers" => headers_into(value, "options.headers", &mut spec.headers, problems),
            other => problems.push(format!(
                "options.{other}: not supported by a PeriodicTask (queue, routing_key, \
                 priority, expires and headers are)"
            )),
        }
    }
}

/// A Kubernetes object name for every entry, in order: lower case, `[a-z0-9-]`, at most 63
/// characters, distinct (a clash gets `-2`, `-3`, ...).
pub(crate) fn object_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken = HashSet::new();
    names
        .into_iter()
        .map(|name| {
            let base = sanitize(name);
            let mut candidate = base.clone();
            let mut n = 1;
            while !taken.insert(candidate.clone()) {
                n += 1;
                let suffix = format!("-{n}");
                let keep = base.len().min(MAX_NAME_LEN - suffix.len());
                candidate = format!("{}{suffix}", base[..keep].trim_end_matches('-'));
            }
            candidate
        })
        .collect()
}

fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    let out = out[..out.len().min(MAX_NAME_LEN)].trim_end_matches('-');
    if out.is_empty() {
        "beat-entry".to_owned()
    } else {
        out.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::time::from_time;
    use crate::import::export::ExportedCrontab;
    use crate::import::export::ExportedSolar;
    use serde_json::json;

    fn target() -> Target {
        Target {
            namespace: "shop".into(),
            broker: BrokerRef {
                redis_cache: Some("broker".into()),
                ..Default::default()
            },
        }
    }

    fn entry(schedule: ExportedSchedule) -> Entry {
        Entry {
            name: "refresh cache".into(),
            source: "beat_schedule".into(),
            task: Some("shop.tasks.refresh_cache".into()),
            schedule,
            enabled: true,
            ..Default::default()
        }
    }

    fn every(seconds: f64) -> ExportedSchedule {
        ExportedSchedule {
            every_seconds: Some(seconds),
            ..Default::default()
        }
    }

    fn map(e: &Entry) -> Result<PeriodicTask, Vec<String>> {
        map_entry(e, "refresh-cache", "UTC", &target(), Utc::now())
    }

    fn start_of(pt: &PeriodicTask) -> Option<DateTime<Utc>> {
        pt.spec.start_time.as_ref().and_then(from_time)
    }

    fn problems(e: &Entry) -> String {
        map(e).expect_err("refused").join("; ")
    }

    #[test]
    fn seconds_become_every_in_units() {
        let pt = map(&entry(every(4540.0))).expect("mapped");
        assert_eq!(pt.spec.schedule.every.as_deref(), Some("1h15m40s"));
        assert_eq!(pt.spec.time_zone, None);
        assert_eq!(pt.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(pt.spec.broker.redis_cache.as_deref(), Some("broker"));
    }

    #[test]
    fn sub_second_and_fractional_intervals_are_refused_with_the_reason() {
        assert!(problems(&entry(every(0.5))).contains("shorter than 1s"));
        assert!(problems(&entry(every(1.5))).contains("not a whole number of seconds"));
    }

    #[test]
    fn a_crontab_keeps_its_fields_and_the_zone_it_is_read_in() {
        let e = entry(ExportedSchedule {
            crontab: Some(ExportedCrontab {
                minute: "0".into(),
                hour: "*/3,8-12".into(),
                day_of_week: "mon-fri".into(),
                day_of_month: "*".into(),
                month_of_year: "*".into(),
            }),
            timezone: Some("Europe/Berlin".into()),
            ..Default::default()
        });
        let pt = map(&e).expect("mapped");
        let c = pt.spec.schedule.crontab.expect("crontab");
        assert_eq!(c.minute.as_deref(), Some("0"));
        assert_eq!(c.hour.as_deref(), Some("*/3,8-12"));
        assert_eq!(c.day_of_week.as_deref(), Some("mon-fri"));
        assert_eq!(c.day_of_month, None);
        assert_eq!(pt.spec.time_zone.as_deref(), Some("Europe/Berlin"));
    }

    #[test]
    fn a_crontab_the_controller_refuses_is_refused_here() {
        let e = entry(ExportedSchedule {
            crontab: Some(ExportedCrontab {
                minute: "61".into(),
                hour: "*".into(),
                day_of_week: "*".into(),
                day_of_month: "*".into(),
                month_of_year: "*".into(),
            }),
            ..Default::default()
        });
        assert!(problems(&e).contains("61"), "{}", problems(&e));
    }

    #[test]
    fn a_clocked_one_off_row_becomes_an_at_schedule() {
        let mut e = entry(ExportedSchedule {
            clocked: Some("2030-06-01T14:00:00+02:00".into()),
            ..Default::default()
        });
        e.one_off = true;
        let pt = map(&e).expect("mapped");
        let at = pt.spec.schedule.at.expect("at");
        assert_eq!(at.0.as_second(), 1_906_545_600, "2030-06-01T12:00:00Z");
        let mut past = e.clone();
        past.schedule.clocked = Some("2020-06-01T12:00:00Z".into());
        assert!(
            problems(&past).contains("has passed"),
            "{}",
            problems(&past)
        );
        let mut bad = e.clone();
        bad.schedule.clocked = Some("June 1st".into());
        assert!(problems(&bad).contains("clocked June 1st is not an RFC 3339 instant"));
    }

    #[test]
    fn unknown_schedule_kinds_are_refused_by_name() {
        let e = entry(ExportedSchedule {
            unsupported: Some("<my_schedule(every full moon)>".into()),
            ..Default::default()
        });
        assert!(problems(&e).contains("<my_schedule(every full moon)> has no PeriodicTask"));
    }

    #[test]
    fn a_solar_schedule_keeps_its_event_and_place() {
        let solar = |event: &str, latitude: f64| ExportedSchedule {
            solar: Some(ExportedSolar {
                event: event.into(),
                latitude,
                longitude: 13.4,
            }),
            ..Default::default()
        };
        let pt = map(&entry(solar("dusk_civil", 52.5))).expect("maps");
        assert_eq!(
            pt.spec.schedule.solar,
            Some(SolarSpec {
                event: SolarEvent::DuskCivil,
                latitude: 52.5,
                longitude: 13.4
            })
        );
        assert_eq!(pt.spec.time_zone, None, "solar instants are absolute");
        assert!(
            problems(&entry(solar("sundown", 52.5))).contains("invalid solar event \"sundown\"")
        );
        assert!(
            problems(&entry(solar("sunset", 95.0)))
                .contains("invalid solar latitude 95: must be between -90 and 90")
        );
    }

    #[test]
    fn args_and_kwargs_must_be_a_list_and_a_dict() {
        let mut e = entry(every(10.0));
        e.args = Some(json!([1, "two", {"three": 3.5}]));
        e.kwargs = Some(json!({"force": true}));
        let pt = map(&e).expect("mapped");
        assert_eq!(pt.spec.args, Some(json!([1, "two", {"three": 3.5}])));
        assert_eq!(pt.spec.kwargs, Some(json!({"force": true})));
        e.args = Some(json!({"not": "a list"}));
        e.kwargs = Some(json!(["not a dict"]));
        let p = problems(&e);
        assert!(p.contains("args: ") && p.contains("kwargs: "), "{p}");
    }

    #[test]
    fn what_the_exporter_could_not_write_as_json_is_reported() {
        let mut e = entry(every(10.0));
        e.errors = vec!["args: (<object>,) is not JSON".into()];
        assert!(problems(&e).contains("args: (<object>,) is not JSON"));
    }

    #[test]
    fn options_map_to_queue_priority_expires_and_headers() {
        let mut e = entry(every(10.0));
        e.options = BTreeMap::from([
            ("queue".into(), json!("mail")),
            ("routing_key".into(), json!("mail")),
            ("priority".into(), json!(5)),
            ("expires_seconds".into(), json!(300.0)),
            ("headers".into(), json!({"tenant": "acme"})),
        ]);
        let pt = map(&e).expect("mapped");
        assert_eq!(pt.spec.queue.as_deref(), Some("mail"));
        assert_eq!(pt.spec.priority, Some(5));
        assert_eq!(pt.spec.expires.as_deref(), Some("5m"));
        assert_eq!(pt.spec.headers["tenant"], "acme");
        assert_eq!(pt.spec.headers[ENTRY_NAME_HEADER], "refresh cache");
        assert_eq!(
            pt.metadata.annotations.expect("annotations")[ENTRY_NAME_ANNOTATION],
            "refresh cache"
        );
    }

    #[test]
    fn a_routing_key_alone_is_the_queue_and_a_different_one_is_refused() {
        let mut e = entry(every(10.0));
        e.options = BTreeMap::from([("routing_key".into(), json!("reports"))]);
        assert_eq!(
            map(&e).expect("mapped").spec.queue.as_deref(),
            Some("reports")
        );
        e.options.insert("queue".into(), json!("mail"));
        assert!(problems(&e).contains("options.routing_key: reports differs from queue mail"));
    }

    #[test]
    fn an_absolute_expiry_ends_the_schedule() {
        let mut e = entry(every(10.0));
        e.options = BTreeMap::from([("expires_at".into(), json!("2030-01-01T00:00:00+00:00"))]);
        let pt = map(&e).expect("mapped");
        assert_eq!(
            pt.spec
                .end_time
                .and_then(|t| from_time(&t))
                .map(|t| t.to_rfc3339()),
            Some("2030-01-01T00:00:00+00:00".into())
        );
    }

    #[test]
    fn unknown_options_and_one_off_are_refused() {
        let mut e = entry(every(10.0));
        e.options = BTreeMap::from([("countdown".into(), json!(5))]);
        e.one_off = true;
        let p = problems(&e);
        assert!(p.contains("options.countdown: not supported"), "{p}");
        assert!(p.contains("one_off: "), "{p}");
    }

    #[test]
    fn django_rows_keep_start_time_headers_and_disabled_is_suspended() {
        let mut e = entry(every(60.0));
        e.source = "django_celery_beat".into();
        e.start_time = Some("2030-05-01T08:00:00+02:00".into());
        e.headers = Some(json!({"periodic_task_name": "custom", "x": "y"}));
        e.enabled = false;
        let pt = map(&e).expect("mapped");
        assert_eq!(
            start_of(&pt).map(|t| t.to_rfc3339()),
            Some("2030-05-01T06:00:00+00:00".into())
        );
        // The row's own header wins over the one the import adds.
        assert_eq!(pt.spec.headers[ENTRY_NAME_HEADER], "custom");
        assert_eq!(pt.spec.suspend, Some(true));
        e.headers = Some(json!({"n": 1}));
        assert!(problems(&e).contains("headers.n: 1 is not a string"));
    }

    #[test]
    fn names_become_distinct_dns_labels() {
        let long = "x".repeat(80);
        let names = object_names([
            "Refresh cache (every 30s)",
            "refresh_cache every 30s",
            "celery.backend_cleanup",
            "¡¿",
            long.as_str(),
            long.as_str(),
        ]);
        assert_eq!(names[0], "refresh-cache-every-30s");
        assert_eq!(names[1], "refresh-cache-every-30s-2");
        assert_eq!(names[2], "celery-backend-cleanup");
        assert_eq!(names[3], "beat-entry");
        assert_eq!(names[4].len(), 63);
        assert_eq!(names[5], format!("{}-2", "x".repeat(61)));
    }
}
