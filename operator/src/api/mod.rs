//! Custom resource types of the `celeryoperator.io` API group, one file per kind.

// Every type here is public API (the e2e crate and users build manifests from them), yet
// rustc's `unreachable_pub` flags the ones deriving KubeSchema: that derive re-emits each
// struct, with its `pub`, inside a private block to build the schema.
#[allow(unreachable_pub)]
pub mod periodic_task;
#[allow(unreachable_pub)]
pub mod redis_cache;
#[allow(unreachable_pub)]
pub mod shared;
#[allow(unreachable_pub)]
pub mod worker_pool;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use periodic_task::PeriodicTask;
pub use redis_cache::RedisCache;
pub use worker_pool::WorkerPool;

/// The API group all kinds live in.
pub const GROUP: &str = "celeryoperator.io";
/// `kubectl get celery` lists every kind of the project.
pub const CATEGORY: &str = "celery";

/// Every CRD of the project, in a stable order (the order of the files in `crds/`).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![RedisCache::crd(), WorkerPool::crd(), PeriodicTask::crd()]
}

/// The file name under `crds/` that holds a CRD, e.g. `rediscaches.celeryoperator.io.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Renders CRDs as one multi-document YAML stream.
pub fn render_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_in_the_celery_category_with_a_status_subresource() {
        for crd in all_crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            assert_eq!(crd.spec.group, GROUP, "{name}");
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..]),
                "{name}"
            );
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1", "{name}");
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{name}"
            );
        }
    }

    #[test]
    fn short_names_match_the_design() {
        let short: Vec<_> = all_crds()
            .iter()
            .map(|c| {
                c.spec
                    .names
                    .short_names
                    .clone()
                    .unwrap_or_default()
                    .join(",")
            })
            .collect();
        assert_eq!(short, ["rcache", "wpool", "ptask"]);
    }

    #[test]
    fn rendered_yaml_round_trips() {
        let yaml = render_yaml(&all_crds()).expect("render");
        let docs: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| CustomResourceDefinition::deserialize(d).expect("parse"))
            .collect();
        assert_eq!(docs, all_crds());
    }

    use serde::Deserialize;
}
