//! The broker URL of a PeriodicTask, read from its Secret. The URL holds a password: it is
//! handed to the engine only, never logged, evented or put in status.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::engine::BrokerUrl;
use crate::api::shared::BrokerRef;
use crate::controller::redis_cache::secrets::{BASE_URL_KEY, connection_secret_name, secret_value};

/// The URL `r` points at; the error is a one-line message for the BrokerReachable condition.
pub async fn resolve(client: &Client, ns: &str, r: &BrokerRef) -> Result<BrokerUrl, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let (secret, key, what) = match (&r.redis_cache, &r.secret_key_ref) {
        (Some(name), None) => (
            connection_secret_name(name),
            BASE_URL_KEY.to_string(),
            format!("spec.broker.redisCache: RedisCache {name} has no connection Secret yet"),
        ),
        (None, Some(k)) => (
            k.name.clone(),
            k.key.clone(),
            format!(
                "spec.broker.secretKeyRef: Secret {} with key {} not found",
                k.name, k.key
            ),
        ),
        _ => return Err("spec.broker: set exactly one of redisCache or secretKeyRef".into()),
    };
    let value = match secrets.get_opt(&secret).await {
        Ok(Some(s)) => secret_value(&s, &key),
        Ok(None) => None,
        Err(e) => return Err(format!("spec.broker: reading Secret {secret}: {e}")),
    };
    let Some(value) = value else { return Err(what) };
    Ok(BrokerUrl(with_database(value.trim(), r)))
}

/// A RedisCache's base URL names no database: append `/<database>`.
fn with_database(url: &str, r: &BrokerRef) -> String {
    if r.redis_cache.is_some() {
        format!("{}/{}", url.trim_end_matches('/'), r.database.unwrap_or(0))
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_cache_urls_get_the_database_and_secret_urls_are_kept() {
        let rc = BrokerRef {
            redis_cache: Some("b".into()),
            database: Some(3),
            ..Default::default()
        };
        assert_eq!(
            with_database("redis://:p@h:6379", &rc),
            "redis://:p@h:6379/3"
        );
        let sk = BrokerRef {
            secret_key_ref: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(with_database("redis://h:1/5", &sk), "redis://h:1/5");
    }
}
