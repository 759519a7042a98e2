//! PeriodicTask status from what the controller saw (plan, broker Secret) and what the
//! engine did (runs, broker reachability). Pure.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::engine::{BrokerState, Report};
use crate::api::periodic_task::{PeriodicTask, PeriodicTaskStatus};
use crate::controller::conditions::{Observed, merge};

pub const READY: &str = "Ready";
pub const BROKER_REACHABLE: &str = "BrokerReachable";
pub const SCHEDULE_VALID: &str = "ScheduleValid";

/// What the reconcile found.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// Handed to the engine.
    Scheduled { schedule: String, suspend: bool },
    /// The schedule (or time zone) does not parse; the message is the parser's.
    InvalidSchedule { schedule: String, message: String },
    /// The message could never be valid (e.g. a bad header, expires).
    InvalidMessage { schedule: String, message: String },
    /// The broker Secret is missing.
    BrokerUnresolved { schedule: String, message: String },
}

fn time(t: Option<DateTime<Utc>>) -> Option<Time> {
    t.and_then(|t| Timestamp::from_microsecond(t.timestamp_micros()).ok())
        .map(Time)
}

/// `old` is the latest known status (written last, else the object's).
pub fn build(
    pt: &PeriodicTask,
    old: PeriodicTaskStatus,
    seen: &Seen,
    report: Option<&Report>,
    now: Timestamp,
) -> PeriodicTaskStatus {
    let uid = pt.metadata.uid.as_deref().unwrap_or_default();
    let report = report.filter(|r| r.uid == uid);
    let (schedule, schedule_ok, message_ok, broker) = match seen {
        Seen::Scheduled { schedule, .. } => {
            let message = report.and_then(|r| r.message_error.clone());
            let broker = match report.map(|r| &r.broker) {
                Some(BrokerState::Reachable) => Ok(()),
                Some(BrokerState::Unreachable(m)) => Err(("Unreachable", m.clone())),
                _ => Err(("Connecting", "connecting to the broker".to_string())),
            };
            (schedule, Ok(()), message.map_or(Ok(()), Err), broker)
        }
        Seen::InvalidSchedule { schedule, message } => (
            schedule,
            Err(message.clone()),
            Ok(()),
            Err(("NotChecked", "the schedule is invalid".into())),
        ),
        Seen::InvalidMessage { schedule, message } => (
            schedule,
            Ok(()),
            Err(message.clone()),
            Err(("NotChecked", "the message is invalid".into())),
        ),
        Seen::BrokerUnresolved { schedule, message } => (
            schedule,
            Ok(()),
            Ok(()),
            Err(("BrokerNotFound", message.clone())),
        ),
    };
    let suspended = matches!(seen, Seen::Scheduled { suspend: true, .. });
    let ready = match (&schedule_ok, &message_ok, &broker) {
        (Err(m), _, _) => Observed::new(READY, false, "InvalidSchedule", m.clone()),
        (_, Err(m), _) => Observed::new(READY, false, "InvalidMessage", m.clone()),
        (_, _, Err((reason, m))) => Observed::new(READY, false, reason, m.clone()),
        _ if suspended => Observed::new(READY, true, "Suspended", "suspended: nothing is pushed"),
        _ => Observed::new(READY, true, "Scheduled", "pushing on schedule"),
    };
    let observed = vec![
        ready,
        match &broker {
            Ok(()) => Observed::new(BROKER_REACHABLE, true, "Reachable", "the broker answers"),
            Err((reason, m)) => Observed::new(BROKER_REACHABLE, false, reason, m.clone()),
        },
        match &schedule_ok {
            Ok(()) => Observed::new(SCHEDULE_VALID, true, "Valid", "the schedule parses"),
            Err(m) => Observed::new(SCHEDULE_VALID, false, "InvalidSchedule", m.clone()),
        },
    ];
    let scheduled = matches!(seen, Seen::Scheduled { .. });
    let mut status = PeriodicTaskStatus {
        observed_generation: pt.metadata.generation,
        schedule: Some(schedule.clone()),
        conditions: merge(&old.conditions, observed, pt.metadata.generation, now),
        ..old
    };
    if let Some(r) = report {
        status.last_schedule_time = time(r.last_schedule).or(status.last_schedule_time);
        status.last_task_id = r.last_task_id.clone().or(status.last_task_id);
        status.total_runs = Some(r.total_runs.max(status.total_runs.unwrap_or(0)));
        status.last_run_now = r.last_run_now.clone().or(status.last_run_now);
        status.next_schedule_time = if scheduled {
            time(r.next_schedule)
        } else {
            None
        };
    } else if !scheduled {
        status.next_schedule_time = None;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::periodic_task::PeriodicTaskSpec;
    use crate::controller::conditions::is_true;

    fn pt() -> PeriodicTask {
        let mut pt = PeriodicTask::new("t", PeriodicTaskSpec::default());
        pt.metadata.uid = Some("u".into());
        pt.metadata.generation = Some(2);
        pt
    }

    fn report(broker: BrokerState) -> Report {
        Report {
            key: "ns/t".into(),
            uid: "u".into(),
            last_schedule: DateTime::from_timestamp(1_900_000_000, 0),
            next_schedule: DateTime::from_timestamp(1_900_000_010, 0),
            last_task_id: Some("id".into()),
            total_runs: 7,
            last_run_now: None,
            broker,
            message_error: None,
            events: vec![],
        }
    }

    fn scheduled() -> Seen {
        Seen::Scheduled {
            schedule: "every 10s".into(),
            suspend: false,
        }
    }

    #[test]
    fn a_working_task_is_ready_with_runs_and_next_slot() {
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            Some(&report(BrokerState::Reachable)),
            Timestamp::UNIX_EPOCH,
        );
        assert!(is_true(&s.conditions, READY));
        assert!(is_true(&s.conditions, BROKER_REACHABLE));
        assert!(is_true(&s.conditions, SCHEDULE_VALID));
        assert_eq!(s.total_runs, Some(7));
        assert_eq!(s.schedule.as_deref(), Some("every 10s"));
        assert_eq!(s.observed_generation, Some(2));
        let next = s.next_schedule_time.expect("next");
        assert_eq!(next.0.as_second(), 1_900_000_010);
    }

    #[test]
    fn an_unreachable_broker_is_reported_with_its_message() {
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            Some(&report(BrokerState::Unreachable("cannot connect".into()))),
            Timestamp::UNIX_EPOCH,
        );
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == BROKER_REACHABLE)
            .expect("cond");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Unreachable")
        );
        assert!(!is_true(&s.conditions, READY));
    }

    #[test]
    fn an_invalid_schedule_keeps_the_history_and_clears_next() {
        let mut obj = pt();
        obj.status = Some(PeriodicTaskStatus {
            total_runs: Some(3),
            next_schedule_time: time(DateTime::from_timestamp(1_900_000_010, 0)),
            ..Default::default()
        });
        let s = build(
            &obj,
            obj.status.clone().unwrap_or_default(),
            &Seen::InvalidSchedule {
                schedule: "cron x".into(),
                message: "invalid cron".into(),
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.total_runs, Some(3));
        assert_eq!(s.next_schedule_time, None);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == SCHEDULE_VALID)
            .expect("cond");
        assert_eq!(
            (c.status.as_str(), c.message.as_str()),
            ("False", "invalid cron")
        );
    }
}
