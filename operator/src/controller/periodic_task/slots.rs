//! Which slots are due, what a missed slot becomes, and how long a slot's dedupe key lives.
//! Pure functions of the plan, the last slot handled and the clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::plan::Plan;
use crate::api::periodic_task::{MissedRunPolicy, RUN_ALL_CAP};
use crate::schedule::{Schedule, ScheduleKind};

/// Under `Skip`, a slot still runs when it is at most this late (a restart or a brief
/// broker outage right at the slot is not a "missed" run).
pub(crate) const SKIP_TOLERANCE: TimeDelta = TimeDelta::seconds(5);
/// Shortest and longest life of a dedupe key.
pub(crate) const MIN_DEDUPE_TTL: Duration = Duration::from_secs(10 * 60);
pub(crate) const MAX_DEDUPE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Margin on top of the catch-up window (operator restart, clock skew between replicas).
const TTL_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The slots to push now, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    pub slots: Vec<DateTime<Utc>>,
    /// Whether due slots were dropped by the policy or the deadline.
    pub skipped: bool,
    /// The newest slot at or before now: the task's "last handled" slot afterwards.
    pub newest: Option<DateTime<Utc>>,
}

/// Slots in `(last, now]` (after the plan's floor, before its end), filtered by the missed
/// run policy and the starting deadline.
pub(crate) fn due(plan: &Plan, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Due {
    let keep = match plan.policy {
        MissedRunPolicy::RunAll => RUN_ALL_CAP,
        MissedRunPolicy::RunOnce | MissedRunPolicy::Skip => 1,
    };
    let mut cursor = last;
    // Slots older than the deadline can never run: start the search there.
    if let Some(deadline) = plan.starting_deadline
        && let Some(oldest) = now.checked_sub_signed(deadline)
    {
        let skip_to = oldest - TimeDelta::nanoseconds(1);
        if cursor.is_none_or(|c| c < skip_to) && plan.floor < skip_to {
            cursor = Some(skip_to);
        }
    }
    // An interval is arithmetic: after a long outage jump to the last `keep` slots.
    let mut skipped = cursor != last && plan.next_slot(last).is_some_and(|s| s <= now);
    if let ScheduleKind::Every(every) = plan.schedule.kind() {
        let period = every.interval().as_time_delta();
        if let Some(window) = period.checked_mul(i32::try_from(keep + 1).unwrap_or(i32::MAX))
            && let Some(jump) = now.checked_sub_signed(window)
            && cursor.is_none_or(|c| c < jump)
            && plan.floor < jump
        {
            skipped |= plan.next_slot(cursor).is_some_and(|s| s <= jump);
            cursor = Some(jump);
        }
    }
    let mut found: std::collections::VecDeque<DateTime<Utc>> = Default::default();
    while let Some(slot) = plan.next_slot(cursor) {
        if slot > now {
            break;
        }
        if found.len() == keep {
            found.pop_front();
            skipped = true;
        }
        found.push_back(slot);
        cursor = Some(slot);
    }
    let newest = found.back().copied();
    if plan.policy == MissedRunPolicy::Skip
        && let Some(n) = newest
        && now - n > SKIP_TOLERANCE
    {
        return Due {
            slots: vec![],
            skipped: true,
            newest,
        };
    }
    Due {
        slots: found.into(),
        skipped,
        newest,
    }
}

/// The longest gap between the next few slots: the period of an interval, of a crontab or
/// of a cron (approximately, for irregular ones).
pub(crate) fn period(schedule: &Schedule, now: DateTime<Utc>) -> Duration {
    if let ScheduleKind::Every(every) = schedule.kind() {
        return Duration::from_secs(every.interval().seconds().unsigned_abs());
    }
    let slots: Vec<DateTime<Utc>> = schedule
        .upcoming(now)
        .take(5)
        .map(|s| s.with_timezone(&Utc))
        .collect();
    slots
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .max()
        .unwrap_or(MAX_DEDUPE_TTL)
}

/// How long a slot's dedupe key lives. It must outlive every moment the same slot could be
/// considered again: the catch-up window (one period, or `RUN_ALL_CAP` periods under
/// `RunAll`, shortened by a starting deadline) plus a margin, and at least two periods.
/// Clamped to 10 minutes .. 7 days, so an every-second task keeps ~600 keys, not millions.
pub(crate) fn dedupe_ttl(
    schedule: &Schedule,
    policy: MissedRunPolicy,
    deadline: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Duration {
    let period = period(schedule, now);
    let periods = match policy {
        MissedRunPolicy::RunAll => RUN_ALL_CAP as u32,
        _ => 1,
    };
    let mut window = period.saturating_mul(periods);
    if let Some(d) = deadline.and_then(|d| d.to_std().ok()) {
        window = window.min(d.max(period));
    }
    (window + TTL_MARGIN)
        .max(period.saturating_mul(2))
        .clamp(MIN_DEDUPE_TTL, MAX_DEDUPE_TTL)
}

#[cfg(test)]
mod tests {
    use super::super::plan::build;
    use super::*;
    use crate::api::periodic_task::PeriodicTask;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const T0: i64 = 1_900_000_000;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("ts")
    }

    fn plan(extra: &str) -> Plan {
        let yaml =
            format!("{{task: a.b, schedule: {{every: 10s}}, broker: {{redisCache: r}}{extra}}}");
        let mut pt = PeriodicTask::new("t", serde_yaml::from_str(&yaml).expect("spec"));
        pt.metadata.uid = Some("u".into());
        pt.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(T0).expect("ts"),
        ));
        build(&pt, at(T0)).expect("plan")
    }

    #[test]
    fn on_time_a_single_slot_is_due() {
        let p = plan("");
        let d = due(&p, Some(at(T0 + 10)), at(T0 + 20));
        assert_eq!(d.slots, vec![at(T0 + 20)]);
        assert!(!d.skipped);
        assert!(due(&p, Some(at(T0 + 20)), at(T0 + 29)).slots.is_empty());
    }

    #[test]
    fn run_once_collapses_missed_slots_into_the_latest() {
        let p = plan("");
        let d = due(&p, Some(at(T0 + 10)), at(T0 + 65));
        assert_eq!(d.slots, vec![at(T0 + 60)]);
        assert!(d.skipped);
        assert_eq!(d.newest, Some(at(T0 + 60)));
    }

    #[test]
    fn run_all_runs_every_missed_slot_up_to_the_cap() {
        let p = plan(", missedRunPolicy: RunAll");
        let d = due(&p, Some(at(T0 + 10)), at(T0 + 45));
        assert_eq!(d.slots, vec![at(T0 + 20), at(T0 + 30), at(T0 + 40)]);
        assert!(!d.skipped);
        let d = due(&p, Some(at(T0 + 10)), at(T0 + 10 + 10 * 500));
        assert_eq!(d.slots.len(), RUN_ALL_CAP);
        assert!(d.skipped);
        assert_eq!(d.slots.last(), Some(&at(T0 + 10 + 10 * 500)));
    }

    #[test]
    fn skip_runs_only_a_slot_that_is_barely_late() {
        let p = plan(", missedRunPolicy: Skip");
        assert_eq!(
            due(&p, Some(at(T0 + 10)), at(T0 + 22)).slots,
            vec![at(T0 + 20)]
        );
        let d = due(&p, Some(at(T0 + 10)), at(T0 + 46));
        assert!(d.slots.is_empty());
        assert_eq!(d.newest, Some(at(T0 + 40)));
    }

    #[test]
    fn the_starting_deadline_drops_old_slots() {
        let p = plan(", missedRunPolicy: RunAll, startingDeadlineSeconds: 25");
        let d = due(&p, Some(at(T0 + 10)), at(T0 + 100));
        assert_eq!(d.slots, vec![at(T0 + 80), at(T0 + 90), at(T0 + 100)]);
        assert!(d.skipped);
    }

    #[test]
    fn a_never_run_task_starts_after_creation() {
        let p = plan("");
        assert_eq!(due(&p, None, at(T0 + 15)).slots, vec![at(T0 + 10)]);
        assert!(due(&p, None, at(T0 + 5)).slots.is_empty());
    }

    #[test]
    fn dedupe_ttl_covers_the_catch_up_window() {
        let every_ten = plan("").schedule;
        assert_eq!(
            dedupe_ttl(&every_ten, MissedRunPolicy::RunOnce, None, at(T0)),
            Duration::from_secs(10 + 600)
        );
        assert_eq!(
            dedupe_ttl(&every_ten, MissedRunPolicy::RunAll, None, at(T0)),
            Duration::from_secs(100 * 10 + 600)
        );
        let p = plan("");
        let daily = crate::schedule::Schedule::from_spec(
            &crate::schedule::ScheduleSpec {
                cron: Some("@daily"),
                ..Default::default()
            },
            None,
            p.floor,
        )
        .expect("cron");
        assert_eq!(
            dedupe_ttl(&daily, MissedRunPolicy::RunOnce, None, at(T0)),
            Duration::from_secs(2 * 86400)
        );
        assert_eq!(
            dedupe_ttl(&daily, MissedRunPolicy::RunAll, None, at(T0)),
            MAX_DEDUPE_TTL
        );
    }
}
