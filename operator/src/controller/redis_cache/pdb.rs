//! The PodDisruptionBudget of the Redis pod.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::redis_cache::Purpose;
use crate::controller::labels::OwnedBy;

/// A broker blocks voluntary evictions (a drain waits for an operator's decision, because
/// losing the broker stalls every worker); a cache may be evicted, it refills itself.
pub(crate) fn build(owner: &OwnedBy, purpose: Purpose) -> PodDisruptionBudget {
    let (min_available, max_unavailable) = match purpose {
        Purpose::Broker => (Some(IntOrString::Int(1)), None),
        Purpose::Cache => (None, Some(IntOrString::Int(1))),
    };
    PodDisruptionBudget {
        metadata: owner.meta(owner.name.clone()),
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
        let b = build(&OwnedBy::default(), Purpose::Broker);
        assert_eq!(
            b.spec.as_ref().and_then(|s| s.min_available.clone()),
            Some(IntOrString::Int(1))
        );
        let c = build(&OwnedBy::default(), Purpose::Cache);
        assert_eq!(
            c.spec.as_ref().and_then(|s| s.max_unavailable.clone()),
            Some(IntOrString::Int(1))
        );
    }
}
