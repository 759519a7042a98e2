//! What has run of one PeriodicTask, as the status, the engine's memory and a firing each
//! know it; merged in one place so no view can make another go backwards.

use chrono::{DateTime, Utc};

use crate::api::periodic_task::PeriodicTaskStatus;
use crate::controller::time::{from_time, to_time};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunState {
    /// The newest slot handled: pushed, found pushed already, or dropped by the policy.
    pub last_slot: Option<DateTime<Utc>>,
    /// Pushes counted by the broker.
    pub total_runs: i64,
    /// Slots skipped while the previous run had not finished.
    pub skipped_runs: i64,
    pub last_task_id: Option<String>,
    /// The last value of the run-now annotation acted on.
    pub last_run_now: Option<String>,
}

impl RunState {
    pub fn from_status(status: &PeriodicTaskStatus) -> Self {
        Self {
            last_slot: status.last_schedule_time.as_ref().and_then(from_time),
            total_runs: status.total_runs.unwrap_or(0),
            skipped_runs: status.skipped_runs.unwrap_or(0),
            last_task_id: status.last_task_id.clone(),
            last_run_now: status.last_run_now.clone(),
        }
    }

    /// Two views of the same task's runs as one: slot and count never go back; the task id
    /// and run-now value are those of the view with the later slot, `newer` on a tie (the
    /// view taken after the other), each falling back to the other view's when unset.
    pub fn merge(self, newer: RunState) -> RunState {
        let (old, new) = if self.last_slot > newer.last_slot {
            (newer, self)
        } else {
            (self, newer)
        };
        RunState {
            last_slot: new.last_slot,
            total_runs: old.total_runs.max(new.total_runs),
            skipped_runs: old.skipped_runs.max(new.skipped_runs),
            last_task_id: new.last_task_id.or(old.last_task_id),
            last_run_now: new.last_run_now.or(old.last_run_now),
        }
    }

    /// Writes this state into a status.
    pub fn write_into(&self, status: &mut PeriodicTaskStatus) {
        status.last_schedule_time = self.last_slot.and_then(to_time);
        status.total_runs = Some(self.total_runs);
        status.skipped_runs = (self.skipped_runs > 0).then_some(self.skipped_runs);
        status.last_task_id = self.last_task_id.clone();
        status.last_run_now = self.last_run_now.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(s, 0)
    }

    fn state(slot: i64, runs: i64, id: &str) -> RunState {
        RunState {
            last_slot: at(slot),
            total_runs: runs,
            skipped_runs: 0,
            last_task_id: Some(id.into()),
            last_run_now: None,
        }
    }

    #[test]
    fn the_run_count_and_the_slot_never_go_backwards() {
        let memory = state(200, 9, "b");
        let stale_status = state(100, 4, "a");
        let merged = memory.clone().merge(stale_status);
        assert_eq!(merged, memory, "an older view changes nothing");
        // A newer slot with a lower count (a counter that expired) keeps the count.
        let merged = state(100, 9, "a").merge(state(200, 3, "b"));
        assert_eq!(merged, state(200, 9, "b"));
    }

    #[test]
    fn the_later_view_names_the_last_task_and_the_newer_wins_a_tie() {
        // Another replica pushed a later slot: its task id wins over memory's.
        let merged = state(100, 1, "mine").merge(state(200, 2, "theirs"));
        assert_eq!(merged.last_task_id.as_deref(), Some("theirs"));
        // A run-now push handles no slot: same slot, the newer view's id and value win.
        let mut run_now = state(100, 2, "run-now-id");
        run_now.last_run_now = Some("1".into());
        let merged = state(100, 1, "slot-id").merge(run_now);
        assert_eq!(merged.last_task_id.as_deref(), Some("run-now-id"));
        assert_eq!(merged.last_run_now.as_deref(), Some("1"));
        // Unset fields fall back to the other view.
        let mut status = state(50, 1, "old");
        status.last_run_now = Some("7".into());
        let merged = status.merge(RunState {
            last_slot: at(60),
            ..RunState::default()
        });
        assert_eq!(merged.last_task_id.as_deref(), Some("old"));
        assert_eq!(merged.last_run_now.as_deref(), Some("7"));
    }

    #[test]
    fn status_round_trips_with_microseconds() {
        let t = DateTime::from_timestamp(1_900_000_000, 123_456_000).expect("t");
        let mut status = PeriodicTaskStatus::default();
        let s = RunState {
            last_slot: Some(t),
            total_runs: 3,
            skipped_runs: 2,
            last_task_id: Some("id".into()),
            last_run_now: Some("x".into()),
        };
        s.write_into(&mut status);
        assert_eq!(RunState::from_status(&status), s);
    }
}
