//! WorkerPool status, computed from the broker resolution and the owned Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::api::worker_pool::{WorkerPool, WorkerPoolStatus};
use crate::controller::conditions::{Observed, merge};

pub const READY: &str = "Ready";
pub const BROKER_RESOLVED: &str = "BrokerResolved";

fn previous(wp: &WorkerPool) -> &[Condition] {
    wp.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[])
}

/// Status after the Deployment was applied.
pub fn observed(wp: &WorkerPool, deploy: &Deployment, now: Timestamp) -> WorkerPoolStatus {
    let want = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deploy.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let ready_condition = if want == 0 {
        Observed::new(READY, true, "ScaledToZero", "no workers are wanted")
    } else if ready >= want {
        Observed::new(
            READY,
            true,
            "WorkersReady",
            format!("{ready}/{want} workers ready"),
        )
    } else {
        Observed::new(
            READY,
            false,
            "WorkersNotReady",
            format!("{ready}/{want} workers ready"),
        )
    };
    WorkerPoolStatus {
        observed_generation: wp.metadata.generation,
        replicas: Some(status.replicas.unwrap_or(0)),
        ready_replicas: Some(ready),
        conditions: merge(
            previous(wp),
            vec![
                Observed::new(BROKER_RESOLVED, true, "Resolved", "broker Secret found"),
                ready_condition,
            ],
            wp.metadata.generation,
            now,
        ),
    }
}

/// Status when the broker (or result backend) cannot be resolved: the Deployment is left as
/// it is, so running workers keep running.
pub fn broker_unresolved(wp: &WorkerPool, message: &str, now: Timestamp) -> WorkerPoolStatus {
    let old = wp.status.clone().unwrap_or_default();
    WorkerPoolStatus {
        observed_generation: wp.metadata.generation,
        conditions: merge(
            previous(wp),
            vec![
                Observed::new(BROKER_RESOLVED, false, "BrokerNotFound", message),
                Observed::new(READY, false, "BrokerNotFound", message),
            ],
            wp.metadata.generation,
            now,
        ),
        ..old
    }
}

/// Status when reconciling failed for another reason.
pub fn failed(
    wp: &WorkerPool,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> WorkerPoolStatus {
    let old = wp.status.clone().unwrap_or_default();
    let mut observed: Vec<Observed> = previous(wp)
        .iter()
        .filter(|c| c.type_ == BROKER_RESOLVED)
        .map(|c| {
            Observed::new(
                BROKER_RESOLVED,
                c.status == "True",
                "Resolved",
                c.message.clone(),
            )
        })
        .collect();
    observed.push(Observed::new(READY, false, reason, message));
    WorkerPoolStatus {
        observed_generation: wp.metadata.generation,
        conditions: merge(previous(wp), observed, wp.metadata.generation, now),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::worker_pool::WorkerPoolSpec;
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
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_only_when_every_wanted_worker_is_ready() {
        let wp = WorkerPool::new("w", WorkerPoolSpec::default());
        let s = observed(&wp, &deploy(3, 2), Timestamp::UNIX_EPOCH);
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.message.as_str()),
            ("False", "2/3 workers ready")
        );
        let s = observed(&wp, &deploy(3, 3), Timestamp::UNIX_EPOCH);
        assert!(crate::controller::conditions::is_true(&s.conditions, READY));
        assert!(crate::controller::conditions::is_true(
            &s.conditions,
            BROKER_RESOLVED
        ));
    }

    #[test]
    fn unresolved_broker_sets_both_conditions_false_with_the_reason() {
        let wp = WorkerPool::new("w", WorkerPoolSpec::default());
        let s = broker_unresolved(
            &wp,
            "spec.broker.redisCache: RedisCache x not found",
            Timestamp::UNIX_EPOCH,
        );
        for c in &s.conditions {
            assert_eq!(c.status, "False");
            assert_eq!(c.message, "spec.broker.redisCache: RedisCache x not found");
        }
    }
}
