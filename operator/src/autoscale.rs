//! Pure scaling decisions for WorkerPool autoscaling: load in, replicas out. No I/O, so every
//! rule is unit-tested; the controller feeds it queue depths read from Redis.
//!
//! Rules: desired = ceil(load / targetTasksPerReplica) clamped to [min, max]; up at once;
//! down only to the highest recommendation of the stabilization window (like the HPA), so a
//! short lull never kills workers; to zero only after `idle_before_scale_to_zero` without
//! any load; from zero to one as soon as anything waits.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The autoscaling settings of one pool, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_tasks_per_replica: u32,
    pub scale_down_stabilization: Duration,
    pub idle_before_scale_to_zero: Duration,
}

/// What the broker holds for the pool's queues right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Messages waiting in every priority key of every queue.
    pub waiting: u64,
    /// Messages workers have taken and not acked (running or prefetched).
    pub in_flight: u64,
}

impl Load {
    pub fn total(&self) -> u64 {
        self.waiting.saturating_add(self.in_flight)
    }
}

/// Memory of one pool between decisions.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct History {
    /// (when, recommended replicas) within the stabilization window.
    recommendations: VecDeque<(DateTime<Utc>, u32)>,
    /// Last time any load was seen.
    last_busy: Option<DateTime<Utc>>,
}

impl History {
    /// The history of a pool found running `replicas` when this process takes it over
    /// (restart, new leader): as if it had just recommended them and been busy, so neither
    /// the stabilization window nor the idle period is skipped.
    pub(crate) fn resumed(replicas: u32, now: DateTime<Utc>) -> Self {
        Self {
            recommendations: VecDeque::from([(now, replicas)]),
            last_busy: (replicas > 0).then_some(now),
        }
    }
}

/// Why the decision is bounded, for the `ScalingLimited` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    AtMin,
    AtMax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub desired: u32,
    /// The load asked for more than max or fewer than min replicas.
    pub limited: Option<Limit>,
}

/// Decides the replicas for `load` at `now`, updating `history`.
pub(crate) fn decide(
    policy: &Policy,
    load: Load,
    now: DateTime<Utc>,
    history: &mut History,
) -> Decision {
    let total = load.total();
    if total > 0 {
        history.last_busy = Some(now);
    }
    let target = u64::from(policy.target_tasks_per_replica.max(1));
    let raw = u32::try_from(total.div_ceil(target)).unwrap_or(u32::MAX);
    let idle_long_enough = match history.last_busy {
        None => true,
        Some(t) => {
            now.signed_duration_since(t).to_std().unwrap_or_default()
                >= policy.idle_before_scale_to_zero
        }
    };
    // Keep one warm worker while idle but not yet idle long enough to go to zero.
    let floor = if idle_long_enough {
        policy.min_replicas
    } else {
        policy.min_replicas.max(1)
    };
    let limited = if raw > policy.max_replicas {
        Some(Limit::AtMax)
    } else if raw < policy.min_replicas {
        Some(Limit::AtMin)
    } else {
        None
    };
    let recommended = raw.clamp(floor.min(policy.max_replicas), policy.max_replicas);

    let window = chrono::Duration::from_std(policy.scale_down_stabilization)
        .unwrap_or(chrono::Duration::MAX);
    history
        .recommendations
        .retain(|(t, _)| now.signed_duration_since(*t) < window);
    history.recommendations.push_back((now, recommended));
    // Scaling down follows the highest recommendation of the window; scaling up is immediate
    // because the newest recommendation is in the window too.
    let desired = history
        .recommendations
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(recommended);
    Decision { desired, limited }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min_replicas: 0,
            max_replicas: 10,
            target_tasks_per_replica: 4,
            scale_down_stabilization: Duration::from_secs(60),
            idle_before_scale_to_zero: Duration::from_secs(300),
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid")
    }

    fn load(waiting: u64, in_flight: u64) -> Load {
        Load { waiting, in_flight }
    }

    #[test]
    fn desired_is_the_ceiling_of_load_over_target() {
        let mut h = History::default();
        assert_eq!(decide(&policy(), load(9, 0), t(0), &mut h).desired, 3);
        let mut h = History::default();
        assert_eq!(decide(&policy(), load(8, 0), t(0), &mut h).desired, 2);
    }

    #[test]
    fn in_flight_tasks_count_so_busy_workers_keep_their_replicas() {
        let mut h = History::default();
        assert_eq!(decide(&policy(), load(0, 8), t(0), &mut h).desired, 2);
        assert_eq!(
            decide(&policy(), load(0, 8), t(120), &mut h).desired,
            2,
            "an empty list alone never scales in"
        );
    }

    #[test]
    fn bounds_clamp_and_are_reported() {
        let mut h = History::default();
        let d = decide(&policy(), load(1000, 0), t(0), &mut h);
        assert_eq!(
            d,
            Decision {
                desired: 10,
                limited: Some(Limit::AtMax)
            }
        );
        let p = Policy {
            min_replicas: 2,
            ..policy()
        };
        let mut h = History::default();
        let d = decide(&p, load(1, 0), t(0), &mut h);
        assert_eq!(
            d,
            Decision {
                desired: 2,
                limited: Some(Limit::AtMin)
            }
        );
    }

    #[test]
    fn scale_up_is_immediate_and_scale_down_waits_for_the_window() {
        let mut h = History::default();
        assert_eq!(decide(&policy(), load(40, 0), t(0), &mut h).desired, 10);
        assert_eq!(
            decide(&policy(), load(4, 0), t(30), &mut h).desired,
            10,
            "inside the window"
        );
        assert_eq!(decide(&policy(), load(4, 0), t(59), &mut h).desired, 10);
        assert_eq!(
            decide(&policy(), load(4, 0), t(61), &mut h).desired,
            1,
            "after the window"
        );
        assert_eq!(
            decide(&policy(), load(40, 0), t(62), &mut h).desired,
            10,
            "up again at once"
        );
    }

    #[test]
    fn scale_to_zero_only_after_the_idle_period_and_back_to_one_at_once() {
        let p = Policy {
            scale_down_stabilization: Duration::from_secs(0),
            ..policy()
        };
        let mut h = History::default();
        assert_eq!(decide(&p, load(3, 0), t(0), &mut h).desired, 1);
        assert_eq!(
            decide(&p, load(0, 0), t(10), &mut h).desired,
            1,
            "one warm worker while idle < 300 s"
        );
        assert_eq!(decide(&p, load(0, 0), t(299), &mut h).desired, 1);
        let d = decide(&p, load(0, 0), t(301), &mut h);
        assert_eq!(
            d,
            Decision {
                desired: 0,
                limited: None
            }
        );
        assert_eq!(
            decide(&p, load(1, 0), t(302), &mut h).desired,
            1,
            "0 -> 1 as soon as anything waits"
        );
    }

    #[test]
    fn a_resumed_pool_keeps_its_replicas_for_the_window_and_the_idle_period() {
        let mut h = History::resumed(6, t(0));
        assert_eq!(
            decide(&policy(), load(0, 0), t(1), &mut h).desired,
            6,
            "a new leader with an empty queue does not scale in at once"
        );
        assert_eq!(
            decide(&policy(), load(0, 0), t(61), &mut h).desired,
            1,
            "after the window: one warm worker, the idle period started at the takeover"
        );
        assert_eq!(decide(&policy(), load(0, 0), t(301), &mut h).desired, 0);
        let mut h = History::resumed(0, t(0));
        assert_eq!(
            decide(&policy(), load(0, 0), t(1), &mut h).desired,
            0,
            "a pool at zero stays there"
        );
    }

    #[test]
    fn a_pool_that_never_saw_load_may_start_at_zero() {
        let mut h = History::default();
        assert_eq!(decide(&policy(), load(0, 0), t(0), &mut h).desired, 0);
    }

    #[test]
    fn a_zero_target_is_treated_as_one_task_per_replica() {
        let p = Policy {
            target_tasks_per_replica: 0,
            ..policy()
        };
        let mut h = History::default();
        assert_eq!(decide(&p, load(3, 0), t(0), &mut h).desired, 3);
    }
}
