//! Resolving a broker reference (`spec.broker`, `spec.resultBackend`) of any kind: to the URL
//! the operator itself uses (PeriodicTask pushes, autoscaler reads), and to the environment
//! variables that carry it into worker pods, always from a Secret, never inlined.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef};

use crate::api::shared::{BrokerRef, SecretKeyRef};
use crate::broker::BrokerUrl;
use crate::controller::Context;
use crate::controller::conditions::{Conditioned, is_true};
use crate::controller::redis_cache;
use crate::controller::redis_cache::secrets::{
    BASE_URL_KEY, MASTER_NAME_KEY, SENTINELS_KEY, connection_secret_name, secret_value,
};

/// A broker reference whose Secret exists.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolvedBroker {
    /// The connection Secret of a RedisCache, and the database to use.
    RedisCache {
        connection_secret: String,
        database: i32,
    },
    /// A Secret key holding the whole URL.
    SecretKey(SecretKeyRef),
}

/// A resolved reference and the URL it holds. The URL carries a password: it is for the
/// operator's own Redis reads only, never logged or put in a pod spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub broker: ResolvedBroker,
    pub url: BrokerUrl,
    /// Whether the broker is known to answer: a RedisCache's Ready condition (its Redis
    /// answers PING); a URL in a Secret is taken as answering, nothing tells otherwise.
    pub ready: bool,
    /// The Secret the URL was read from and its resourceVersion: pods made from an older
    /// version run with an older URL (a rotated password).
    pub secret: (String, String),
}

/// Why a reference did not resolve. Only [`ResolveError::NotFound`] says something about the
/// reference itself; an API server that did not answer says nothing, so what was resolved
/// before stays in use.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The RedisCache or Secret does not exist, a Secret lacks the key, or the reference is
    /// malformed: only a user can fix it.
    #[error("{0}")]
    NotFound(String),
    /// The RedisCache exists but has not written its connection Secret yet: it is being
    /// created, and its watch brings the reference back once the Secret is there.
    #[error("{0}")]
    Pending(String),
    /// Reading failed (a timeout, a 5xx, a denied request, a restarting API server).
    #[error("{field}: reading {object}: {source}")]
    Unavailable {
        field: String,
        object: String,
        #[source]
        source: std::sync::Arc<kube::Error>,
    },
}

impl ResolveError {
    fn unavailable(field: &str, object: String, source: std::sync::Arc<kube::Error>) -> Self {
        Self::Unavailable {
            field: field.to_string(),
            object,
            source,
        }
    }
}

/// An object a broker reference may read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Read<'a> {
    Secret(&'a str),
    RedisCache(&'a str),
}

/// Whether resolving `r` reads `object` (in the reference's namespace): a RedisCache
/// reference reads the RedisCache and its connection Secret.
pub(crate) fn reads(r: &BrokerRef, object: Read<'_>) -> bool {
    match object {
        Read::RedisCache(name) => r.redis_cache.as_deref() == Some(name),
        Read::Secret(name) => {
            r.secret_key_ref.as_ref().is_some_and(|s| s.name == name)
                || r.redis_cache
                    .as_deref()
                    .is_some_and(|rc| connection_secret_name(rc) == name)
        }
    }
}

/// The objects of `store` whose broker references (`refs`) read an object that changed (a
/// rotated password, a RedisCache that became Ready): reconciled at once, not at their
/// resync.
pub(crate) fn referencing<K>(
    ctx: &Context,
    store: reflector::Store<K>,
    refs: fn(&K) -> Vec<&BrokerRef>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let (mut secrets, mut caches) = (ctx.secrets.changes(), ctx.redis_caches.changes());
    tokio::spawn(async move {
        loop {
            // A listener that fell behind (Lagged) takes the next change; the resync covers
            // what it missed.
            let (ns, name, secret) = tokio::select! {
                Ok((ns, name)) = secrets.recv() => (ns, name, true),
                Ok((ns, name)) = caches.recv() => (ns, name, false),
                else => return,
            };
            let read = if secret {
                Read::Secret(&name)
            } else {
                Read::RedisCache(&name)
            };
            for obj in store.state() {
                if obj.meta().namespace.as_deref() == Some(ns.as_str())
                    && refs(&obj).into_iter().any(|r| reads(r, read))
                    && tx.unbounded_send(ObjectRef::from_obj(&*obj)).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

/// Checks that what `r` points at exists and reads its URL; `field` names the spec field
/// (`spec.broker`) in the error. Reads go through the context's read caches: an object is
/// fetched once per version, however many references name it.
pub async fn resolve(
    ctx: &Context,
    ns: &str,
    field: &str,
    r: &BrokerRef,
) -> Result<Resolved, ResolveError> {
    match (&r.redis_cache, &r.secret_key_ref) {
        (Some(name), None) => {
            let field = format!("{field}.redisCache");
            let Some(cache) =
                ctx.redis_caches.get_opt(ns, name).await.map_err(|e| {
                    ResolveError::unavailable(&field, format!("RedisCache {name}"), e)
                })?
            else {
                return Err(ResolveError::NotFound(format!(
                    "{field}: RedisCache {name} not found"
                )));
            };
            let connection_secret = connection_secret_name(name);
            let read = ctx
                .secrets
                .get_opt(ns, &connection_secret)
                .await
                .map_err(|e| {
                    ResolveError::unavailable(&field, format!("Secret {connection_secret}"), e)
                })?;
            let base = read
                .as_deref()
                .and_then(|s| secret_value(s, BASE_URL_KEY))
                .ok_or_else(|| {
                    ResolveError::Pending(format!(
                        "{field}: RedisCache {name} is being created: its connection Secret is not written yet"
                    ))
                })?;
            let database = r.database.unwrap_or(0);
            let secret_key = |key| read.as_deref().and_then(|s| secret_value(s, key));
            let sentinels = secret_key(SENTINELS_KEY).zip(secret_key(MASTER_NAME_KEY));
            let url = match sentinels {
                // Replicated: the operator's own connections follow the Sentinels, as
                // kombu's do, instead of waiting for the client Service's label to move.
                Some((sentinels, master)) if cache.spec.replication.is_some() => {
                    BrokerUrl::via_sentinels(&base, &sentinels, &master, database)
                }
                _ => BrokerUrl::new(format!("{}/{database}", base.trim_end_matches('/'))),
            };
            Ok(Resolved {
                ready: is_true(cache.conditions(), redis_cache::status::READY),
                url,
                secret: (connection_secret.clone(), version(read.as_deref())),
                broker: ResolvedBroker::RedisCache {
                    connection_secret,
                    database,
                },
            })
        }
        (None, Some(key_ref)) => {
            let field = format!("{field}.secretKeyRef");
            let secret = ctx
                .secrets
                .get_opt(ns, &key_ref.name)
                .await
                .map_err(|e| {
                    ResolveError::unavailable(&field, format!("Secret {}", key_ref.name), e)
                })?
                .ok_or_else(|| {
                    ResolveError::NotFound(format!("{field}: Secret {} not found", key_ref.name))
                })?;
            let url = secret_value(&secret, &key_ref.key).ok_or_else(|| {
                ResolveError::NotFound(format!(
                    "{field}: Secret {} has no key {}",
                    key_ref.name, key_ref.key
                ))
            })?;
            Ok(Resolved {
                ready: true,
                url: BrokerUrl::new(url.trim()),
                secret: (key_ref.name.clone(), version(Some(&*secret))),
                broker: ResolvedBroker::SecretKey(key_ref.clone()),
            })
        }
        _ => Err(ResolveError::NotFound(format!(
            "{field}: set exactly one of redisCache or secretKeyRef"
        ))),
    }
}

fn version(secret: Option<&k8s_openapi::api::core::v1::Secret>) -> String {
    secret
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default()
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Environment variables that set `var` (e.g. `CELERY_BROKER_URL`) to the broker's URL.
/// For a RedisCache the database is appended to the Secret's base URL with Kubernetes'
/// `$(VAR)` expansion, so one connection Secret serves every database.
pub fn url_env(var: &str, broker: &ResolvedBroker) -> Vec<EnvVar> {
    match broker {
        ResolvedBroker::RedisCache {
            connection_secret,
            database,
        } => {
            let base = format!("CELERY_OPERATOR_{var}_BASE");
            vec![
                from_secret(&base, connection_secret, BASE_URL_KEY),
                EnvVar {
                    name: var.into(),
                    value: Some(format!("$({base})/{database}")),
                    ..Default::default()
                },
            ]
        }
        ResolvedBroker::SecretKey(r) => vec![from_secret(var, &r.name, &r.key)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_reads_its_secret_or_its_redis_cache_and_that_cache_s_connection_secret() {
        let by_secret = BrokerRef {
            secret_key_ref: Some(SecretKeyRef {
                name: "broker".into(),
                key: "url".into(),
            }),
            ..BrokerRef::default()
        };
        let by_cache = BrokerRef {
            redis_cache: Some("cache".into()),
            ..BrokerRef::default()
        };
        assert!(reads(&by_secret, Read::Secret("broker")));
        assert!(!reads(&by_secret, Read::Secret("other")));
        assert!(!reads(&by_secret, Read::RedisCache("broker")));
        assert!(reads(&by_cache, Read::RedisCache("cache")));
        assert!(reads(
            &by_cache,
            Read::Secret(&connection_secret_name("cache"))
        ));
        assert!(!reads(&by_cache, Read::Secret("cache")));
    }

    #[test]
    fn redis_cache_url_is_the_base_url_plus_database_by_expansion() {
        let env = url_env(
            "CELERY_BROKER_URL",
            &ResolvedBroker::RedisCache {
                connection_secret: "broker-connection".into(),
                database: 2,
            },
        );
        assert_eq!(env.len(), 2);
        assert_eq!(env[0].name, "CELERY_OPERATOR_CELERY_BROKER_URL_BASE");
        let sel = env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret");
        assert_eq!(
            (sel.name.as_str(), sel.key.as_str()),
            ("broker-connection", "baseUrl")
        );
        assert_eq!(env[1].name, "CELERY_BROKER_URL");
        assert_eq!(
            env[1].value.as_deref(),
            Some("$(CELERY_OPERATOR_CELERY_BROKER_URL_BASE)/2")
        );
    }

    #[test]
    fn secret_key_url_is_read_whole() {
        let env = url_env(
            "CELERY_RESULT_BACKEND",
            &ResolvedBroker::SecretKey(SecretKeyRef {
                name: "urls".into(),
                key: "results".into(),
            }),
        );
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "CELERY_RESULT_BACKEND");
        assert_eq!(env[0].value, None, "never inlined");
        let sel = env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret");
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("urls", "results"));
    }
}
