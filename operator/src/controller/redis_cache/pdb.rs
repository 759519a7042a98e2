//! The PodDisruptionBudgets of the Redis pods and, with replication, of the Sentinels.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::redis_cache::Purpose;
use crate::controller::labels::OwnedBy;

/// A single broker pod blocks voluntary evictions (a drain waits for an operator's decision,
/// because losing the broker stalls every worker); a cache may be evicted, it refills
/// itself. A replicated set (and its Sentinels, `replicated` too) loses one pod at a time:
/// a drain then moves a replica or, for the primary, costs one failover.
pub(crate) fn build(
    owner: &OwnedBy,
    name: String,
    purpose: Purpose,
    replicated: bool,
) -> PodDisruptionBudget {
    let (min_available, max_unavailable) = match (purpose, replicated) {
        (Purpose::Broker, false) => (Some(IntOrString::Int(1)), None),
        (Purpose::Cache, _) | (_, true) => (None, Some(IntOrString::Int(1))),
    };
    PodDisruptionBudget {
        metadata: owner.meta(name),
        spec: Some(PodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
            selector: Some(LabelSelector {
                match_labels: Some(owner.selector.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_blocks_evictions_cache_allows_them() {
        let b = build(&OwnedBy::default(), "b".into(), Purpose::Broker, false);
        assert_eq!(
            b.spec.as_ref().and_then(|s| s.min_available.clone()),
            Some(IntOrString::Int(1))
        );
        let c = build(&OwnedBy::default(), "c".into(), Purpose::Cache, false);
        assert_eq!(
            c.spec.as_ref().and_then(|s| s.max_unavailable.clone()),
            Some(IntOrString::Int(1))
        );
        // Three pods of a replicated broker: a drain may take one, never two.
        let r = build(&OwnedBy::default(), "r".into(), Purpose::Broker, true);
        let spec = r.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
    }
}
