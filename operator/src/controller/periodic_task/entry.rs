//! The engine's state of one PeriodicTask and how it changes: a new job from reconcile, a
//! firing's result, when to fire next. Pure: no clock, no I/O, so every transition is
//! unit-tested.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::runtime::events::EventType;

use super::concurrency::Held;
use super::engine::{BrokerState, Job, Key, Notice, Report};
use super::fire::{FireError, Fired};
use super::run_state::RunState;
use crate::api::periodic_task::RUN_NOW_ANNOTATION;
use crate::controller::backoff_delay;
use crate::timer_queue::TimerId;

/// Retry backoff after a failed push: 1 s doubling up to 30 s.
const PUSH_RETRY_FIRST: Duration = Duration::from_secs(1);
const PUSH_RETRY_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Entry {
    pub(crate) job: Arc<Job>,
    pub(crate) runs: RunState,
    /// When the timer is armed for (a slot or a retry), and the timer itself.
    pub(crate) armed: Option<DateTime<Utc>>,
    pub(crate) timer: Option<TimerId>,
    /// A firing is under way; its result re-arms the timer.
    pub(crate) busy: bool,
    failures: u32,
    broker: BrokerState,
    message_error: Option<String>,
    /// When the task was last resumed: no slot at or before it runs.
    resumed: Option<DateTime<Utc>>,
}

/// What [`Entry::update`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Update {
    /// First sight, or the object was recreated under the same name (a new uid).
    Fresh,
    /// The same object.
    Same { suspend_changed: bool },
}

impl Entry {
    pub(crate) fn new(job: Arc<Job>) -> Self {
        Self {
            runs: job.status_runs.clone(),
            job,
            armed: None,
            timer: None,
            busy: false,
            failures: 0,
            broker: BrokerState::Unknown,
            message_error: None,
            resumed: None,
        }
    }

    /// Takes a new job from reconcile. A recreated object (another uid) starts afresh.
    pub(crate) fn update(&mut self, job: Arc<Job>, now: DateTime<Utc>) -> Update {
        if self.job.plan.uid != job.plan.uid {
            *self = Self::new(job);
            return Update::Fresh;
        }
        // Status is ahead of memory only if someone else pushed (another replica).
        self.runs = job
            .status_runs
            .clone()
            .merge(std::mem::take(&mut self.runs));
        let was_suspended = self.job.plan.suspend;
        // Slots that fell while suspended are skipped, not caught up.
        if was_suspended && !job.plan.suspend {
            self.resumed = Some(now);
        }
        if self.job.plan.template != job.plan.template
            || self.job.plan.transport != job.plan.transport
        {
            self.message_error = None;
        }
        let suspend_changed = was_suspended != job.plan.suspend;
        self.job = job;
        Update::Same { suspend_changed }
    }

    /// Where the search for due slots starts.
    pub(crate) fn cursor(&self) -> Option<DateTime<Utc>> {
        self.runs.last_slot.max(self.resumed)
    }

    /// Its last push failed; it waits for its retry (or for its broker's return).
    pub(crate) fn failing(&self) -> bool {
        self.failures > 0
    }

    pub(crate) fn broker_unreachable(&self) -> bool {
        matches!(self.broker, BrokerState::Unreachable(_))
    }

    /// A run-now value not acted on yet.
    pub(crate) fn run_now_pending(&self) -> Option<String> {
        match (&self.job.run_now, &self.runs.last_run_now) {
            (Some(v), last) if !v.is_empty() && last.as_ref() != Some(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// When to fire after a firing ended: after a failure its backoff, else [`Self::next_timer`].
    pub(crate) fn timer_after_firing(
        &self,
        now: DateTime<Utc>,
        lead: TimeDelta,
    ) -> Option<DateTime<Utc>> {
        if self.failures == 0 {
            return self.next_timer(now, lead);
        }
        let retry = backoff_delay(PUSH_RETRY_FIRST, self.failures - 1, PUSH_RETRY_MAX);
        TimeDelta::from_std(retry).ok().map(|d| now + d)
    }

    /// When to fire next: at once for a run-now request, else `lead` before the next slot
    /// (at once if that is already past: catch-up), never while suspended.
    pub(crate) fn next_timer(&self, now: DateTime<Utc>, lead: TimeDelta) -> Option<DateTime<Utc>> {
        if self.run_now_pending().is_some() {
            return Some(now);
        }
        if self.job.plan.suspend {
            return None;
        }
        self.job
            .plan
            .next_slot(self.cursor())
            .map(|slot| (slot - lead).max(now))
    }

    /// Takes a firing's result in; returns the events to record.
    pub(crate) fn absorb(&mut self, fired: Fired) -> Vec<Notice> {
        let mut events = Vec::new();
        let mut run_now = None;
        if !fired.probe {
            self.busy = false;
            // The firing started from this state: a new run-now value is one it acted on.
            run_now = (fired.runs.last_run_now != self.runs.last_run_now)
                .then(|| fired.runs.last_run_now.clone())
                .flatten();
            self.runs = std::mem::take(&mut self.runs).merge(fired.runs);
        }
        if let Some(v) = run_now {
            events.push(Notice {
                type_: EventType::Normal,
                reason: "RunNow",
                note: format!("pushed the run requested by {RUN_NOW_ANNOTATION} = {v:?}"),
            });
        }
        if fired.skipped {
            events.push(Notice {
                type_: EventType::Normal,
                reason: "MissedRuns",
                note: format!(
                    "missed slots were skipped (missedRunPolicy {:?})",
                    self.job.plan.policy
                ),
            });
        }
        match &fired.held {
            Some(Held::Skipped {
                slots,
                previous,
                state,
            }) => {
                for (slot, _) in slots {
                    events.push(Notice {
                        type_: EventType::Normal,
                        reason: "RunSkipped",
                        note: format!(
                            "slot {slot} not pushed: {}",
                            Held::skip_reason(previous, *state)
                        ),
                    });
                }
            }
            Some(Held::Replaced {
                previous,
                state,
                receivers,
            }) => events.push(Notice {
                type_: EventType::Normal,
                reason: "RunReplaced",
                note: format!(
                    "revoked the previous run {previous} ({}) before pushing the next \
                     (concurrencyPolicy Replace); {receivers} worker(s) received the revoke",
                    state.as_str()
                ),
            }),
            None => {}
        }
        if let Some(m) = fired.message_error {
            if self.message_error.as_ref() != Some(&m) {
                events.push(Notice {
                    type_: EventType::Warning,
                    reason: "InvalidMessage",
                    note: format!("not pushed: {m}"),
                });
            }
            self.message_error = Some(m);
        }
        match fired.error {
            None => {
                if self.broker_unreachable() {
                    events.push(Notice {
                        type_: EventType::Normal,
                        reason: "BrokerReachable",
                        note: "the broker is reachable again".into(),
                    });
                }
                self.broker = BrokerState::Reachable;
                if !fired.probe {
                    self.failures = 0;
                }
            }
            Some(FireError::Broker(err)) => {
                let text = err.to_string();
                if !self.broker_unreachable() {
                    events.push(Notice {
                        type_: EventType::Warning,
                        reason: "BrokerUnreachable",
                        note: format!("{text}; retrying with backoff"),
                    });
                }
                self.broker = BrokerState::Unreachable(text);
                if !fired.probe {
                    self.failures += 1;
                }
            }
        }
        events
    }

    pub(crate) fn report(&self, key: &Key, events: Vec<Notice>) -> Report {
        let next = if self.job.plan.suspend {
            None
        } else {
            self.job.plan.next_slot(self.cursor())
        };
        Report {
            key: key.clone(),
            uid: self.job.plan.uid.clone(),
            runs: self.runs.clone(),
            next_schedule: next,
            broker: self.broker.clone(),
            message_error: self.message_error.clone(),
            events,
            pushed: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerError, BrokerUrl};
    use crate::controller::periodic_task::plan;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("ts")
    }

    /// A task every 10 s created at T0 = 1_900_000_000, with `uid`.
    fn job(uid: &str, suspend: bool, status_runs: RunState) -> Arc<Job> {
        let spec = serde_json::from_value(serde_json::json!({
            "task": "a.b", "schedule": {"every": "10s"}, "suspend": suspend,
            "broker": {"redisCache": "r"},
        }))
        .expect("spec");
        let mut pt = crate::api::PeriodicTask::new("t", spec);
        pt.metadata.uid = Some(uid.into());
        pt.metadata.creation_timestamp = crate::controller::time::to_time(at(1_900_000_000));
        Arc::new(Job {
            plan: plan::build(&pt, at(1_900_000_000)).expect("plan"),
            url: BrokerUrl::new("redis://127.0.0.1:1/0"),
            results: None,
            status_runs,
            run_now: None,
        })
    }

    fn fired(uid: &str, runs: RunState) -> Fired {
        Fired::new("ns/t".into(), uid.into(), false, runs)
    }

    fn runs(slot: i64, total: i64) -> RunState {
        RunState {
            last_slot: Some(at(slot)),
            total_runs: total,
            skipped_runs: 0,
            last_task_id: Some(format!("id-{slot}")),
            last_run_now: None,
        }
    }

    #[test]
    fn a_recreated_object_starts_afresh() {
        let mut e = Entry::new(job("u1", false, RunState::default()));
        e.absorb(fired("u1", runs(1_900_000_020, 2)));
        assert_eq!(
            e.update(job("u2", false, RunState::default()), at(1_900_000_025)),
            Update::Fresh
        );
        assert_eq!(e.runs, RunState::default(), "a new object has no runs");
        assert_eq!(e.cursor(), None);
        assert_eq!(
            e.next_timer(at(1_900_000_001), TimeDelta::zero()),
            Some(at(1_900_000_010))
        );
    }

    #[test]
    fn a_restart_resumes_from_the_status_and_a_resume_skips_what_fell_while_suspended() {
        // After a restart the engine starts from the status: the next slot is after it.
        let e = Entry::new(job("u", false, runs(1_900_000_030, 3)));
        assert_eq!(e.cursor(), Some(at(1_900_000_030)));
        assert_eq!(
            e.next_timer(at(1_900_000_031), TimeDelta::milliseconds(200)),
            Some(at(1_900_000_040) - TimeDelta::milliseconds(200))
        );
        // Suspended: no timer. Resumed at 100: slots up to 100 are not caught up.
        let mut e = Entry::new(job("u", true, runs(1_900_000_030, 3)));
        assert_eq!(e.next_timer(at(1_900_000_031), TimeDelta::zero()), None);
        let update = e.update(job("u", false, runs(1_900_000_030, 3)), at(1_900_000_100));
        assert_eq!(
            update,
            Update::Same {
                suspend_changed: true
            }
        );
        assert_eq!(
            e.next_timer(at(1_900_000_100), TimeDelta::zero()),
            Some(at(1_900_000_110))
        );
    }

    #[test]
    fn the_run_count_never_goes_backwards() {
        let mut e = Entry::new(job("u", false, runs(1_900_000_010, 5)));
        // A stale status from a reconcile that read the object before the last write.
        e.absorb(fired("u", runs(1_900_000_020, 6)));
        e.update(job("u", false, runs(1_900_000_010, 5)), at(1_900_000_021));
        assert_eq!(e.runs, runs(1_900_000_020, 6));
        // A broker counter that expired and restarted from a lower seed.
        e.absorb(fired("u", runs(1_900_000_030, 1)));
        assert_eq!(e.runs.total_runs, 6);
        assert_eq!(e.runs.last_slot, Some(at(1_900_000_030)));
    }

    #[test]
    fn failures_back_off_and_a_success_resets_them() {
        let mut e = Entry::new(job("u", false, RunState::default()));
        let now = at(1_900_000_005);
        let mut delays = Vec::new();
        for _ in 0..7 {
            let mut f = fired("u", RunState::default());
            f.error = Some(FireError::Broker(BrokerError::Connect("refused".into())));
            let events = e.absorb(f);
            assert_eq!(
                events
                    .iter()
                    .filter(|n| n.reason == "BrokerUnreachable")
                    .count(),
                usize::from(delays.is_empty()),
                "one event when the broker becomes unreachable"
            );
            let retry = e.timer_after_firing(now, TimeDelta::zero()).expect("retry");
            delays.push((retry - now).num_seconds());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        let events = e.absorb(fired("u", RunState::default()));
        assert_eq!(events[0].reason, "BrokerReachable");
        assert_eq!(
            e.timer_after_firing(now, TimeDelta::zero()),
            Some(at(1_900_000_010))
        );
    }
}
