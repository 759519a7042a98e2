//! With replication the operator rolls the Redis pods itself (the StatefulSet is `OnDelete`):
//! replicas first, one at a time, each back and in sync before the next; then one controlled
//! failover, after which the old primary is a replica and is replaced like the others. The
//! StatefulSet's own order (highest ordinal first) would restart a primary that is not pod 0
//! in the middle and fail over twice.

use k8s_openapi::api::core::v1::Pod;

/// The label the StatefulSet controller puts the pod's revision in.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Whether the pod passes its readiness probe.
pub(crate) fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What the roll does next.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Every pod runs the StatefulSet's current revision.
    Done,
    /// Nothing may move now (a pod missing, not ready, or replicas not in sync).
    Wait,
    /// Replace this replica.
    Replace(String),
    /// Only the primary is left: promote an updated replica.
    FailOver,
}

/// The next step for `pods` of a set of `want` pods whose current revision is `revision`;
/// `primary` is the pod the Sentinels name, `in_sync` the replicas they see in sync.
pub(crate) fn next(pods: &[Pod], want: i32, revision: &str, primary: &str, in_sync: usize) -> Step {
    let outdated: Vec<&str> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL))
                .is_none_or(|r| r != revision)
        })
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    if outdated.is_empty() {
        return Step::Done;
    }
    let all_up = pods.len() == usize::try_from(want).unwrap_or(0)
        && pods
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p));
    if !all_up || in_sync + 1 < pods.len() {
        return Step::Wait;
    }
    match outdated.iter().find(|p| **p != primary) {
        Some(replica) => Step::Replace((*replica).to_string()),
        None => Step::FailOver,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, revision: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(REVISION_LABEL.into(), revision.into())])),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn replicas_roll_first_one_at_a_time_then_one_failover_then_the_old_primary() {
        // b-1 is the primary; the StatefulSet's own order would be b-2, b-1, b-0.
        let mut pods = vec![
            pod("b-0", "old", true),
            pod("b-1", "old", true),
            pod("b-2", "old", true),
        ];
        assert_eq!(next(&pods, 3, "new", "b-1", 2), Step::Replace("b-0".into()));
        pods[0] = pod("b-0", "new", false);
        assert_eq!(
            next(&pods, 3, "new", "b-1", 1),
            Step::Wait,
            "back, not ready"
        );
        pods[0] = pod("b-0", "new", true);
        assert_eq!(
            next(&pods, 3, "new", "b-1", 1),
            Step::Wait,
            "ready, not in sync"
        );
        assert_eq!(next(&pods, 3, "new", "b-1", 2), Step::Replace("b-2".into()));
        pods[2] = pod("b-2", "new", true);
        assert_eq!(next(&pods, 3, "new", "b-1", 2), Step::FailOver);
        // The Sentinels promoted b-0: the old primary is now a replica like the others.
        assert_eq!(next(&pods, 3, "new", "b-0", 2), Step::Replace("b-1".into()));
        pods[1] = pod("b-1", "new", true);
        assert_eq!(next(&pods, 3, "new", "b-0", 2), Step::Done);
    }

    #[test]
    fn a_missing_pod_holds_the_roll() {
        let pods = vec![pod("b-0", "old", true), pod("b-1", "old", true)];
        assert_eq!(next(&pods, 3, "new", "b-0", 1), Step::Wait);
        assert_eq!(
            next(&pods, 2, "old", "b-0", 1),
            Step::Done,
            "nothing to roll"
        );
    }
}
