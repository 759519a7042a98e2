//! Labels and owner references put on every object the operator builds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::{Error, Result};

/// Labels that select the pods of one owner (stable: they go into selectors).
pub fn selector_labels(app: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), app.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
    ])
}

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Selector labels plus the ones that say who manages the object.
pub fn object_labels(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app, instance);
    labels.insert("app.kubernetes.io/component".into(), component.into());
    labels.insert(MANAGED_BY.into(), super::FIELD_MANAGER.into());
    labels
}

/// Watches only the objects the operator labelled as its own.
pub fn owned_objects() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY}={}", super::FIELD_MANAGER))
}

/// The controller owner reference of an object the operator builds for `owner`.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))
}

/// Metadata of an object the operator owns: its name, namespace and labels, and the owner
/// whose deletion makes the garbage collector delete it too.
pub fn owned_meta(
    name: impl Into<String>,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

/// Namespace of a namespaced object.
pub fn namespace<K: ResourceExt>(obj: &K) -> Result<String> {
    obj.namespace()
        .ok_or(Error::MissingField("metadata.namespace"))
}
