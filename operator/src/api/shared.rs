//! Types shared by several kinds: broker references and pod overrides.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Where a Celery broker (or result backend) lives: a RedisCache of this namespace, or a
/// Secret key holding a `redis://` URL. Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.redisCache) != has(self.secretKeyRef)")
    .message("set exactly one of redisCache or secretKeyRef"))]
#[x_kube(validation = Rule::new("!has(self.secretKeyRef) || !has(self.database)")
    .message("database applies to redisCache only; a secretKeyRef URL names its own database"))]
pub struct BrokerRef {
    /// Name of a RedisCache in the same namespace; its connection Secret is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub redis_cache: Option<String>,
    /// A key of a Secret in the same namespace whose value is a `redis://` or `rediss://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Redis database index used with `redisCache` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 15))]
    pub database: Option<i32>,
}

/// A key of a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Scheduling and metadata overrides for the pods the operator builds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod annotations (e.g. for a metrics scraper or a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// The kombu Redis transport options that shape key names
/// (`broker_transport_options`); they must equal the workers' own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.prioritySteps) || (self.prioritySteps.isSorted() && self.prioritySteps.all(x, self.prioritySteps.exists_one(y, y == x)))")
    .message("prioritySteps must be strictly ascending"))]
pub struct TransportOptionsSpec {
    /// `priority_steps`, ascending (default `[0, 3, 6, 9]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10), inner(range(min = 0, max = 9)))]
    pub priority_steps: Option<Vec<i32>>,
    /// `sep` between queue name and step (default `"\x06\x16"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub separator: Option<String>,
    /// `global_keyprefix`, prepended to every key (default empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub global_key_prefix: Option<String>,
}

impl PodOverrides {
    /// A PodSpec holding only the scheduling overrides, so a builder completes its own pod
    /// spec with `..overrides.scheduling()`.
    pub fn scheduling(&self) -> k8s_openapi::api::core::v1::PodSpec {
        k8s_openapi::api::core::v1::PodSpec {
            node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
            tolerations: (!self.tolerations.is_empty()).then(|| self.tolerations.clone()),
            affinity: self.affinity.clone(),
            ..Default::default()
        }
    }
}

impl TransportOptionsSpec {
    /// The transport options a publisher or reader uses: the spec's, defaulted like kombu.
    pub fn resolve(spec: Option<&Self>) -> crate::celery::TransportOptions {
        let mut t = crate::celery::TransportOptions::default();
        if let Some(o) = spec {
            if let Some(steps) = &o.priority_steps {
                // i32 in the schema (a u8 would be `format: uint8`, which the apiserver warns
                // about); the CRD bounds steps to 0-9, and validate() refuses anything else.
                t.priority_steps = steps
                    .iter()
                    .map(|s| u8::try_from(*s).unwrap_or(u8::MAX))
                    .collect();
            }
            if let Some(sep) = &o.separator {
                t.separator = sep.clone();
            }
            if let Some(prefix) = &o.global_key_prefix {
                t.global_key_prefix = prefix.clone();
            }
        }
        t
    }
}
