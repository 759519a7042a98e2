//! The last runs of one PeriodicTask, newest first, and how each ended, as its workers'
//! result backend told. Pure: what a push and each read of the backend change.

use chrono::{DateTime, Utc};

use crate::api::periodic_task::{
    DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, PeriodicTaskRun, PeriodicTaskSpec,
    PeriodicTaskStatus, TaskState,
};
use crate::celery::result::ResultMeta;
use crate::controller::time::{from_time, to_time};

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RunHistory {
    runs: Vec<PeriodicTaskRun>,
}

/// How many runs the spec keeps.
pub(crate) fn limit(spec: &PeriodicTaskSpec) -> usize {
    spec.history_limit
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .clamp(1, MAX_HISTORY_LIMIT)
}

impl RunHistory {
    pub(crate) fn from_status(status: Option<&PeriodicTaskStatus>) -> Self {
        Self {
            runs: status.map(|s| s.recent_runs.clone()).unwrap_or_default(),
        }
    }

    pub(crate) fn runs(&self) -> &[PeriodicTaskRun] {
        &self.runs
    }

    /// Records a pushed run as PENDING, in slot order; false when it is known already or
    /// older than every run kept.
    pub(crate) fn pushed(&mut self, task_id: &str, due: DateTime<Utc>, limit: usize) -> bool {
        self.insert(task_id, due, TaskState::Pending, None, limit)
    }

    /// Records a slot that was not pushed, with why.
    pub(crate) fn skipped(
        &mut self,
        task_id: &str,
        due: DateTime<Utc>,
        reason: String,
        limit: usize,
    ) -> bool {
        self.insert(task_id, due, TaskState::Skipped, Some(reason), limit)
    }

    fn insert(
        &mut self,
        task_id: &str,
        due: DateTime<Utc>,
        state: TaskState,
        reason: Option<String>,
        limit: usize,
    ) -> bool {
        if self.runs.iter().any(|r| r.task_id == task_id) {
            return false;
        }
        let Some(schedule_time) = to_time(due) else {
            return false;
        };
        let at = self
            .runs
            .iter()
            .position(|r| from_time(&r.schedule_time).is_none_or(|t| t <= due))
            .unwrap_or(self.runs.len());
        if at >= limit {
            return false;
        }
        self.runs.insert(
            at,
            PeriodicTaskRun {
                task_id: task_id.to_string(),
                schedule_time,
                state,
                finish_time: None,
                duration: None,
                exception: None,
                retries: None,
                reason,
            },
        );
        self.runs.truncate(limit);
        true
    }

    /// Takes what the backend said of a run in (`meta` None: nothing was written within the
    /// wait, so UNKNOWN). Returns the run when its state changed; a final state is kept.
    pub(crate) fn observe(
        &mut self,
        task_id: &str,
        meta: Option<&ResultMeta>,
    ) -> Option<&PeriodicTaskRun> {
        let run = self.runs.iter_mut().find(|r| r.task_id == task_id)?;
        // A requested revoke is the one final state a worker may still overwrite.
        if run.state.is_final() && run.state != TaskState::Revoked {
            return None;
        }
        let state = meta.map_or(TaskState::Unknown, |m| m.state);
        let before = run.clone();
        run.state = state;
        run.exception = meta.and_then(|m| m.exception.clone());
        run.retries = meta.and_then(|m| m.retries).or(run.retries);
        run.finish_time = meta.and_then(|m| m.date_done).and_then(to_time);
        run.duration = match (
            from_time(&run.schedule_time),
            meta.and_then(|m| m.date_done),
        ) {
            (Some(from), Some(done)) if state.is_final() => Some(duration_text(done - from)),
            _ => None,
        };
        (*run != before).then_some(&*run)
    }

    /// The runs the backend has not told the end of, with their slots.
    pub(crate) fn unfinished(&self) -> impl Iterator<Item = (&str, DateTime<Utc>)> {
        self.runs
            .iter()
            .filter(|r| !r.state.is_final())
            .filter_map(|r| Some((r.task_id.as_str(), from_time(&r.schedule_time)?)))
    }

    /// The newest run that ran to an end (a skipped slot did not run).
    pub(crate) fn last_finished(&self) -> Option<&PeriodicTaskRun> {
        self.runs
            .iter()
            .find(|r| r.state.is_final() && r.state != TaskState::Skipped)
    }

    pub(crate) fn truncate(&mut self, limit: usize) {
        self.runs.truncate(limit);
    }
}

/// The run for the `Result` column: `SUCCESS 0.42s`, `FAILURE ValueError`, `PENDING`.
pub(crate) fn summary(run: &PeriodicTaskRun) -> String {
    let exception_type = run
        .exception
        .as_deref()
        .map(|e| e.split(':').next().unwrap_or(e));
    match (run.state, &run.duration, exception_type) {
        (TaskState::Success, Some(d), _) => format!("SUCCESS {d}"),
        (TaskState::Failure | TaskState::Retry, _, Some(t)) => {
            format!("{} {t}", run.state.as_str())
        }
        (state, _, _) => state.as_str().to_string(),
    }
}

/// `0.42s`, `12.3s`, `4m05s`, `2h10m`: short, for a column.
fn duration_text(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    let secs = ms as f64 / 1000.0;
    match ms {
        0..10_000 => format!("{secs:.2}s"),
        10_000..60_000 => format!("{secs:.1}s"),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_900_000_000_000 + ms).expect("ts")
    }

    fn meta(state: TaskState, done_ms: Option<i64>, exception: Option<&str>) -> ResultMeta {
        ResultMeta {
            date_done: done_ms.map(at),
            exception: exception.map(str::to_string),
            ..ResultMeta::of(state)
        }
    }

    fn ids(h: &RunHistory) -> Vec<&str> {
        h.runs().iter().map(|r| r.task_id.as_str()).collect()
    }

    #[test]
    fn a_skipped_slot_is_recorded_with_its_reason_but_is_not_the_last_finished_run() {
        let mut h = RunHistory::default();
        h.pushed("a", at(0), 5);
        h.observe("a", Some(&meta(TaskState::Success, Some(500), None)));
        h.pushed("b", at(1000), 5);
        assert!(h.skipped("c", at(2000), "b is STARTED".into(), 5));
        assert_eq!(ids(&h), ["c", "b", "a"]);
        assert_eq!(h.runs()[0].state, TaskState::Skipped);
        assert_eq!(h.runs()[0].reason.as_deref(), Some("b is STARTED"));
        assert_eq!(summary(&h.runs()[0]), "SKIPPED");
        assert_eq!(h.last_finished().map(|r| r.task_id.as_str()), Some("a"));
        let unfinished: Vec<&str> = h.unfinished().map(|(id, _)| id).collect();
        assert_eq!(
            unfinished,
            ["b"],
            "a skipped slot is never read from the backend"
        );
    }

    #[test]
    fn runs_are_kept_newest_first_up_to_the_limit_and_each_once() {
        let mut h = RunHistory::default();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            assert!(h.pushed(id, at(i as i64 * 1000), 2));
        }
        assert_eq!(ids(&h), ["c", "b"]);
        assert!(!h.pushed("c", at(2000), 2), "a run is recorded once");
        // A catch-up run older than every kept one is not worth a place.
        assert!(!h.pushed("old", at(-5000), 2));
        // One between them (another replica pushed it) goes in its place.
        let mut h = RunHistory::default();
        h.pushed("a", at(0), 5);
        h.pushed("c", at(2000), 5);
        h.pushed("b", at(1000), 5);
        assert_eq!(ids(&h), ["c", "b", "a"]);
    }

    #[test]
    fn a_run_moves_through_retry_to_its_final_state_which_nothing_changes() {
        let mut h = RunHistory::default();
        h.pushed("r", at(0), 5);
        assert_eq!(h.unfinished().count(), 1);
        let retry = meta(TaskState::Retry, None, Some("ConnectionError: smtp down"));
        let run = h.observe("r", Some(&retry)).expect("changed");
        assert_eq!(summary(run), "RETRY ConnectionError");
        assert!(
            h.observe("r", Some(&retry)).is_none(),
            "the same state again"
        );
        let failure = meta(
            TaskState::Failure,
            Some(31_500),
            Some("ConnectionError: smtp down"),
        );
        let run = h.observe("r", Some(&failure)).expect("changed").clone();
        assert_eq!(run.duration.as_deref(), Some("31.5s"));
        assert_eq!(summary(&run), "FAILURE ConnectionError");
        assert_eq!(h.unfinished().count(), 0);
        // A late read (another replica, a stale value) never reopens a final run.
        let ok = meta(TaskState::Success, Some(40_000), None);
        assert!(h.observe("r", Some(&ok)).is_none());
        assert_eq!(h.last_finished(), Some(&run));
    }

    #[test]
    fn nothing_written_within_the_wait_is_unknown_and_success_shows_its_duration() {
        let mut h = RunHistory::default();
        h.pushed("lost", at(0), 5);
        h.pushed("ok", at(60_000), 5);
        let run = h.observe("lost", None).expect("changed");
        assert_eq!(
            (run.state, summary(run).as_str()),
            (TaskState::Unknown, "UNKNOWN")
        );
        let run = h
            .observe("ok", Some(&meta(TaskState::Success, Some(60_420), None)))
            .expect("changed");
        assert_eq!(summary(run), "SUCCESS 0.42s");
        assert!(
            h.observe("gone", None).is_none(),
            "an id not kept is ignored"
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        let d = |ms| duration_text(chrono::TimeDelta::milliseconds(ms));
        assert_eq!(
            [d(-5), d(420), d(12_345), d(245_000), d(7_800_000)],
            ["0.00s", "0.42s", "12.3s", "4m05s", "2h10m"]
        );
    }
}
