//! With replication: which pod the Sentinels name as primary, and the role label that points
//! the client Service at it. The operator only reads Sentinel; it never resets or
//! reconfigures it, so a reconcile cannot undo a failover.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::secrets::{base_url, service_host};
use super::services::{PRIMARY, REPLICA, ROLE_LABEL, sentinel_name};
use super::settings::SENTINEL_PORT;
use crate::broker::{BrokerError, BrokerUrl};
use crate::controller::labels::OwnedBy;

/// Longest a look at the Sentinels may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a replicated cache's primary is looked at: a failover moves the client Service
/// within this (clients that follow Sentinel do not wait for it).
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What the Sentinels say of the primary.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PrimaryView {
    /// The pod they name.
    Named(String),
    /// Why no pod is named (no answer, or an address that is not one of the pods).
    Unknown(String),
}

/// The pod of an address the Sentinels give (`<pod>.<headless>.<ns>.svc`), if it is one of
/// the set `statefulset`'s.
pub(crate) fn pod_of(address: &str, statefulset: &str) -> Option<String> {
    let pod = address.split('.').next()?;
    pod.strip_prefix(statefulset)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|ordinal| !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
        .map(|_| pod.to_string())
}

/// Asks the Sentinel Service which address the primary of `owner` has.
pub(crate) async fn ask(owner: &OwnedBy, password: Option<&str>) -> PrimaryView {
    let host = service_host(&sentinel_name(&owner.name), &owner.namespace);
    let url = BrokerUrl::new(base_url(&host, SENTINEL_PORT, password));
    match tokio::time::timeout(ASK_TIMEOUT, master_address(&url, &owner.name)).await {
        Ok(Ok(Some(address))) => match pod_of(&address, &owner.name) {
            Some(pod) => PrimaryView::Named(pod),
            None => PrimaryView::Unknown(format!(
                "the Sentinels name {address}, which is not a pod of StatefulSet {}",
                owner.name
            )),
        },
        Ok(Ok(None)) => PrimaryView::Unknown("the Sentinels know no primary yet".into()),
        Ok(Err(err)) => PrimaryView::Unknown(format!("the Sentinels do not answer: {err}")),
        Err(_) => PrimaryView::Unknown(format!(
            "the Sentinels did not answer within {ASK_TIMEOUT:?}"
        )),
    }
}

async fn master_address(url: &BrokerUrl, master: &str) -> Result<Option<String>, BrokerError> {
    let client = redis::Client::open(url.expose()).map_err(|_| BrokerError::InvalidUrl)?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| BrokerError::Connect(BrokerError::describe(&e)))?;
    let reply: Option<Vec<String>> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))?;
    Ok(reply.and_then(|r| r.into_iter().next()))
}

/// The role label each pod of the set should have, given the primary.
pub(crate) fn roles(statefulset: &str, pods: i32, primary: &str) -> Vec<(String, &'static str)> {
    (0..pods)
        .map(|n| format!("{statefulset}-{n}"))
        .map(|pod| {
            let role = if pod == primary { PRIMARY } else { REPLICA };
            (pod, role)
        })
        .collect()
}

/// Puts the role labels on the pods (a pod not there yet is labelled on a later look).
pub(crate) async fn label(
    pods: &Api<Pod>,
    statefulset: &str,
    count: i32,
    primary: &str,
) -> Result<(), kube::Error> {
    // The old primary loses its label first: the client Service never selects two pods.
    let mut roles = roles(statefulset, count, primary);
    roles.sort_by_key(|(_, role)| *role == PRIMARY);
    for (pod, role) in roles {
        let patch = json!({"metadata": {"labels": {ROLE_LABEL: role}}});
        match pods
            .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_a_pod_only_of_its_own_set() {
        assert_eq!(
            pod_of("broker-1.broker-headless.shop.svc", "broker").as_deref(),
            Some("broker-1")
        );
        assert_eq!(pod_of("broker-12", "broker").as_deref(), Some("broker-12"));
        assert_eq!(pod_of("broker-sentinel-0.x.shop.svc", "broker"), None);
        assert_eq!(pod_of("brokerx-0.x", "broker"), None);
        assert_eq!(pod_of("10.245.0.7", "broker"), None);
        assert_eq!(pod_of("broker-.x", "broker"), None);
    }

    #[test]
    fn one_pod_is_primary_and_the_others_replicas() {
        assert_eq!(
            roles("b", 3, "b-1"),
            vec![
                ("b-0".to_string(), REPLICA),
                ("b-1".to_string(), PRIMARY),
                ("b-2".to_string(), REPLICA)
            ]
        );
        assert!(
            roles("b", 3, "elsewhere")
                .iter()
                .all(|(_, r)| *r == REPLICA),
            "a primary outside the set labels none"
        );
    }
}
