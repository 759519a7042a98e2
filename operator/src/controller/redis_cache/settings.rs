//! The validated, defaulted view of a RedisCache spec: every builder reads this, never the
//! raw spec, so defaults live in one place.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::redis_cache::{
    DEFAULT_IMAGE, MaxMemoryPolicy, OWNED_DIRECTIVES, PersistenceMode, Purpose, RedisCacheSpec,
    Replication,
};
use crate::api::shared::SecretKeyRef;

/// Redis listens here in the pod and behind the client Service.
pub const REDIS_PORT: i32 = 6379;
/// Size of the data claim when `persistence.size` is unset.
pub const DEFAULT_VOLUME_SIZE: &str = "1Gi";

/// Everything the builders need, defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub image: String,
    pub purpose: Purpose,
    /// `maxmemory` in bytes; 0 means no limit.
    pub max_memory_bytes: u64,
    pub max_memory_policy: MaxMemoryPolicy,
    pub persistence: PersistenceMode,
    pub volume_size: Quantity,
    pub storage_class_name: Option<String>,
    pub keep_volume_on_delete: bool,
    pub auth: AuthSettings,
    pub extra_config: BTreeMap<String, String>,
    pub replication: Option<Replication>,
}

/// Sentinels listen here in their pods and behind the Sentinel Service.
pub const SENTINEL_PORT: i32 = 26379;

/// `replication.downAfter` in milliseconds (the CRD admits only `1s`..`60s`).
pub fn down_after_ms(r: &Replication) -> Result<u64, String> {
    r.down_after
        .strip_suffix('s')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=60).contains(n))
        .map(|n| n * 1000)
        .ok_or_else(|| {
            format!(
                "spec.replication.downAfter: {:?} is not whole seconds from 1s to 60s",
                r.down_after
            )
        })
}

/// Where the password comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthSettings {
    Disabled,
    /// The operator's generated Secret `<name>-password`, key `password`.
    Generated,
    Existing(SecretKeyRef),
}

/// Validates a spec and applies its defaults. Errors name the field, for the status
/// condition; the CRD schema rejects most bad input before it gets here.
pub fn resolve(spec: &RedisCacheSpec) -> Result<Settings, String> {
    let purpose = spec.purpose;
    let persistence_spec = spec.persistence.clone().unwrap_or_default();
    let persistence = match (&spec.persistence, purpose) {
        (Some(p), _) => p.mode,
        (None, Purpose::Broker) => PersistenceMode::Aof,
        (None, Purpose::Cache) => PersistenceMode::None,
    };
    let max_memory_bytes = match &spec.max_memory {
        Some(q) => parse_quantity_bytes(&q.0).map_err(|e| format!("spec.maxMemory: {e}"))?,
        None => 0,
    };
    let volume_size = persistence_spec
        .size
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_VOLUME_SIZE.into()));
    if persistence != PersistenceMode::None {
        let bytes = parse_quantity_bytes(&volume_size.0)
            .map_err(|e| format!("spec.persistence.size: {e}"))?;
        if bytes == 0 {
            return Err("spec.persistence.size: must be positive".into());
        }
    }
    for (key, value) in &spec.config {
        if OWNED_DIRECTIVES.contains(&key.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "spec.config.{key}: the operator owns this directive"
            ));
        }
        // One directive per line: a newline would smuggle in any other directive.
        if value.contains(['\n', '\r']) {
            return Err(format!(
                "spec.config.{key}: the value must be a single line"
            ));
        }
        // A value Redis refuses would make it exit at start (FATAL CONFIG FILE ERROR).
        super::directives::check(key, value).map_err(|e| format!("spec.config.{key}: {e}"))?;
    }
    if let Some(r) = &spec.replication {
        down_after_ms(r)?;
    }
    let auth = match (&spec.auth.enabled, &spec.auth.existing_secret) {
        (false, _) => AuthSettings::Disabled,
        (true, None) => AuthSettings::Generated,
        (true, Some(r)) => AuthSettings::Existing(r.clone()),
    };
    Ok(Settings {
        image: spec
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.into()),
        purpose,
        max_memory_bytes,
        max_memory_policy: spec.max_memory_policy.unwrap_or(match purpose {
            Purpose::Broker => MaxMemoryPolicy::Noeviction,
            Purpose::Cache => MaxMemoryPolicy::AllkeysLru,
        }),
        persistence,
        volume_size,
        storage_class_name: persistence_spec.storage_class_name,
        keep_volume_on_delete: persistence_spec.keep_on_delete,
        auth,
        extra_config: spec.config.clone(),
        replication: spec.replication.clone(),
    })
}

/// Bytes of a Kubernetes quantity in any form the API server accepts (`512Mi`, `1G`, `1e9`,
/// `1048576`, `500m`); fractions of a byte round down.
pub fn parse_quantity_bytes(q: &str) -> Result<u64, String> {
    let q = q.trim();
    let unsigned = q.strip_prefix('+').unwrap_or(q);
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(split);
    let scale: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => exponent[1..]
            .parse::<i32>()
            .map(|e| 10f64.powi(e))
            .map_err(|_| format!("{q:?} is not a quantity"))?,
        other => {
            return Err(format!(
                "{q:?} has an unknown suffix {other:?} (use Ki, Mi, Gi, Ti, k, M, G, T)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{q:?} is not a non-negative quantity"))?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{q:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::redis_cache::{Auth, Persistence};

    #[test]
    fn broker_defaults_never_evict_and_persist_with_aof() {
        let s = resolve(&RedisCacheSpec {
            purpose: Purpose::Broker,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(s.max_memory_policy, MaxMemoryPolicy::Noeviction);
        assert_eq!(s.persistence, PersistenceMode::Aof);
        assert_eq!(s.volume_size, Quantity("1Gi".into()));
        assert_eq!(s.auth, AuthSettings::Generated);
        assert_eq!(s.image, DEFAULT_IMAGE);
    }

    #[test]
    fn cache_defaults_evict_lru_without_persistence() {
        let s = resolve(&RedisCacheSpec::default()).expect("valid");
        assert_eq!(s.max_memory_policy, MaxMemoryPolicy::AllkeysLru);
        assert_eq!(s.persistence, PersistenceMode::None);
    }

    #[test]
    fn explicit_settings_override_the_purpose() {
        let spec = RedisCacheSpec {
            purpose: Purpose::Broker,
            max_memory: Some(Quantity("256Mi".into())),
            max_memory_policy: Some(MaxMemoryPolicy::VolatileLru),
            persistence: Some(Persistence {
                mode: PersistenceMode::Rdb,
                ..Default::default()
            }),
            auth: Auth {
                enabled: false,
                existing_secret: None,
            },
            ..Default::default()
        };
        let s = resolve(&spec).expect("valid");
        assert_eq!(s.max_memory_bytes, 256 * 1024 * 1024);
        assert_eq!(s.max_memory_policy, MaxMemoryPolicy::VolatileLru);
        assert_eq!(s.persistence, PersistenceMode::Rdb);
        assert_eq!(s.auth, AuthSettings::Disabled);
    }

    #[test]
    fn owned_directives_and_bad_quantities_are_rejected_naming_the_field() {
        let mut spec = RedisCacheSpec::default();
        spec.config.insert("Port".into(), "1".into());
        assert_eq!(
            resolve(&spec).unwrap_err(),
            "spec.config.Port: the operator owns this directive"
        );
        let spec = RedisCacheSpec {
            max_memory: Some(Quantity("12parsecs".into())),
            ..Default::default()
        };
        assert!(resolve(&spec).unwrap_err().starts_with("spec.maxMemory:"));
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity_bytes("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity_bytes("100M"), Ok(100_000_000));
        assert_eq!(parse_quantity_bytes("4096"), Ok(4096));
        assert_eq!(parse_quantity_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_quantity_bytes("2E3"), Ok(2000));
        assert_eq!(parse_quantity_bytes("+1Mi"), Ok(1 << 20));
        assert_eq!(parse_quantity_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(
            parse_quantity_bytes("1500m"),
            Ok(1),
            "fractions of a byte round down"
        );
        assert!(parse_quantity_bytes("-1Gi").is_err());
        assert!(parse_quantity_bytes("16Ei").is_err(), "beyond u64");
        assert!(parse_quantity_bytes("12parsecs").is_err());
        assert!(parse_quantity_bytes("1Xi").is_err());
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::super::*;
        use crate::controller::redis_cache::config_map::render_redis_conf;

        proptest! {
            /// Quantities come from users; any text is refused or read, never a panic.
            #[test]
            fn any_quantity_is_read_or_refused(q in prop_oneof![
                "[+-]?[0-9]{0,25}(\\.[0-9]{0,5})?(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]{1,3})?",
                ".{0,12}",
            ]) {
                let _ = parse_quantity_bytes(&q);
            }

            /// Whatever the config map holds, resolving and rendering it never panics, and
            /// the operator's own directives are never overridden by it.
            #[test]
            fn any_config_resolves_or_is_refused_and_renders(
                config in proptest::collection::btree_map(
                    "port|bind|requirepass|maxmemory|include|timeout|[a-z-]{1,12}|.{0,6}",
                    ".{0,20}",
                    0..6,
                ),
            ) {
                let spec = RedisCacheSpec { config, ..Default::default() };
                if let Ok(settings) = resolve(&spec) {
                    let conf = render_redis_conf(&settings);
                    prop_assert_eq!(conf.lines().filter(|l| l.starts_with("port ")).count(), 1);
                }
            }
        }
    }
}
