//! RedisCache status, computed from the owned StatefulSet.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;

use super::primary::PrimaryView;
use super::secrets::{connection_secret_name, service_host};
use super::settings::REDIS_PORT;
use crate::api::redis_cache::{RedisCache, RedisCacheStatus, RedisReplica};
use crate::controller::conditions::{Conditioned, Observed, merge, rolled_out};

pub(crate) const READY: &str = "Ready";

pub(crate) const PRIMARY: &str = "Primary";

/// What the servers told this reconcile.
#[derive(Default)]
pub(crate) struct FromServers<'a> {
    /// What the Sentinels said (None without replication).
    pub(crate) primary: Option<&'a PrimaryView>,
    /// What the primary said of its replicas.
    pub(crate) replicas: Vec<RedisReplica>,
    /// Where a password rotation is (None for a cache whose password never changed).
    pub(crate) rotation: Option<Observed>,
}

/// Status of a RedisCache whose objects were applied; `sts` is the applied StatefulSet.
pub(crate) fn observed(
    rc: &RedisCache,
    namespace: &str,
    sts: &StatefulSet,
    FromServers {
        primary,
        replicas,
        rotation,
    }: FromServers<'_>,
    now: Timestamp,
) -> RedisCacheStatus {
    let name = rc.metadata.name.clone().unwrap_or_default();
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let status = sts.status.as_ref();
    let pods = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let rolled_out = rolled_out(
        sts.metadata.generation,
        status.and_then(|s| s.observed_generation),
        status.and_then(|s| s.updated_replicas),
        pods,
    );
    let mut conditions = Vec::new();
    if let Some(view) = primary {
        conditions.push(match view {
            PrimaryView::Named(pod) => Observed::new(
                PRIMARY,
                true,
                "Elected",
                format!("the Sentinels name {pod} as primary"),
            ),
            PrimaryView::Unknown(why) => Observed::new(PRIMARY, false, "NoPrimary", why.clone()),
        });
    }
    let no_primary = matches!(primary, Some(PrimaryView::Unknown(_)));
    let condition = match (ready >= 1, rolled_out) {
        (true, _) if no_primary => Observed::new(
            READY,
            false,
            "NoPrimary",
            "no primary takes writes: see the Primary condition",
        ),
        (true, true) => Observed::new(READY, true, "RedisReady", "Redis answers PING"),
        (true, false) => Observed::new(
            READY,
            true,
            "RollingOut",
            "Redis answers PING; a new revision is rolling out",
        ),
        (false, _) => Observed::new(
            READY,
            false,
            "PodNotReady",
            format!("{ready}/{pods} Redis pods ready"),
        ),
    };
    conditions.insert(0, condition);
    conditions.extend(rotation);
    RedisCacheStatus {
        observed_generation: rc.metadata.generation,
        ready_replicas: Some(ready),
        endpoint: Some(format!("{}:{REDIS_PORT}", service_host(&name, namespace))),
        connection_secret: Some(connection_secret_name(&name)),
        primary: match primary {
            Some(PrimaryView::Named(pod)) => Some(pod.clone()),
            _ => None,
        },
        replicas,
        conditions: merge(rc.conditions(), conditions, rc.metadata.generation, now),
    }
}

/// Status of a RedisCache that could not be reconciled, keeping what was known.
pub(crate) fn failed(
    rc: &RedisCache,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> RedisCacheStatus {
    let old = rc.status.clone().unwrap_or_default();
    RedisCacheStatus {
        observed_generation: rc.metadata.generation,
        conditions: merge(
            rc.conditions(),
            vec![Observed::new(READY, false, reason, message)],
            rc.metadata.generation,
            now,
        ),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::redis_cache::RedisCacheSpec;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rc() -> RedisCache {
        let mut rc = RedisCache::new("cache", RedisCacheSpec::default());
        rc.metadata.generation = Some(3);
        rc
    }

    fn sts(ready: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(2),
                ready_replicas: Some(ready),
                updated_replicas: Some(1),
                replicas: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_when_the_pod_is_ready() {
        let s = observed(
            &rc(),
            "shop",
            &sts(1),
            FromServers::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.ready_replicas, Some(1));
        assert_eq!(s.endpoint.as_deref(), Some("cache.shop.svc:6379"));
        assert_eq!(s.connection_secret.as_deref(), Some("cache-connection"));
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].reason, "RedisReady");
    }

    #[test]
    fn not_ready_names_the_count() {
        let s = observed(
            &rc(),
            "shop",
            &sts(0),
            FromServers::default(),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].message, "0/1 Redis pods ready");
    }

    #[test]
    fn a_replicated_cache_is_ready_only_with_a_primary_and_names_it() {
        let named = PrimaryView::Named("cache-1".into());
        let s = observed(
            &rc(),
            "shop",
            &sts(1),
            FromServers {
                primary: Some(&named),
                ..Default::default()
            },
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.primary.as_deref(), Some("cache-1"));
        assert_eq!(s.conditions[0].status, "True", "{:?}", s.conditions);
        let primary = s
            .conditions
            .iter()
            .find(|c| c.type_ == PRIMARY)
            .expect("Primary");
        assert_eq!(
            (primary.status.as_str(), primary.reason.as_str()),
            ("True", "Elected")
        );

        let lost = PrimaryView::Unknown("the Sentinels know no primary yet".into());
        let s = observed(
            &rc(),
            "shop",
            &sts(1),
            FromServers {
                primary: Some(&lost),
                ..Default::default()
            },
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.primary, None);
        assert_eq!(
            (
                s.conditions[0].status.as_str(),
                s.conditions[0].reason.as_str()
            ),
            ("False", "NoPrimary")
        );
        let primary = s
            .conditions
            .iter()
            .find(|c| c.type_ == PRIMARY)
            .expect("Primary");
        assert_eq!(primary.message, "the Sentinels know no primary yet");
    }
}
