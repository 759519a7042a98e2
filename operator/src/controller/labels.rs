//! Labels and owner references put on every object the operator builds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::{Error, Result};

/// Labels that select the pods of one owner (stable: they go into selectors).
fn selector_labels(app: &str, instance: &str) -> BTreeMap<String, String> {
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
fn object_labels(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app, instance);
    labels.insert("app.kubernetes.io/component".into(), component.into());
    labels.insert(MANAGED_BY.into(), super::FIELD_MANAGER.into());
    labels
}

/// Watches only the objects the operator labelled as its own.
pub(crate) fn owned_objects() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY}={}", super::FIELD_MANAGER))
}

/// The controller owner reference of an object the operator builds for `owner`.
fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))
}

/// What every object built for one custom resource shares: the owner's name and namespace,
/// the labels of the objects, the selector of their pods, and the owner reference whose
/// deletion makes the garbage collector delete them too.
#[derive(Clone, Debug, Default)]
pub struct OwnedBy {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    pub reference: OwnerReference,
}

impl OwnedBy {
    /// The objects of `owner`, labelled as the `component` of the `app`.
    pub(crate) fn new<K: Resource<DynamicType = ()>>(
        owner: &K,
        app: &str,
        component: &str,
    ) -> Result<Self> {
        let name = owner.name_any();
        Ok(Self {
            namespace: namespace(owner)?,
            labels: object_labels(app, &name, component),
            selector: selector_labels(app, &name),
            reference: owner_reference(owner)?,
            name,
        })
    }

    /// Metadata of the owned object called `name`.
    pub(crate) fn meta(&self, name: impl Into<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            owner_references: Some(vec![self.reference.clone()]),
            ..Default::default()
        }
    }
}

/// Namespace of a namespaced object.
pub(crate) fn namespace<K: ResourceExt>(obj: &K) -> Result<String> {
    obj.namespace()
        .ok_or(Error::MissingField("metadata.namespace"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkerPool;
    use crate::api::worker_pool::WorkerPoolSpec;

    #[test]
    fn owned_objects_carry_the_owner_and_selectable_labels() {
        let mut wp = WorkerPool::new("default", WorkerPoolSpec::default());
        wp.metadata.namespace = Some("shop".into());
        wp.metadata.uid = Some("u-1".into());
        let owner = OwnedBy::new(&wp, "celery-worker", "worker").expect("owner");
        let meta = owner.meta("default-x");
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        let refs = meta.owner_references.expect("owner references");
        assert_eq!(
            (refs[0].uid.as_str(), refs[0].controller),
            ("u-1", Some(true))
        );
        let labels = meta.labels.expect("labels");
        // The selector is a subset of the labels, or the pods would not match it.
        assert!(owner.selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(labels[MANAGED_BY], crate::controller::FIELD_MANAGER);
        // Labels of a selector never change, so no "component" among them.
        assert!(!owner.selector.contains_key("app.kubernetes.io/component"));
    }

    #[test]
    fn an_owner_without_uid_or_namespace_is_refused() {
        let wp = WorkerPool::new("default", WorkerPoolSpec::default());
        assert!(OwnedBy::new(&wp, "celery-worker", "worker").is_err());
    }
}
