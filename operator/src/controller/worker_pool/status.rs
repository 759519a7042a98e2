//! WorkerPool status, computed from the broker resolution and the owned Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;

use super::autoscaler::Measurement;
use crate::api::worker_pool::{WorkerPool, WorkerPoolStatus};
use crate::autoscale::Limit;
use crate::controller::conditions::{Conditioned, Observed, merge, rolled_out};
use crate::controller::time::to_time;

pub(crate) const READY: &str = "Ready";
pub(crate) const BROKER_RESOLVED: &str = "BrokerResolved";
pub(crate) const SCALING_ACTIVE: &str = "ScalingActive";
pub(crate) const SCALING_LIMITED: &str = "ScalingLimited";

/// Status after the Deployment was applied; `autoscaling` is the autoscaler's latest
/// measurement for an autoscaled pool (None before its first reading).
pub(crate) fn observed(
    wp: &WorkerPool,
    deploy: &Deployment,
    autoscaling: Option<Option<&Measurement>>,
    now: Timestamp,
) -> WorkerPoolStatus {
    let want = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deploy.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    // The Deployment controller has seen the newest template and moved every pod to it.
    let rolled_out = rolled_out(
        deploy.metadata.generation,
        status.observed_generation,
        status.updated_replicas,
        want,
    );
    let ready_condition = if want == 0 {
        Observed::new(READY, true, "ScaledToZero", "no workers are wanted")
    } else if ready >= want && rolled_out {
        Observed::new(
            READY,
            true,
            "WorkersReady",
            format!("{ready}/{want} workers ready"),
        )
    } else if ready >= want {
        Observed::new(
            READY,
            true,
            "RollingOut",
            format!(
                "{ready}/{want} workers ready; a new revision is rolling out ({updated}/{want} updated)"
            ),
        )
    } else {
        Observed::new(
            READY,
            false,
            "WorkersNotReady",
            format!("{ready}/{want} workers ready"),
        )
    };
    let mut conditions = vec![
        Observed::new(BROKER_RESOLVED, true, "Resolved", "broker Secret found"),
        ready_condition,
    ];
    let mut s = WorkerPoolStatus {
        observed_generation: wp.metadata.generation,
        replicas: Some(status.replicas.unwrap_or(0)),
        ready_replicas: Some(ready),
        ..Default::default()
    };
    if let Some(m) = autoscaling {
        conditions.extend(scaling_conditions(m, want));
        if let Some(m) = m {
            s.waiting = Some(i64::try_from(m.load.waiting).unwrap_or(i64::MAX));
            s.in_flight = Some(i64::try_from(m.load.in_flight).unwrap_or(i64::MAX));
            s.desired_replicas = Some(i32::try_from(m.decision.desired).unwrap_or(i32::MAX));
            s.last_scale_time = m.last_scale_time.and_then(to_time);
        }
    }
    s.conditions = merge(wp.conditions(), conditions, wp.metadata.generation, now);
    s
}

fn scaling_conditions(m: Option<&Measurement>, replicas: i32) -> Vec<Observed> {
    let Some(m) = m else {
        return vec![Observed::new(
            SCALING_ACTIVE,
            false,
            "WaitingForFirstReading",
            "the backlog has not been read yet",
        )];
    };
    let active = match &m.error {
        Some(err) => Observed::new(
            SCALING_ACTIVE,
            false,
            "BrokerUnreachable",
            format!("holding {replicas} replicas: {err}"),
        ),
        None => Observed::new(
            SCALING_ACTIVE,
            true,
            "ValidMetric",
            format!("{} waiting, {} in flight", m.load.waiting, m.load.in_flight),
        ),
    };
    let limited = match m.decision.limited {
        Some(Limit::AtMax) => Observed::new(
            SCALING_LIMITED,
            true,
            "TooManyReplicas",
            "the backlog wants more than maxReplicas",
        ),
        Some(Limit::AtMin) => Observed::new(
            SCALING_LIMITED,
            true,
            "TooFewReplicas",
            "the backlog wants fewer than minReplicas",
        ),
        None => Observed::new(
            SCALING_LIMITED,
            false,
            "DesiredWithinRange",
            "the desired replicas are within min and max",
        ),
    };
    vec![active, limited]
}

/// The reason while the broker's RedisCache is being created or is not Ready yet.
pub(crate) const WAITING_FOR_BROKER: &str = "WaitingForBroker";

/// Status when the broker (or result backend) cannot be resolved: the Deployment is left as
/// it is, so running workers keep running.
pub(crate) fn broker_unresolved(
    wp: &WorkerPool,
    reason: &'static str,
    message: &str,
    now: Timestamp,
) -> WorkerPoolStatus {
    let old = wp.status.clone().unwrap_or_default();
    WorkerPoolStatus {
        observed_generation: wp.metadata.generation,
        conditions: merge(
            wp.conditions(),
            vec![
                Observed::new(BROKER_RESOLVED, false, reason, message),
                Observed::new(READY, false, reason, message),
            ],
            wp.metadata.generation,
            now,
        ),
        ..old
    }
}

/// Status when reconciling failed for another reason.
pub(crate) fn failed(
    wp: &WorkerPool,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> WorkerPoolStatus {
    let old = wp.status.clone().unwrap_or_default();
    let mut observed: Vec<Observed> = wp
        .conditions()
        .iter()
        .filter(|c| c.type_ == BROKER_RESOLVED)
        .map(|c| {
            // Carried over as it was: only a resolution changes it.
            let resolved = c.status == "True";
            let reason = if resolved {
                "Resolved"
            } else if c.reason == WAITING_FOR_BROKER {
                WAITING_FOR_BROKER
            } else {
                "BrokerNotFound"
            };
            Observed::new(BROKER_RESOLVED, resolved, reason, c.message.clone())
        })
        .collect();
    observed.push(Observed::new(READY, false, reason, message));
    WorkerPoolStatus {
        observed_generation: wp.metadata.generation,
        conditions: merge(wp.conditions(), observed, wp.metadata.generation, now),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::worker_pool::WorkerPoolSpec;
    use crate::controller::conditions::condition;

    #[test]
    fn a_failure_keeps_an_unresolved_broker_unresolved() {
        let mut wp = WorkerPool::new("p", WorkerPoolSpec::default());
        for reason in ["BrokerNotFound", WAITING_FOR_BROKER] {
            wp.status = Some(broker_unresolved(
                &wp,
                reason,
                "spec.broker.redisCache: RedisCache b not found",
                Timestamp::UNIX_EPOCH,
            ));
            let s = failed(&wp, "ApplyFailed", "boom".into(), Timestamp::UNIX_EPOCH);
            let c = condition(&s.conditions, BROKER_RESOLVED);
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reason));
            assert!(c.message.contains("not found"));
        }
    }
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn deploy(want: i32, ready: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(want),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                replicas: Some(want),
                ready_replicas: Some(ready),
                updated_replicas: Some(want),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_only_when_every_wanted_worker_is_ready() {
        let wp = WorkerPool::new("w", WorkerPoolSpec::default());
        let s = observed(&wp, &deploy(3, 2), None, Timestamp::UNIX_EPOCH);
        let ready = condition(&s.conditions, READY);
        assert_eq!(
            (ready.status.as_str(), ready.message.as_str()),
            ("False", "2/3 workers ready")
        );
        let s = observed(&wp, &deploy(3, 3), None, Timestamp::UNIX_EPOCH);
        assert!(crate::controller::conditions::is_true(&s.conditions, READY));
        assert!(crate::controller::conditions::is_true(
            &s.conditions,
            BROKER_RESOLVED
        ));
    }

    #[test]
    fn a_rollout_in_progress_is_named_while_the_old_workers_serve() {
        let wp = WorkerPool::new("w", WorkerPoolSpec::default());
        let mut d = deploy(3, 3);
        d.metadata.generation = Some(2);
        if let Some(st) = d.status.as_mut() {
            st.observed_generation = Some(2);
            st.updated_replicas = Some(1);
        }
        let reason = |d: &Deployment| {
            let s = observed(&wp, d, None, Timestamp::UNIX_EPOCH);
            let c = s.conditions.iter().find(|c| c.type_ == READY).cloned();
            c.map(|c| (c.status, c.reason, c.message))
        };
        assert_eq!(
            reason(&d),
            Some((
                "True".into(),
                "RollingOut".into(),
                "3/3 workers ready; a new revision is rolling out (1/3 updated)".into()
            ))
        );
        if let Some(st) = d.status.as_mut() {
            st.updated_replicas = Some(3);
            st.observed_generation = Some(1);
        }
        assert_eq!(
            reason(&d).map(|r| r.1),
            Some("RollingOut".into()),
            "the Deployment controller has not seen the new template yet"
        );
        if let Some(st) = d.status.as_mut() {
            st.observed_generation = Some(2);
        }
        assert_eq!(reason(&d).map(|r| r.1), Some("WorkersReady".into()));
    }

    #[test]
    fn autoscaled_status_reports_load_desired_and_limits() {
        use crate::autoscale::{Decision, Load};
        let wp = WorkerPool::new("w", WorkerPoolSpec::default());
        let m = Measurement {
            load: Load {
                waiting: 40,
                in_flight: 3,
            },
            decision: Decision {
                desired: 10,
                limited: Some(Limit::AtMax),
            },
            error: None,
            last_scale_time: None,
        };
        let s = observed(&wp, &deploy(10, 10), Some(Some(&m)), Timestamp::UNIX_EPOCH);
        assert_eq!(
            (s.waiting, s.in_flight, s.desired_replicas),
            (Some(40), Some(3), Some(10))
        );
        let limited = condition(&s.conditions, SCALING_LIMITED);
        assert_eq!(
            (limited.status.as_str(), limited.reason.as_str()),
            ("True", "TooManyReplicas")
        );
        let unreachable = Measurement {
            error: Some("cannot connect".into()),
            ..m
        };
        let s = observed(
            &wp,
            &deploy(10, 10),
            Some(Some(&unreachable)),
            Timestamp::UNIX_EPOCH,
        );
        let active = condition(&s.conditions, SCALING_ACTIVE);
        assert_eq!(
            (active.status.as_str(), active.reason.as_str()),
            ("False", "BrokerUnreachable")
        );
        assert_eq!(active.message, "holding 10 replicas: cannot connect");
    }

    #[test]
    fn unresolved_broker_sets_both_conditions_false_with_the_reason() {
        let wp = WorkerPool::new("w", WorkerPoolSpec::default());
        let s = broker_unresolved(
            &wp,
            "BrokerNotFound",
            "spec.broker.redisCache: RedisCache x not found",
            Timestamp::UNIX_EPOCH,
        );
        for c in &s.conditions {
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "BrokerNotFound")
            );
            assert_eq!(c.message, "spec.broker.redisCache: RedisCache x not found");
        }
    }
}
