//! The headless Service (stable pod DNS for the StatefulSet) and the client Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::REDIS_PORT;
use crate::controller::labels::OwnedBy;

pub(crate) fn headless_service_name(name: &str) -> String {
    format!("{name}-headless")
}

fn service(name: String, owner: &OwnedBy, headless: bool) -> Service {
    Service {
        metadata: owner.meta(name),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_string()),
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(owner.selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String("redis".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `[headless, client]`; the client Service has the RedisCache's own name.
pub(crate) fn build(owner: &OwnedBy) -> [Service; 2] {
    [
        service(headless_service_name(&owner.name), owner, true),
        service(owner.name.clone(), owner, false),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn headless_and_client_services_select_the_redis_pods() {
        let selector =
            BTreeMap::from([("app.kubernetes.io/instance".to_string(), "c".to_string())]);
        let [headless, client] = build(&OwnedBy {
            name: "c".into(),
            selector: selector.clone(),
            ..Default::default()
        });
        let (h, c) = (headless.spec.expect("spec"), client.spec.expect("spec"));
        assert_eq!(headless.metadata.name.as_deref(), Some("c-headless"));
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        assert_eq!(h.publish_not_ready_addresses, Some(true));
        assert_eq!(client.metadata.name.as_deref(), Some("c"));
        assert_eq!(c.cluster_ip, None);
        assert_eq!(c.selector.as_ref(), Some(&selector));
        assert_eq!(c.ports.as_ref().map(|p| p[0].port), Some(6379));
    }
}
