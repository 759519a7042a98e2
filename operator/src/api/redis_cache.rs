//! `RedisCache`: a Redis StatefulSet with config, persistence, auth and a connection Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::shared::{PodOverrides, SecretKeyRef};

/// The image used when `spec.image` is empty.
pub const DEFAULT_IMAGE: &str = "redis:7.4";

/// redis.conf directives the operator sets itself; `spec.config` may not override them.
pub const OWNED_DIRECTIVES: &[&str] = &[
    "port",
    "bind",
    "requirepass",
    "masterauth",
    "dir",
    "daemonize",
    "supervised",
    "pidfile",
    "logfile",
    "protected-mode",
    "include",
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "save",
    "unixsocket",
    "aclfile",
    "user",
];

/// Whether a spec has a data volume: `persistence.mode` when set, else the purpose's default.
macro_rules! has_volume {
    ($s:literal) => {
        concat!(
            "(has(",
            $s,
            ".persistence) ? ",
            $s,
            ".persistence.mode != 'none' : (has(",
            $s,
            ".purpose) && ",
            $s,
            ".purpose == 'broker'))"
        )
    };
}

/// A transition rule: whether the RedisCache has a data volume never changes.
const PERSISTENCE_KEEPS_ITS_VOLUME: &str =
    concat!(has_volume!("self"), " == ", has_volume!("oldSelf"));

/// A transition rule: the data volume keeps its size and storage class.
const VOLUME_SIZE_AND_CLASS_FIXED: &str = concat!(
    "!",
    has_volume!("self"),
    " || !",
    has_volume!("oldSelf"),
    " || (",
    "(has(self.persistence) && has(self.persistence.size) ? string(self.persistence.size) : '1Gi') == ",
    "(has(oldSelf.persistence) && has(oldSelf.persistence.size) ? string(oldSelf.persistence.size) : '1Gi') && ",
    "(has(self.persistence) && has(self.persistence.storageClassName) ? self.persistence.storageClassName : '') == ",
    "(has(oldSelf.persistence) && has(oldSelf.persistence.storageClassName) ? oldSelf.persistence.storageClassName : ''))"
);

/// A Redis server used as Django cache and/or Celery broker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "celeryoperator.io",
    version = "v1alpha1",
    kind = "RedisCache",
    namespaced,
    shortname = "rcache",
    category = "celery",
    status = "RedisCacheStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Purpose","type":"string","jsonPath":".spec.purpose"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(PERSISTENCE_KEEPS_ITS_VOLUME)
    .message("spec.persistence: a RedisCache cannot gain or lose its data volume after creation (the StatefulSet's volume claim template is immutable). spec.purpose picks the default (aof for a broker, none for a cache): set spec.persistence.mode to keep the current one, or create a new RedisCache"))]
#[x_kube(validation = Rule::new(VOLUME_SIZE_AND_CLASS_FIXED)
    .message("spec.persistence.size and spec.persistence.storageClassName cannot change after creation (the StatefulSet's volume claim template is immutable); create a new RedisCache to move the data"))]
#[x_kube(validation = Rule::new("has(self.replication) == has(oldSelf.replication)")
    .message("spec.replication cannot be added or removed after creation (the pods would change roles under their clients); create a new RedisCache"))]
#[x_kube(validation = Rule::new("!has(self.replication) || !has(self.config) || self.config.all(k, !(k.lowerAscii() in ['replicaof', 'slaveof', 'min-replicas-to-write', 'min-replicas-max-lag', 'replica-announce-ip']))")
    .message("spec.config must not set replicaof, slaveof, min-replicas-to-write, min-replicas-max-lag or replica-announce-ip with spec.replication: the operator and Sentinel set them"))]
pub struct RedisCacheSpec {
    /// Redis container image (default `redis:7.4`). The pod runs it as uid 999, the `redis`
    /// user of the official images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What the Redis is for. `cache` (default) evicts with `allkeys-lru` and keeps no data on
    /// disk; `broker` never evicts (`noeviction`) and persists with AOF, because an evicting
    /// broker silently loses tasks.
    #[serde(default)]
    pub purpose: Purpose,
    /// `maxmemory`, as a Kubernetes quantity of at least `1Mi` (`256Mi`, `1Gi`). Unset: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 1048576 : (isQuantity(self) && quantity(self).compareTo(quantity('1Mi')) >= 0)")
        .message("spec.maxMemory must be a quantity of at least 1Mi, such as 256Mi or 1Gi"))]
    pub max_memory: Option<Quantity>,
    /// `maxmemory-policy`; overrides the purpose's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_policy: Option<MaxMemoryPolicy>,
    /// Data on disk. Unset: the purpose's default (`aof` for a broker, `none` for a cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
    /// Password authentication.
    #[serde(default)]
    pub auth: Auth,
    /// Extra redis.conf directives (`{"timeout": "300", "tcp-keepalive": "60"}`). Directives
    /// the operator owns (port, bind, requirepass, dir, maxmemory, appendonly, save, ...) are
    /// rejected: use the dedicated fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k.lowerAscii() in ['port', 'bind', 'requirepass', 'masterauth', 'dir', 'daemonize', 'supervised', 'pidfile', 'logfile', 'protected-mode', 'include', 'maxmemory', 'maxmemory-policy', 'appendonly', 'save', 'unixsocket', 'aclfile', 'user']))"
    ).message("spec.config must not set a directive the operator owns (port, bind, requirepass, masterauth, dir, daemonize, supervised, pidfile, logfile, protected-mode, include, maxmemory, maxmemory-policy, appendonly, save, unixsocket, aclfile, user); use the dedicated fields"))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z][a-z0-9-]*$'))")
        .message("spec.config keys must be lower-case redis.conf directive names"))]
    #[x_kube(validation = Rule::new("self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))")
        .message("spec.config values must be single lines: a newline would add another directive"))]
    pub config: BTreeMap<String, String>,
    /// Resource requests and limits of the Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod scheduling and metadata overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,
    /// A primary with replicas and Sentinels that promote a replica when the primary is lost.
    /// Unset: one Redis pod. Turning it on or off later changes the pods' roles and is not
    /// supported yet: create a new RedisCache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
}

/// Replication with Sentinel failover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicasToWrite <= self.replicas")
    .message("spec.replication.minReplicasToWrite cannot exceed spec.replication.replicas: the primary would refuse every write"))]
pub struct Replication {
    /// Replicas besides the primary (default 2).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 8))]
    pub replicas: i32,
    /// Sentinels watching the primary (default 3): an odd number, so a majority agrees on
    /// a failover.
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 3, max = 7))]
    #[x_kube(validation = Rule::new("self % 2 == 1")
        .message("spec.replication.sentinels must be odd (3, 5 or 7): a failover needs a majority of them"))]
    pub sentinels: i32,
    /// How long the primary may not answer before Sentinel takes it as down (default `2s`;
    /// Redis' own default is 30s). A failover takes about this plus a second; shorter risks a
    /// failover while the primary is only slow.
    #[serde(default = "default_down_after")]
    #[x_kube(validation = Rule::new(format!("self.matches('{DOWN_AFTER_PATTERN}')"))
        .message("spec.replication.downAfter must be whole seconds from 1s to 60s, such as 2s"))]
    pub down_after: String,
    /// Replicas that must be connected, at most 10 s behind, for the primary to take writes
    /// (default 1). So a primary cut off from every replica refuses writes rather than
    /// taking ones a failover would drop; 0 chooses availability instead.
    #[serde(default = "default_min_replicas_to_write")]
    #[schemars(range(min = 0, max = 8))]
    pub min_replicas_to_write: i32,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            sentinels: default_sentinels(),
            down_after: default_down_after(),
            min_replicas_to_write: default_min_replicas_to_write(),
        }
    }
}

/// One replica of a replicated RedisCache, as its primary sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisReplica {
    /// The replica's pod.
    pub pod: String,
    /// Its replication link: `online` once in sync; `wait_bgsave` or `send_bulk` while it
    /// copies the data set.
    pub state: String,
    /// How far its copy is behind the primary, in bytes of the replication stream.
    pub lag_bytes: i64,
    /// Seconds since it last acknowledged the stream (it does every second).
    pub lag_seconds: i64,
}

/// `downAfter`: whole seconds, 1 to 60.
pub const DOWN_AFTER_PATTERN: &str = "^([1-9]|[1-5][0-9]|60)s$";

fn default_replicas() -> i32 {
    2
}

fn default_sentinels() -> i32 {
    3
}

fn default_down_after() -> String {
    "2s".into()
}

fn default_min_replicas_to_write() -> i32 {
    1
}

/// The role of a RedisCache, which picks safe defaults.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Purpose {
    #[default]
    Cache,
    Broker,
}

/// Redis `maxmemory-policy` values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaxMemoryPolicy {
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

/// How Redis keeps data on disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// `none` (memory only), `rdb` (snapshots) or `aof` (append-only file, every second).
    /// Switching between `rdb` and `aof` is allowed; to or from `none` is not.
    pub mode: PersistenceMode,
    /// Size of the PersistentVolumeClaim (default `1Gi`). Fixed once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))")
        .message("spec.persistence.size must be a positive quantity, such as 1Gi"))]
    pub size: Option<Quantity>,
    /// StorageClass of the claim; unset uses the cluster default. Fixed once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the PersistentVolumeClaim when the RedisCache is deleted (default false).
    #[serde(default)]
    pub keep_on_delete: bool,
}

/// Persistence modes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PersistenceMode {
    #[default]
    None,
    Rdb,
    Aof,
}

/// Password authentication of the Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Require a password (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Use this Secret key as the password instead of generating one. A generated password
    /// is kept in the Secret `<name>-password` and never rotated by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret: Option<SecretKeyRef>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            enabled: true,
            existing_secret: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Observed state of a RedisCache.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCacheStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Redis pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `host:port` of the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the Secret with `host`, `port`, `password` and `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    /// With replication: the pod the Sentinels name as the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// With replication: the replicas as the primary sees them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<RedisReplica>,
    /// `Ready`, with a reason when not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
