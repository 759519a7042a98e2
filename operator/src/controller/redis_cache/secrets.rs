//! The generated password Secret and the connection Secret that Django and Celery read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::services::sentinel_name;
use super::settings::{REDIS_PORT, SENTINEL_PORT};
use crate::controller::labels::OwnedBy;

/// Key of the password in the generated password Secret and in the connection Secret.
pub const PASSWORD_KEY: &str = "password";
/// Keys of the connection Secret.
pub const HOST_KEY: &str = "host";
pub const PORT_KEY: &str = "port";
/// `redis://[:password@]host:port/0`.
pub const URL_KEY: &str = "url";
/// `redis://[:password@]host:port`, to which a user appends `/<db>`.
pub const BASE_URL_KEY: &str = "baseUrl";

/// With replication: `host:port` of the Sentinel Service.
pub const SENTINELS_KEY: &str = "sentinels";
/// With replication: the name the Sentinels know the primary by.
pub const MASTER_NAME_KEY: &str = "masterName";
/// With replication: kombu's `sentinel://default:<password>@host:port/0`, used with the
/// transport option `master_name`.
pub const SENTINEL_URL_KEY: &str = "sentinelUrl";

pub fn password_secret_name(name: &str) -> String {
    format!("{name}-password")
}

pub fn connection_secret_name(name: &str) -> String {
    format!("{name}-connection")
}

/// DNS name of the client Service.
pub fn service_host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc")
}

/// A random password: 256 bits from the OS generator, hex so it needs no escaping anywhere.
pub fn generate_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The password Secret, created once; reconciles never rewrite its data.
pub fn build_password_secret(owner: &OwnedBy, password: &str) -> Secret {
    Secret {
        metadata: owner.meta(password_secret_name(&owner.name)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_string(),
            ByteString(password.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Percent-encodes a password for the userinfo part of a URL.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Redis URL without database: `redis://default:<password>@host:port`. The user is named:
/// with an empty one (`redis://:pw@`) redis-cli sends `AUTH "" pw`, which Redis 6+ refuses;
/// redis-py, kombu and django-redis take either form.
pub fn base_url(host: &str, port: i32, password: Option<&str>) -> String {
    match password {
        Some(p) => format!("redis://default:{}@{host}:{port}", encode_userinfo(p)),
        None => format!("redis://{host}:{port}"),
    }
}

/// The connection Secret; `replicated` adds what clients need to follow the primary
/// through the Sentinels.
pub fn build_connection_secret(
    owner: &OwnedBy,
    password: Option<&str>,
    replicated: bool,
) -> Secret {
    let host = service_host(&owner.name, &owner.namespace);
    let base = base_url(&host, REDIS_PORT, password);
    let mut data = BTreeMap::from([
        (HOST_KEY.to_string(), host.clone()),
        (PORT_KEY.to_string(), REDIS_PORT.to_string()),
        (URL_KEY.to_string(), format!("{base}/0")),
        (BASE_URL_KEY.to_string(), base),
    ]);
    if replicated {
        let sentinels = service_host(&sentinel_name(&owner.name), &owner.namespace);
        let url =
            base_url(&sentinels, SENTINEL_PORT, password).replacen("redis://", "sentinel://", 1);
        data.extend([
            (
                SENTINELS_KEY.to_string(),
                format!("{sentinels}:{SENTINEL_PORT}"),
            ),
            (MASTER_NAME_KEY.to_string(), owner.name.clone()),
            (SENTINEL_URL_KEY.to_string(), format!("{url}/0")),
        ]);
    }
    if let Some(p) = password {
        data.insert(PASSWORD_KEY.to_string(), p.to_string());
    }
    Secret {
        metadata: owner.meta(connection_secret_name(&owner.name)),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A string value of a Secret key.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key).map(|b| b.0.clone()))
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes().to_vec())
        })?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnedBy {
        OwnedBy {
            name: "cache".into(),
            namespace: "shop".into(),
            ..Default::default()
        }
    }

    #[test]
    fn connection_secret_holds_host_port_password_and_urls() {
        let s = build_connection_secret(&owner(), Some("p@ss word"), false);
        assert_eq!(s.metadata.name.as_deref(), Some("cache-connection"));
        assert_eq!(
            secret_value(&s, HOST_KEY).as_deref(),
            Some("cache.shop.svc")
        );
        assert_eq!(secret_value(&s, PORT_KEY).as_deref(), Some("6379"));
        assert_eq!(secret_value(&s, PASSWORD_KEY).as_deref(), Some("p@ss word"));
        assert_eq!(
            secret_value(&s, URL_KEY).as_deref(),
            Some("redis://default:p%40ss%20word@cache.shop.svc:6379/0")
        );
        assert_eq!(
            secret_value(&s, BASE_URL_KEY).as_deref(),
            Some("redis://default:p%40ss%20word@cache.shop.svc:6379")
        );
    }

    #[test]
    fn without_auth_the_url_has_no_password() {
        let s = build_connection_secret(&owner(), None, false);
        assert_eq!(
            secret_value(&s, URL_KEY).as_deref(),
            Some("redis://cache.shop.svc:6379/0")
        );
        assert_eq!(secret_value(&s, PASSWORD_KEY), None);
        assert_eq!(
            secret_value(&s, SENTINEL_URL_KEY),
            None,
            "one pod, no Sentinel"
        );
    }

    #[test]
    fn a_replicated_cache_tells_clients_its_sentinels_in_kombus_form() {
        let s = build_connection_secret(&owner(), Some("p@ss"), true);
        assert_eq!(
            secret_value(&s, SENTINELS_KEY).as_deref(),
            Some("cache-sentinel.shop.svc:26379")
        );
        assert_eq!(secret_value(&s, MASTER_NAME_KEY).as_deref(), Some("cache"));
        assert_eq!(
            secret_value(&s, SENTINEL_URL_KEY).as_deref(),
            Some("sentinel://default:p%40ss@cache-sentinel.shop.svc:26379/0")
        );
        assert_eq!(
            secret_value(&s, URL_KEY).as_deref(),
            Some("redis://default:p%40ss@cache.shop.svc:6379/0"),
            "the client Service, which selects the primary"
        );
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
