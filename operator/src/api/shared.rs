//! Types shared by several kinds: broker references and status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a Celery broker (or result backend) lives: a RedisCache of this namespace, or a
/// Secret key holding a `redis://` URL. Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerRef {
    /// Name of a RedisCache in the same namespace; its connection Secret is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cache: Option<String>,
    /// A key of a Secret in the same namespace whose value is a `redis://` or `rediss://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Redis database index (0-15 on a default Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 15))]
    pub database: Option<u8>,
}

/// A key of a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

/// Status conditions, merged by type like every Kubernetes controller does.
pub type Conditions = Vec<Condition>;
