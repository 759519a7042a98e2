//! PeriodicTask status from what the controller saw (plan, broker Secret) and what the
//! engine did (runs, broker reachability). Pure.

use k8s_openapi::jiff::Timestamp;

use super::engine::{BrokerState, Report};
use super::run_state::RunState;
use crate::api::periodic_task::{PeriodicTask, PeriodicTaskStatus};
use crate::controller::conditions::{Conditioned, Observed, Status, merge};
use crate::controller::time::to_time;

pub(crate) const READY: &str = "Ready";
pub(crate) const BROKER_REACHABLE: &str = "BrokerReachable";
pub(crate) const SCHEDULE_VALID: &str = "ScheduleValid";

/// What the reconcile found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Seen {
    /// Handed to the engine. `stale_broker` says why the broker reference could not be read
    /// again for a while (the engine keeps pushing with the URL it read before).
    Scheduled {
        schedule: String,
        suspend: bool,
        stale_broker: Option<String>,
    },
    /// The schedule (or time zone) does not parse; the message is the parser's.
    InvalidSchedule { schedule: String, message: String },
    /// The message could never be valid (e.g. a bad header, expires).
    InvalidMessage { schedule: String, message: String },
    /// The broker Secret is missing.
    BrokerUnresolved { schedule: String, message: String },
}

impl Default for Seen {
    fn default() -> Self {
        Seen::Scheduled {
            schedule: String::new(),
            suspend: false,
            stale_broker: None,
        }
    }
}

impl Seen {
    /// The Warning event (reason, note) to record when a reconcile first sees this.
    pub(crate) fn warning(&self) -> Option<(&'static str, String)> {
        match self {
            Seen::InvalidSchedule { message, .. } => Some(("InvalidSchedule", message.clone())),
            Seen::InvalidMessage { message, .. } => Some(("InvalidMessage", message.clone())),
            Seen::BrokerUnresolved { message, .. } => Some(("BrokerNotFound", message.clone())),
            Seen::Scheduled {
                stale_broker: Some(message),
                ..
            } => Some(("BrokerRefUnreadable", message.clone())),
            Seen::Scheduled { .. } => None,
        }
    }
}

/// `old` is the latest known status (written last, else the object's).
pub(crate) fn build(
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
                Some(BrokerState::Unreachable(m)) => Err((Status::False, "Unreachable", m.clone())),
                _ => Err((
                    Status::Unknown,
                    "Connecting",
                    "connecting to the broker".to_string(),
                )),
            };
            (schedule, Ok(()), message.map_or(Ok(()), Err), broker)
        }
        Seen::InvalidSchedule { schedule, message } => (
            schedule,
            Err(message.clone()),
            Ok(()),
            Err((
                Status::Unknown,
                "NotChecked",
                "the schedule is invalid".into(),
            )),
        ),
        Seen::InvalidMessage { schedule, message } => (
            schedule,
            Ok(()),
            Err(message.clone()),
            Err((
                Status::Unknown,
                "NotChecked",
                "the message is invalid".into(),
            )),
        ),
        Seen::BrokerUnresolved { schedule, message } => (
            schedule,
            Ok(()),
            Ok(()),
            Err((Status::False, "BrokerNotFound", message.clone())),
        ),
    };
    let suspended = matches!(seen, Seen::Scheduled { suspend: true, .. });
    let stale_broker = match seen {
        Seen::Scheduled {
            stale_broker: Some(m),
            ..
        } => Some(m),
        _ => None,
    };
    let ready = match (&schedule_ok, &message_ok, &broker) {
        (Err(m), _, _) => Observed::new(READY, false, "InvalidSchedule", m.clone()),
        (_, Err(m), _) => Observed::new(READY, false, "InvalidMessage", m.clone()),
        (_, _, Err((_, reason, m))) => Observed::new(READY, false, reason, m.clone()),
        _ if suspended => Observed::new(READY, true, "Suspended", "suspended: nothing is pushed"),
        _ if stale_broker.is_some() => Observed::new(
            READY,
            true,
            "BrokerRefUnreadable",
            format!(
                "pushing on schedule with the broker URL read before; reading it again fails: {}",
                stale_broker.map(String::as_str).unwrap_or_default()
            ),
        ),
        _ => Observed::new(READY, true, "Scheduled", "pushing on schedule"),
    };
    let observed = vec![
        ready,
        match &broker {
            Ok(()) => Observed::new(BROKER_REACHABLE, true, "Reachable", "the broker answers"),
            Err((status, reason, m)) => Observed::new(BROKER_REACHABLE, *status, reason, m.clone()),
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
        conditions: merge(pt.conditions(), observed, pt.metadata.generation, now),
        ..old
    };
    if let Some(r) = report {
        RunState::from_status(&status)
            .merge(r.runs.clone())
            .write_into(&mut status);
        status.next_schedule_time = if scheduled {
            r.next_schedule.and_then(to_time)
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
    use crate::controller::conditions::condition;
    use crate::controller::conditions::is_true;
    use chrono::DateTime;

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
            runs: RunState {
                last_slot: DateTime::from_timestamp(1_900_000_000, 0),
                total_runs: 7,
                last_task_id: Some("id".into()),
                last_run_now: None,
            },
            next_schedule: DateTime::from_timestamp(1_900_000_010, 0),
            broker,
            message_error: None,
            events: vec![],
        }
    }

    fn scheduled() -> Seen {
        Seen::Scheduled {
            schedule: "every 10s".into(),
            suspend: false,
            stale_broker: None,
        }
    }

    #[test]
    fn a_broker_ref_that_cannot_be_read_again_keeps_the_task_ready_and_says_why() {
        let s = build(
            &pt(),
            Default::default(),
            &Seen::Scheduled {
                schedule: "every 10s".into(),
                suspend: false,
                stale_broker: Some("spec.broker.secretKeyRef: reading Secret b: 503".into()),
            },
            Some(&report(BrokerState::Reachable)),
            Timestamp::UNIX_EPOCH,
        );
        let c = condition(&s.conditions, READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "BrokerRefUnreadable")
        );
        assert!(c.message.contains("503"), "{}", c.message);
        assert!(s.next_schedule_time.is_some(), "still scheduled");
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
        let c = condition(&s.conditions, BROKER_REACHABLE);
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
            next_schedule_time: DateTime::from_timestamp(1_900_000_010, 0).and_then(to_time),
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
        let c = condition(&s.conditions, SCHEDULE_VALID);
        assert_eq!(
            (c.status.as_str(), c.message.as_str()),
            ("False", "invalid cron")
        );
        // The broker was never tried: not False, Unknown.
        let c = condition(&s.conditions, BROKER_REACHABLE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NotChecked")
        );
    }

    #[test]
    fn a_broker_not_tried_yet_is_unknown_and_the_task_not_ready() {
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            None,
            Timestamp::UNIX_EPOCH,
        );
        let c = condition(&s.conditions, BROKER_REACHABLE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "Connecting")
        );
        assert_eq!(condition(&s.conditions, READY).status, "False");
    }
}
