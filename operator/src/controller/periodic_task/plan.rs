//! From a PeriodicTask to what the engine needs to fire it: pure, no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::api::periodic_task::{
    ConcurrencyPolicy, MissedRunPolicy, PeriodicTask, PeriodicTaskSpec,
};
use crate::api::shared::TransportOptionsSpec;
use crate::celery::message::DEFAULT_QUEUE;
use crate::celery::task_id::TASK_ID_NAMESPACE;
use crate::celery::{EncodeError, EncodedMessage, Field, Stamp, TaskMessage, TransportOptions};
use crate::controller::time::from_time;
use crate::schedule::{CrontabFields, Interval, Schedule, ScheduleError, ScheduleSpec};

/// Why a PeriodicTask cannot be scheduled. Display is one line for a condition message.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("invalid expires: {0}")]
    Expires(String),
    /// `field` is the message part at fault, when one is.
    #[error("invalid message: {reason}")]
    Message {
        field: Option<Field>,
        reason: String,
    },
    #[error("object has no {0}")]
    Missing(&'static str),
}

impl PlanError {
    fn message(e: EncodeError) -> Self {
        let field = match &e {
            EncodeError::Invalid(v) => Some(v.field),
            _ => None,
        };
        PlanError::Message {
            field,
            reason: e.to_string(),
        }
    }

    /// Condition reason: schedule errors make `ScheduleValid` False, the others `Ready`.
    pub fn is_schedule(&self) -> bool {
        matches!(self, PlanError::Schedule(_))
    }
}

/// The parts of a message that are the same for every slot.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub task: String,
    pub args: Value,
    pub kwargs: Value,
    pub queue: String,
    pub priority: u8,
    /// The message expires this long after its slot.
    pub expires: Option<TimeDelta>,
    pub headers: BTreeMap<String, String>,
}

impl Template {
    /// The message of run `id` for `slot`.
    pub fn message(&self, id: Uuid, slot: DateTime<Utc>) -> TaskMessage {
        let mut msg = TaskMessage::new(self.task.clone(), id)
            .args(self.args.clone())
            .kwargs(self.kwargs.clone())
            .queue(self.queue.clone())
            .priority(self.priority);
        if let Some(after) = self.expires
            && let Some(at) = slot.checked_add_signed(after)
        {
            msg = msg.expires(at);
        }
        msg.headers = self.headers.clone();
        msg
    }

    /// Validates and encodes the message of `id` for `slot`, published at `now`.
    pub fn encode(
        &self,
        transport: &TransportOptions,
        id: Uuid,
        slot: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<EncodedMessage, EncodeError> {
        self.message(id, slot)
            .encode(transport, Uuid::new_v4(), now)
    }
}

/// Everything the engine needs to fire one PeriodicTask.
#[derive(Clone, Debug)]
pub struct Plan {
    pub uid: String,
    pub schedule: Schedule,
    /// No slot at or before this (creation or startTime).
    pub floor: DateTime<Utc>,
    /// No slot at or after this.
    pub end: Option<DateTime<Utc>>,
    pub suspend: bool,
    pub policy: MissedRunPolicy,
    pub concurrency: ConcurrencyPolicy,
    pub starting_deadline: Option<TimeDelta>,
    pub template: Template,
    pub transport: TransportOptions,
    /// Life of a slot's dedupe key; see [`super::slots::dedupe_ttl`].
    pub dedupe_ttl: std::time::Duration,
    /// The message with holes for each run's values (`None`: encode each run in full).
    pub stamp: Option<Stamp>,
}

impl Plan {
    /// The message of run `id` for `slot`, published at `now`: stamped when it can be,
    /// else encoded in full (which also says why a run cannot be sent).
    pub fn encode_run(
        &self,
        id: Uuid,
        slot: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<EncodedMessage, EncodeError> {
        let delivery_tag = Uuid::new_v4();
        if let Some(enc) = self
            .stamp
            .as_ref()
            .and_then(|s| s.stamp(id, slot, delivery_tag, now))
        {
            return Ok(enc);
        }
        self.template
            .message(id, slot)
            .encode(&self.transport, delivery_tag, now)
    }

    /// The first slot strictly after `after` (and after the floor), before the end.
    pub fn next_slot(&self, after: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let after = after.map_or(self.floor, |a| a.max(self.floor));
        let next = self.schedule.next_after(after)?.with_timezone(&Utc);
        match self.end {
            Some(end) if next >= end => None,
            _ => Some(next),
        }
    }
}

/// The task id of the run-now request `value` of object `uid`; like a slot's id it is the
/// same on every replica, so one annotation value pushes once.
pub fn run_now_task_id(uid: &str, value: &str) -> Uuid {
    Uuid::new_v5(
        &TASK_ID_NAMESPACE,
        format!("{uid}/run-now/{value}").as_bytes(),
    )
}

/// The schedule as written, e.g. `every 10s`, `crontab 0 */3,8-12 * * *` (Celery's
/// `from_string` order: minute hour day-of-month month day-of-week), `cron @hourly`.
pub fn schedule_text(spec: &PeriodicTaskSpec) -> String {
    let s = &spec.schedule;
    let mut text = if let Some(every) = &s.every {
        format!("every {every}")
    } else if let Some(c) = &s.crontab {
        let f = |v: &Option<String>| v.clone().unwrap_or_else(|| "*".into());
        format!(
            "crontab {} {} {} {} {}",
            f(&c.minute),
            f(&c.hour),
            f(&c.day_of_month),
            f(&c.month_of_year),
            f(&c.day_of_week)
        )
    } else if let Some(cron) = &s.cron {
        format!("cron {cron}")
    } else if let Some(at) = &s.at {
        format!("at {}", at.0)
    } else if let Some(solar) = &s.solar {
        format!(
            "solar {} {},{}",
            solar.event, solar.latitude, solar.longitude
        )
    } else {
        "none".into()
    };
    if let Some(tz) = &spec.time_zone {
        text.push_str(&format!(" ({tz})"));
    }
    text
}

/// The header django-celery-beat sends, so tools that group runs by it work unchanged.
pub const PERIODIC_TASK_NAME_HEADER: &str = "periodic_task_name";

/// The spec's headers and `periodic_task_name: <namespace>/<name>`, unless the spec sets it
/// (an imported beat entry keeps its original name there).
fn headers(pt: &PeriodicTask) -> BTreeMap<String, String> {
    let mut headers = pt.spec.headers.clone();
    headers
        .entry(PERIODIC_TASK_NAME_HEADER.into())
        .or_insert_with(|| {
            format!(
                "{}/{}",
                pt.metadata.namespace.as_deref().unwrap_or_default(),
                pt.metadata.name.as_deref().unwrap_or_default()
            )
        });
    headers
}

/// Builds the plan of `pt`, validating the schedule and a sample message, so a spec that
/// could never produce a valid message is refused before anything is pushed.
pub fn build(pt: &PeriodicTask, now: DateTime<Utc>) -> Result<Plan, PlanError> {
    let spec = &pt.spec;
    let uid = pt.metadata.uid.clone().ok_or(PlanError::Missing("uid"))?;
    let created = pt
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(from_time)
        .unwrap_or(now);
    let start = spec.start_time.as_ref().and_then(from_time);
    let end = spec.end_time.as_ref().and_then(from_time);
    let floor = start.unwrap_or(created);
    let crontab = spec.schedule.crontab.as_ref().map(|c| CrontabFields {
        minute: c.minute.as_deref(),
        hour: c.hour.as_deref(),
        day_of_week: c.day_of_week.as_deref(),
        day_of_month: c.day_of_month.as_deref(),
        month_of_year: c.month_of_year.as_deref(),
    });
    let schedule = Schedule::from_spec(
        &ScheduleSpec {
            every: spec.schedule.every.as_deref(),
            crontab,
            cron: spec.schedule.cron.as_deref(),
            at: spec.schedule.at.as_ref().and_then(from_time),
            solar: spec.schedule.solar,
        },
        spec.time_zone.as_deref(),
        floor,
    )?;
    let expires = spec
        .expires
        .as_deref()
        .map(|e| {
            Interval::parse(e)
                .map(|i| i.as_time_delta())
                .map_err(|err| PlanError::Expires(err.to_string()))
        })
        .transpose()?;
    let priority = spec.priority.unwrap_or(0);
    let priority = u8::try_from(priority).map_err(|_| PlanError::Message {
        field: Some(Field::Priority),
        reason: format!("priority {priority} is not within 0-9"),
    })?;
    let template = Template {
        task: spec.task.clone(),
        args: spec.args.clone().unwrap_or_else(|| Value::Array(vec![])),
        kwargs: spec
            .kwargs
            .clone()
            .unwrap_or_else(|| Value::Object(Default::default())),
        queue: spec.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.into()),
        priority,
        expires,
        headers: headers(pt),
    };
    let transport = TransportOptionsSpec::resolve(spec.transport_options.as_ref());
    // A sample message: everything but the id and the slot is what every run sends.
    template
        .encode(&transport, run_now_task_id(&uid, "check"), now, now)
        .map_err(PlanError::message)?;
    let stamp = Stamp::new(
        &template.message(Uuid::nil(), now),
        template.expires,
        &transport,
        now,
    )
    .map_err(PlanError::message)?;
    let policy = spec.missed_run_policy.unwrap_or_default();
    let starting_deadline = spec
        .starting_deadline_seconds
        .and_then(TimeDelta::try_seconds);
    let dedupe_ttl = super::slots::dedupe_ttl(&schedule, policy, starting_deadline, now);
    Ok(Plan {
        uid,
        dedupe_ttl,
        schedule,
        floor,
        end,
        suspend: spec.suspend.unwrap_or(false),
        policy,
        concurrency: spec.concurrency_policy.unwrap_or_default(),
        starting_deadline,
        template,
        transport,
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::periodic_task::PeriodicTask;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub(crate) fn task(yaml: &str) -> PeriodicTask {
        let spec = serde_yaml::from_str(yaml).expect("spec");
        let mut pt = PeriodicTask::new("t", spec);
        pt.metadata.uid = Some("0b8e3d2a-1111-4222-8333-444455556666".into());
        pt.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_900_000_000).expect("ts"),
        ));
        pt
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("ts")
    }

    #[test]
    fn every_message_names_its_periodic_task_as_django_celery_beat_does_unless_the_spec_does() {
        let mut pt = task("{task: a.b, schedule: {every: 10s}, broker: {redisCache: r}}");
        pt.metadata.namespace = Some("shop".into());
        let plan = build(&pt, at(1_900_000_000)).expect("plan");
        let enc = plan
            .encode_run(Uuid::nil(), at(1_900_000_010), at(1_900_000_010))
            .expect("encode");
        let msg = crate::celery::decode_envelope(&enc.envelope).expect("decode");
        assert_eq!(
            msg.headers[PERIODIC_TASK_NAME_HEADER],
            serde_json::json!("shop/t")
        );
        // An imported beat entry keeps its original name.
        let mut pt = task(
            "{task: a.b, schedule: {every: 10s}, headers: {periodic_task_name: 'refresh ranking'}, broker: {redisCache: r}}",
        );
        pt.metadata.namespace = Some("shop".into());
        let plan = build(&pt, at(1_900_000_000)).expect("plan");
        assert_eq!(
            plan.template.headers[PERIODIC_TASK_NAME_HEADER],
            "refresh ranking"
        );
    }

    #[test]
    fn every_is_anchored_at_creation_and_the_anchor_is_not_a_slot() {
        let pt = task("{task: a.b, schedule: {every: 10s}, broker: {redisCache: r}}");
        let plan = build(&pt, at(1_900_000_005)).expect("plan");
        assert_eq!(plan.next_slot(None), Some(at(1_900_000_010)));
        assert_eq!(
            plan.next_slot(Some(at(1_900_000_010))),
            Some(at(1_900_000_020))
        );
        assert_eq!(schedule_text(&pt.spec), "every 10s");
    }

    #[test]
    fn end_time_stops_the_schedule() {
        let pt = task(
            "{task: a.b, schedule: {every: 10s}, endTime: '2030-03-17T17:47:00Z', broker: {redisCache: r}}",
        );
        let plan = build(&pt, at(1_900_000_000)).expect("plan");
        // 2030-03-17T17:46:40Z = 1_900_000_000; slots at +10 (…:50) then +20 (17:47:00 = end).
        assert_eq!(plan.next_slot(None), Some(at(1_900_000_010)));
        assert_eq!(plan.next_slot(Some(at(1_900_000_010))), None);
    }

    #[test]
    fn a_bad_schedule_value_is_a_one_line_schedule_error() {
        let pt = task("{task: a.b, schedule: {crontab: {minute: '61'}}, broker: {redisCache: r}}");
        let err = build(&pt, at(1_900_000_000)).expect_err("invalid");
        assert!(err.is_schedule());
        let text = err.to_string();
        assert!(text.contains("minute"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_message_that_would_hurt_a_worker_is_refused_up_front() {
        let pt = task(
            "{task: a.b, schedule: {every: 1s}, headers: {'bad name': x}, broker: {redisCache: r}}",
        );
        let err = build(&pt, at(1_900_000_000)).expect_err("invalid");
        assert!(!err.is_schedule());
        assert!(err.to_string().contains("header"), "{err}");
    }

    #[test]
    fn the_message_carries_args_kwargs_priority_queue_and_expiry() {
        let pt = task(
            "{task: a.b, args: [1, x], kwargs: {n: 'Zoë'}, priority: 5, queue: q, expires: 30s, schedule: {every: 1s}, broker: {redisCache: r}}",
        );
        let plan = build(&pt, at(1_900_000_000)).expect("plan");
        assert!(
            plan.stamp.is_some(),
            "runs are stamped, not encoded in full"
        );
        let id = run_now_task_id("u", "1");
        let enc = plan
            .encode_run(id, at(1_900_000_001), at(1_900_000_001))
            .expect("encode");
        assert_eq!(enc.queue_key, "q\x06\x163");
        let dec = crate::celery::decode_envelope(&enc.envelope).expect("decode");
        assert_eq!(dec.task, "a.b");
        assert_eq!(dec.priority, 5);
        assert_eq!(Value::Array(dec.args), serde_json::json!([1, "x"]));
        assert_eq!(dec.kwargs["n"], "Zoë");
        assert!(
            enc.envelope.contains("2030-03-17T17:47:11"),
            "expires = slot + 30s"
        );
        // A run pushed after its expiry is refused with the encoder's reason.
        let late = plan.encode_run(id, at(1_900_000_001), at(1_900_000_040));
        assert!(
            matches!(late, Err(EncodeError::Invalid(ref v)) if v.field == crate::celery::Field::Expires),
            "{late:?}"
        );
    }

    #[test]
    fn transport_options_shape_the_queue_key() {
        let pt = task(
            "{task: a.b, priority: 5, schedule: {every: 1s}, transportOptions: {prioritySteps: [0, 5], separator: ':', globalKeyPrefix: 'app/'}, broker: {redisCache: r}}",
        );
        let plan = build(&pt, at(1_900_000_000)).expect("plan");
        let enc = plan
            .template
            .encode(
                &plan.transport,
                run_now_task_id("u", "1"),
                at(1_900_000_001),
                at(1_900_000_001),
            )
            .expect("encode");
        assert_eq!(enc.queue_key, "app/celery:5");
    }

    #[test]
    fn run_now_ids_differ_by_value_and_object() {
        assert_eq!(run_now_task_id("u", "1"), run_now_task_id("u", "1"));
        assert_ne!(run_now_task_id("u", "1"), run_now_task_id("u", "2"));
        assert_ne!(run_now_task_id("u", "1"), run_now_task_id("v", "1"));
    }

    #[test]
    fn crontab_text_uses_celery_from_string_order() {
        let pt = task(
            "{task: a.b, schedule: {crontab: {minute: '0', hour: '*/3,8-12', dayOfWeek: 'mon-fri'}}, timeZone: Europe/Berlin, broker: {redisCache: r}}",
        );
        assert_eq!(
            schedule_text(&pt.spec),
            "crontab 0 */3,8-12 * * mon-fri (Europe/Berlin)"
        );
    }

    mod fuzz {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                ".{0,12}".prop_map(Value::String),
                // Celery's tagged values, well- and ill-formed.
                "(datetime|date|time|uuid|decimal|bytes|set|fun)".prop_map(|t| {
                    serde_json::json!({"__type__": t, "__value__": "2024-01-01"})
                }),
            ];
            leaf.prop_recursive(40, 200, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(".{0,6}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// A plan is built (the message it sends validated) or refused, never a panic,
            /// whatever the task name, queue, headers, expiry and arguments are.
            #[test]
            fn any_message_spec_plans_or_is_refused(
                task_name in "[a-z._:-]{0,20}|.{0,8}",
                queue in "[a-z./@-]{0,12}|.{0,6}",
                headers in proptest::collection::btree_map(".{0,8}", ".{0,16}", 0..4),
                expires in "[0-9]{0,4}[smhd]?|.{0,4}",
                priority in -2i32..12,
                args in proptest::collection::vec(json(), 0..4),
                kwargs in proptest::collection::btree_map(".{0,8}", json(), 0..4),
            ) {
                let mut pt = task("task: a.b\nschedule: {every: 1s}\nbroker: {redisCache: r}\n");
                pt.spec.task = task_name;
                pt.spec.queue = Some(queue);
                pt.spec.headers = headers;
                pt.spec.expires = Some(expires);
                pt.spec.priority = Some(priority);
                pt.spec.args = Some(Value::Array(args));
                pt.spec.kwargs = Some(Value::Object(kwargs.into_iter().collect()));
                let _ = build(&pt, at(1_900_000_100));
            }
        }
    }
}
