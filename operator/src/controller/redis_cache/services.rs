//! The headless Service (stable pod DNS for the StatefulSet) and the client Service; with
//! replication, the client Service selects the primary only, and the Sentinels get the same
//! pair.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::{REDIS_PORT, SENTINEL_PORT};
use crate::controller::labels::OwnedBy;

/// The label the operator puts on the pod the Sentinels name as primary.
pub(crate) const ROLE_LABEL: &str = "celeryoperator.io/role";
pub(crate) const PRIMARY: &str = "primary";
pub(crate) const REPLICA: &str = "replica";

pub(crate) fn headless_service_name(name: &str) -> String {
    format!("{name}-headless")
}

/// The Sentinels' StatefulSet and client Service.
pub(crate) fn sentinel_name(name: &str) -> String {
    format!("{name}-sentinel")
}

pub(crate) fn sentinel_headless_service_name(name: &str) -> String {
    format!("{name}-sentinel-headless")
}

fn service(
    name: String,
    owner: &OwnedBy,
    selector: BTreeMap<String, String>,
    (port_name, port): (&str, i32),
    headless: bool,
) -> Service {
    Service {
        metadata: owner.meta(name),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_string()),
            // Pods find each other by name while they start, before they are ready.
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `[headless, client]` of the Redis pods (the client Service has the RedisCache's own name),
/// then, with `sentinel` (the Sentinels' owner view), `[headless, client]` of the Sentinels.
pub(crate) fn build(owner: &OwnedBy, sentinel: Option<&OwnedBy>) -> Vec<Service> {
    let redis = ("redis", REDIS_PORT);
    let mut client_selector = owner.selector.clone();
    if sentinel.is_some() {
        client_selector.insert(ROLE_LABEL.into(), PRIMARY.into());
    }
    let mut services = vec![
        service(
            headless_service_name(&owner.name),
            owner,
            owner.selector.clone(),
            redis,
            true,
        ),
        service(owner.name.clone(), owner, client_selector, redis, false),
    ];
    if let Some(s) = sentinel {
        let port = ("sentinel", SENTINEL_PORT);
        services.extend([
            service(
                sentinel_headless_service_name(&owner.name),
                s,
                s.selector.clone(),
                port,
                true,
            ),
            service(
                sentinel_name(&owner.name),
                s,
                s.selector.clone(),
                port,
                false,
            ),
        ]);
    }
    services
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn headless_and_client_services_select_the_redis_pods() {
        let selector =
            BTreeMap::from([("app.kubernetes.io/instance".to_string(), "c".to_string())]);
        let [headless, client] = <[Service; 2]>::try_from(build(
            &OwnedBy {
                name: "c".into(),
                selector: selector.clone(),
                ..Default::default()
            },
            None,
        ))
        .expect("two services");
        let (h, c) = (headless.spec.expect("spec"), client.spec.expect("spec"));
        assert_eq!(headless.metadata.name.as_deref(), Some("c-headless"));
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        assert_eq!(h.publish_not_ready_addresses, Some(true));
        assert_eq!(client.metadata.name.as_deref(), Some("c"));
        assert_eq!(c.cluster_ip, None);
        assert_eq!(c.selector.as_ref(), Some(&selector));
        assert_eq!(c.ports.as_ref().map(|p| p[0].port), Some(6379));
    }

    #[test]
    fn with_replication_the_client_service_selects_the_primary_and_sentinels_get_theirs() {
        let redis = OwnedBy {
            name: "b".into(),
            selector: BTreeMap::from([("app.kubernetes.io/name".to_string(), "redis".into())]),
            ..Default::default()
        };
        let sentinel = OwnedBy {
            name: "b".into(),
            selector: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "redis-sentinel".into(),
            )]),
            ..Default::default()
        };
        let services = build(&redis, Some(&sentinel));
        let by_name = |n: &str| {
            services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(n))
                .and_then(|s| s.spec.clone())
                .unwrap_or_else(|| panic!("{n}"))
        };
        let client = by_name("b").selector.expect("selector");
        assert_eq!(client.get(ROLE_LABEL).map(String::as_str), Some(PRIMARY));
        let headless = by_name("b-headless").selector.expect("selector");
        assert!(
            !headless.contains_key(ROLE_LABEL),
            "every pod has a DNS name"
        );
        for name in ["b-sentinel", "b-sentinel-headless"] {
            let spec = by_name(name);
            assert_eq!(spec.selector, Some(sentinel.selector.clone()), "{name}");
            assert_eq!(spec.ports.as_ref().map(|p| p[0].port), Some(26379));
        }
        assert_eq!(
            by_name("b-sentinel-headless").publish_not_ready_addresses,
            Some(true)
        );
    }
}
