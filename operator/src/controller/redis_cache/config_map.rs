//! The ConfigMap holding redis.conf, and the checksum that rolls the pods when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::settings::{REDIS_PORT, Settings};
use crate::api::redis_cache::{MaxMemoryPolicy, PersistenceMode};
use crate::controller::labels::OwnedBy;

/// Key of redis.conf in the ConfigMap; the pod mounts it at /etc/redis/redis.conf.
pub const CONFIG_KEY: &str = "redis.conf";

pub fn config_map_name(name: &str) -> String {
    format!("{name}-config")
}

/// redis.conf for the settings. The password is not in it: the pod passes it with
/// `--requirepass` from the password Secret, so the ConfigMap holds no secret.
pub fn render_redis_conf(s: &Settings) -> String {
    let mut lines = vec![
        "# Rendered by celery-operator; edit the RedisCache, not this file.".to_string(),
        format!("port {REDIS_PORT}"),
        "bind * -::*".into(),
        "protected-mode no".into(),
        "dir /data".into(),
        format!("maxmemory {}", s.max_memory_bytes),
        format!("maxmemory-policy {}", policy_name(s.max_memory_policy)),
    ];
    match s.persistence {
        PersistenceMode::None => lines.extend(["appendonly no".into(), "save \"\"".into()]),
        PersistenceMode::Rdb => lines.extend([
            "appendonly no".into(),
            "save 3600 1 300 100 60 10000".into(),
        ]),
        PersistenceMode::Aof => lines.extend([
            "appendonly yes".into(),
            "appendfsync everysec".into(),
            "save \"\"".into(),
        ]),
    }
    if let Some(r) = &s.replication {
        // Whether a replica counts is the primary's own view: connected, acked within 10 s.
        lines.extend([
            format!("min-replicas-to-write {}", r.min_replicas_to_write),
            "min-replicas-max-lag 10".into(),
        ]);
    }
    lines.extend(s.extra_config.iter().map(|(k, v)| format!("{k} {v}")));
    lines.push(String::new());
    lines.join("\n")
}

fn policy_name(p: MaxMemoryPolicy) -> &'static str {
    match p {
        MaxMemoryPolicy::Noeviction => "noeviction",
        MaxMemoryPolicy::AllkeysLru => "allkeys-lru",
        MaxMemoryPolicy::AllkeysLfu => "allkeys-lfu",
        MaxMemoryPolicy::AllkeysRandom => "allkeys-random",
        MaxMemoryPolicy::VolatileLru => "volatile-lru",
        MaxMemoryPolicy::VolatileLfu => "volatile-lfu",
        MaxMemoryPolicy::VolatileRandom => "volatile-random",
        MaxMemoryPolicy::VolatileTtl => "volatile-ttl",
    }
}

/// A short, stable digest of the config, for the pod template annotation (FNV-1a 64).
pub fn checksum(config: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in config.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub fn build(owner: &OwnedBy, redis_conf: &str) -> ConfigMap {
    ConfigMap {
        metadata: owner.meta(config_map_name(&owner.name)),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            redis_conf.to_string(),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::settings::resolve;
    use super::*;
    use crate::api::redis_cache::{Purpose, RedisCacheSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn broker_conf_never_evicts_and_appends_only() {
        let spec = RedisCacheSpec {
            purpose: Purpose::Broker,
            max_memory: Some(Quantity("100Mi".into())),
            config: [("timeout".to_string(), "300".to_string())].into(),
            ..Default::default()
        };
        let conf = render_redis_conf(&resolve(&spec).expect("valid"));
        let lines: Vec<&str> = conf.lines().collect();
        for expected in [
            "port 6379",
            "dir /data",
            "maxmemory 104857600",
            "maxmemory-policy noeviction",
            "appendonly yes",
            "appendfsync everysec",
            "timeout 300",
        ] {
            assert!(lines.contains(&expected), "{expected:?} missing in\n{conf}");
        }
        assert!(
            !conf.contains("requirepass"),
            "the password never goes into the ConfigMap"
        );
    }

    #[test]
    fn cache_conf_evicts_and_keeps_nothing_on_disk() {
        let conf = render_redis_conf(&resolve(&RedisCacheSpec::default()).expect("valid"));
        assert!(conf.lines().any(|l| l == "maxmemory-policy allkeys-lru"));
        assert!(conf.lines().any(|l| l == "appendonly no"));
        assert!(conf.lines().any(|l| l == "save \"\""));
    }

    #[test]
    fn a_replicated_primary_refuses_writes_without_a_replica_close_behind() {
        let spec = RedisCacheSpec {
            replication: Some(crate::api::redis_cache::Replication::default()),
            ..Default::default()
        };
        let conf = render_redis_conf(&resolve(&spec).expect("valid"));
        assert!(
            conf.lines().any(|l| l == "min-replicas-to-write 1"),
            "{conf}"
        );
        assert!(
            conf.lines().any(|l| l == "min-replicas-max-lag 10"),
            "{conf}"
        );
        let single = render_redis_conf(&resolve(&RedisCacheSpec::default()).expect("valid"));
        assert!(!single.contains("min-replicas"), "{single}");
    }

    #[test]
    fn checksum_changes_with_the_config_only() {
        assert_eq!(checksum("a"), checksum("a"));
        assert_ne!(checksum("maxmemory 1"), checksum("maxmemory 2"));
        assert_eq!(checksum("").len(), 16);
    }
}
