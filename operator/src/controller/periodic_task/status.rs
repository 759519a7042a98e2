//! PeriodicTask status from what the controller saw (plan, broker Secret) and what the
//! engine did (runs, broker reachability). Pure.

use k8s_openapi::jiff::Timestamp;

use super::engine::{BrokerState, Report};
use super::outcomes::PENDING_UNKNOWN_AFTER;
use super::run_history::{self, RunHistory};
use super::run_state::RunState;
use crate::api::periodic_task::{PeriodicTask, PeriodicTaskStatus, TaskState};
use crate::broker::BrokerUrl;
use crate::controller::conditions::{Conditioned, Observed, Status, merge};
use crate::controller::time::to_time;

pub(crate) const READY: &str = "Ready";
pub(crate) const BROKER_REACHABLE: &str = "BrokerReachable";
pub(crate) const SCHEDULE_VALID: &str = "ScheduleValid";
pub(crate) const LAST_RUN_SUCCEEDED: &str = "LastRunSucceeded";

/// The result backend as reconcile resolved it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Results {
    /// `spec.resultBackend` is not set: outcomes are not read.
    #[default]
    NotSet,
    Read(BrokerUrl),
    /// It names nothing (the message says what).
    Unresolved(String),
}

/// What the reconcile found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Seen {
    /// Handed to the engine. `stale_broker` says why the broker reference could not be read
    /// again for a while (the engine keeps pushing with the URL it read before).
    Scheduled {
        schedule: String,
        suspend: bool,
        stale_broker: Option<String>,
        results: Results,
    },
    /// The schedule (or time zone) does not parse; the message is the parser's.
    InvalidSchedule { schedule: String, message: String },
    /// The message could never be valid (e.g. a bad header, expires).
    InvalidMessage { schedule: String, message: String },
    /// The broker Secret is missing; `pending` when its RedisCache is still being created
    /// (no Warning for that: it resolves on its own).
    BrokerUnresolved {
        schedule: String,
        message: String,
        pending: bool,
    },
}

impl Default for Seen {
    fn default() -> Self {
        Seen::Scheduled {
            schedule: String::new(),
            suspend: false,
            stale_broker: None,
            results: Results::NotSet,
        }
    }
}

impl Seen {
    /// The Warning event (reason, note) to record when a reconcile first sees this.
    pub(crate) fn warning(&self) -> Option<(&'static str, String)> {
        match self {
            Seen::InvalidSchedule { message, .. } => Some(("InvalidSchedule", message.clone())),
            Seen::InvalidMessage { message, .. } => Some(("InvalidMessage", message.clone())),
            Seen::BrokerUnresolved {
                message,
                pending: false,
                ..
            } => Some(("BrokerNotFound", message.clone())),
            Seen::BrokerUnresolved { pending: true, .. } => None,
            Seen::Scheduled {
                stale_broker: Some(message),
                ..
            } => Some(("BrokerRefUnreadable", message.clone())),
            Seen::Scheduled {
                results: Results::Unresolved(message),
                ..
            } => Some(("ResultBackendNotFound", message.clone())),
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
    history: &RunHistory,
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
        Seen::BrokerUnresolved {
            schedule,
            message,
            pending,
        } => (
            schedule,
            Ok(()),
            Ok(()),
            Err((
                Status::False,
                if *pending {
                    "WaitingForBroker"
                } else {
                    "BrokerNotFound"
                },
                message.clone(),
            )),
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
    // The engine found no slot after the last one handled: an `at` that ran, an endTime
    // that passed. Nothing the broker does changes that.
    let completed = matches!(seen, Seen::Scheduled { suspend: false, .. })
        && report.is_some_and(|r| r.next_schedule.is_none());
    let ready = match (&schedule_ok, &message_ok, &broker) {
        (Err(m), _, _) => Observed::new(READY, false, "InvalidSchedule", m.clone()),
        (_, Err(m), _) => Observed::new(READY, false, "InvalidMessage", m.clone()),
        _ if completed => Observed::new(
            READY,
            false,
            "Completed",
            "the schedule has no further slot: nothing more is pushed",
        ),
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
        last_run_succeeded(seen, history),
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
    if !matches!(
        seen,
        Seen::Scheduled {
            results: Results::Unresolved(_),
            ..
        }
    ) {
        status.recent_runs = history.runs().to_vec();
        status.last_run = status.recent_runs.first().cloned();
        status.last_result = status.last_run.as_ref().map(run_history::summary);
    }
    status
}

/// From the newest run that ended: a run still waiting or running changes nothing.
fn last_run_succeeded(seen: &Seen, history: &RunHistory) -> Observed {
    let c = |status, reason, message: String| {
        Observed::new(LAST_RUN_SUCCEEDED, status, reason, message)
    };
    match seen {
        Seen::Scheduled {
            results: Results::NotSet,
            ..
        } => {
            return c(
                Status::Unknown,
                "NoResultBackend",
                "spec.resultBackend is not set: how runs end is not read".into(),
            );
        }
        Seen::Scheduled {
            results: Results::Unresolved(m),
            ..
        } => return c(Status::Unknown, "ResultBackendNotFound", m.clone()),
        _ => {}
    }
    let Some(run) = history.last_finished() else {
        return c(
            Status::Unknown,
            "NoRunFinished",
            "no run has finished yet".into(),
        );
    };
    let id = &run.task_id;
    let exception = run.exception.as_deref().unwrap_or("no exception recorded");
    match run.state {
        TaskState::Success => c(
            Status::True,
            "Succeeded",
            format!(
                "run {id} succeeded {} after its slot",
                run.duration.as_deref().unwrap_or("?")
            ),
        ),
        TaskState::Failure => c(
            Status::False,
            "Failed",
            format!("run {id} failed: {exception}"),
        ),
        TaskState::Revoked => c(
            Status::False,
            "Revoked",
            format!("run {id} was revoked: {exception}"),
        ),
        _ => c(
            Status::Unknown,
            "NoResult",
            format!(
                "run {id}: no final state in the result backend (none within {} of its slot \
                 means an expired result, ignore_result, or a lost message)",
                humantime(PENDING_UNKNOWN_AFTER)
            ),
        ),
    }
}

fn humantime(d: chrono::TimeDelta) -> String {
    match d.num_seconds() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
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
                skipped_runs: 0,
                last_task_id: Some("id".into()),
                last_run_now: None,
            },
            next_schedule: DateTime::from_timestamp(1_900_000_010, 0),
            broker,
            message_error: None,
            events: vec![],
            pushed: vec![],
            skipped: vec![],
        }
    }

    fn scheduled() -> Seen {
        Seen::Scheduled {
            schedule: "every 10s".into(),
            suspend: false,
            stale_broker: None,
            results: Results::NotSet,
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
                results: Results::NotSet,
            },
            Some(&report(BrokerState::Reachable)),
            &RunHistory::default(),
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
            &RunHistory::default(),
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
    fn a_schedule_with_no_slot_left_is_completed_even_with_the_broker_gone() {
        let mut done = report(BrokerState::Unreachable("cannot connect".into()));
        done.next_schedule = None;
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            Some(&done),
            &RunHistory::default(),
            Timestamp::UNIX_EPOCH,
        );
        let c = condition(&s.conditions, READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Completed")
        );
        assert_eq!(s.next_schedule_time, None);
        assert_eq!(s.total_runs, Some(7), "its runs are kept");
        // Suspended, there is no next slot either, but it is not done.
        let suspended = Seen::Scheduled {
            schedule: "every 10s".into(),
            suspend: true,
            stale_broker: None,
            results: Results::NotSet,
        };
        let mut idle = report(BrokerState::Reachable);
        idle.next_schedule = None;
        let s = build(
            &pt(),
            Default::default(),
            &suspended,
            Some(&idle),
            &RunHistory::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(condition(&s.conditions, READY).reason, "Suspended");
    }

    #[test]
    fn an_unreachable_broker_is_reported_with_its_message() {
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            Some(&report(BrokerState::Unreachable("cannot connect".into()))),
            &RunHistory::default(),
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
            &RunHistory::default(),
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
    fn a_broker_still_being_created_is_waited_for_without_a_warning() {
        for (pending, reason) in [(true, "WaitingForBroker"), (false, "BrokerNotFound")] {
            let seen = Seen::BrokerUnresolved {
                schedule: "every 10s".into(),
                message: "spec.broker.redisCache: RedisCache b ...".into(),
                pending,
            };
            let s = build(
                &pt(),
                Default::default(),
                &seen,
                None,
                &RunHistory::default(),
                Timestamp::UNIX_EPOCH,
            );
            let c = condition(&s.conditions, BROKER_REACHABLE);
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reason));
            assert!(!is_true(&s.conditions, READY));
            assert_eq!(seen.warning().is_some(), !pending);
        }
    }

    #[test]
    fn a_broker_not_tried_yet_is_unknown_and_the_task_not_ready() {
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            None,
            &RunHistory::default(),
            Timestamp::UNIX_EPOCH,
        );
        let c = condition(&s.conditions, BROKER_REACHABLE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "Connecting")
        );
        assert_eq!(condition(&s.conditions, READY).status, "False");
    }

    fn with_results() -> Seen {
        Seen::Scheduled {
            schedule: "every 10s".into(),
            suspend: false,
            stale_broker: None,
            results: Results::Read(BrokerUrl::new("redis://r:6379/1")),
        }
    }

    fn run_meta(
        state: TaskState,
        done_ms: i64,
        exception: Option<&str>,
    ) -> crate::celery::result::ResultMeta {
        crate::celery::result::ResultMeta {
            date_done: DateTime::from_timestamp_millis(done_ms),
            exception: exception.map(str::to_string),
            ..crate::celery::result::ResultMeta::of(state)
        }
    }

    #[test]
    fn without_a_result_backend_the_condition_says_outcomes_are_not_read() {
        let s = build(
            &pt(),
            Default::default(),
            &scheduled(),
            Some(&report(BrokerState::Reachable)),
            &RunHistory::default(),
            Timestamp::UNIX_EPOCH,
        );
        let c = condition(&s.conditions, LAST_RUN_SUCCEEDED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NoResultBackend")
        );
        assert_eq!((s.last_run, s.last_result), (None, None));
    }

    #[test]
    fn the_newest_finished_run_decides_last_run_succeeded_and_the_newest_run_the_column() {
        let mut history = RunHistory::default();
        let slot = |s| DateTime::from_timestamp(s, 0).expect("ts");
        history.pushed("failed", slot(1_900_000_000), 5);
        history.observe(
            "failed",
            Some(&run_meta(
                TaskState::Failure,
                1_900_000_000_300,
                Some("ValueError: bad input"),
            )),
        );
        history.pushed("waiting", slot(1_900_000_010), 5);
        let s = build(
            &pt(),
            Default::default(),
            &with_results(),
            Some(&report(BrokerState::Reachable)),
            &history,
            Timestamp::UNIX_EPOCH,
        );
        // The column shows the newest run; the condition the newest that ended.
        assert_eq!(s.last_result.as_deref(), Some("PENDING"));
        assert_eq!(
            s.last_run.as_ref().map(|r| r.task_id.as_str()),
            Some("waiting")
        );
        assert_eq!(s.recent_runs.len(), 2);
        let c = condition(&s.conditions, LAST_RUN_SUCCEEDED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Failed"));
        assert!(c.message.contains("ValueError: bad input"), "{}", c.message);
        assert!(
            is_true(&s.conditions, READY),
            "a failed run does not make the task unready"
        );
        history.observe(
            "waiting",
            Some(&run_meta(TaskState::Success, 1_900_000_010_400, None)),
        );
        let s = build(
            &pt(),
            s,
            &with_results(),
            Some(&report(BrokerState::Reachable)),
            &history,
            Timestamp::UNIX_EPOCH,
        );
        assert!(is_true(&s.conditions, LAST_RUN_SUCCEEDED));
        assert_eq!(s.last_result.as_deref(), Some("SUCCESS 0.40s"));
        // A backend that names nothing keeps what was known and says why.
        let unresolved = Seen::Scheduled {
            schedule: "every 10s".into(),
            suspend: false,
            stale_broker: None,
            results: Results::Unresolved("RedisCache results not found".into()),
        };
        let kept = build(
            &pt(),
            s.clone(),
            &unresolved,
            Some(&report(BrokerState::Reachable)),
            &RunHistory::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(kept.recent_runs, s.recent_runs);
        let c = condition(&kept.conditions, LAST_RUN_SUCCEEDED);
        assert_eq!(c.reason, "ResultBackendNotFound");
    }
}
