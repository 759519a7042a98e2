//! The Sentinels' StatefulSet: `replication.sentinels` pods of `redis-server --sentinel` that
//! watch the primary and promote a replica when a majority of them lose it.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::services::{sentinel_headless_service_name, sentinel_name};
use super::settings::{SENTINEL_PORT, Settings};
use super::stateful_set::{
    env_value, exec_probe, locked_down, password_env, redis_user, replication_env,
    spread_over_nodes,
};
use crate::api::redis_cache::Replication;
use crate::controller::labels::OwnedBy;

/// Sentinel rewrites its config on every change of state, so it runs from a copy written at
/// each start into an emptyDir. A restarted Sentinel follows the primary its peers name (one
/// that failed over while it was away is kept); a new set watches pod 0. It announces its
/// pod's DNS name, as the Redis pods do, so pods that come back with new IPs stay known.
/// The passwords, when there are, guard the Sentinel too (the password Secret's and the
/// clients', which differ only during a rotation), and reach it only through this file in
/// the pod; its links to Redis and to the other Sentinels use the clients'.
pub(crate) const SENTINEL_START_SCRIPT: &str = r#"me="$(hostname).$SENTINEL_SERVICE.$POD_NAMESPACE.svc"
primary=""
for n in $(seq 0 $((SENTINELS - 1))); do
  peer="$SENTINEL_SET-$n.$SENTINEL_SERVICE.$POD_NAMESPACE.svc"
  [ "$peer" = "$me" ] && continue
  reply=$(redis-cli -h "$peer" -p 26379 --raw SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1)
  case "$reply" in ""|*[!a-zA-Z0-9.-]*) ;; *) primary="$reply"; break ;; esac
done
[ -n "$primary" ] || primary="$STATEFULSET-0.$HEADLESS_SERVICE.$POD_NAMESPACE.svc"
echo "primary: $primary"
conf=/sentinel/sentinel.conf
{
  echo "port 26379"
  echo "dir /sentinel"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $me"
  echo "sentinel monitor $MASTER_NAME $primary 6379 $QUORUM"
  echo "sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS"
  echo "sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS"
  echo "sentinel parallel-syncs $MASTER_NAME 1"
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    quoted() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
    wanted=$(quoted "$REDIS_PASSWORD")
    in_use=$(quoted "$REDISCLI_AUTH")
    echo "user default on \">$wanted\" \">$in_use\" ~* &* +@all"
    echo "sentinel sentinel-pass \"$in_use\""
    echo "sentinel auth-pass $MASTER_NAME \"$in_use\""
  fi
} > "$conf"
exec redis-server "$conf" --sentinel"#;

/// How many Sentinels must agree that the primary is down: a majority.
pub(crate) fn quorum(r: &Replication) -> i32 {
    r.sentinels / 2 + 1
}

/// The StatefulSet, or None without replication. `sentinel` is the Sentinels' owner view,
/// `redis` the Redis pods' (whose names the Sentinels start from).
pub(crate) fn build(
    redis: &OwnedBy,
    sentinel: &OwnedBy,
    settings: &Settings,
) -> Result<Option<StatefulSet>, String> {
    let Some(r) = &settings.replication else {
        return Ok(None);
    };
    let mut env = password_env(&settings.auth, &redis.name);
    env.extend(replication_env(redis, r)?);
    env.push(env_value("QUORUM", quorum(r).to_string()));
    let container = Container {
        name: "sentinel".into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), SENTINEL_START_SCRIPT.into()]),
        ports: Some(vec![ContainerPort {
            name: Some("sentinel".into()),
            container_port: SENTINEL_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(env),
        readiness_probe: Some(exec_probe(SENTINEL_PORT, 2, 5)),
        liveness_probe: Some(exec_probe(SENTINEL_PORT, 15, 10)),
        volume_mounts: Some(vec![VolumeMount {
            name: "sentinel".into(),
            mount_path: "/sentinel".into(),
            ..Default::default()
        }]),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    Ok(Some(StatefulSet {
        metadata: sentinel.meta(sentinel_name(&redis.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(r.sentinels),
            service_name: Some(sentinel_headless_service_name(&redis.name)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(sentinel.selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(sentinel.labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "sentinel".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    security_context: Some(redis_user()),
                    automount_service_account_token: Some(false),
                    affinity: Some(spread_over_nodes(&sentinel.selector)),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::settings::resolve;
    use super::*;
    use crate::api::redis_cache::RedisCacheSpec;

    fn owner(app: &str) -> OwnedBy {
        OwnedBy {
            name: "broker".into(),
            namespace: "shop".into(),
            selector: BTreeMap::from([("app.kubernetes.io/name".to_string(), app.to_string())]),
            ..Default::default()
        }
    }

    fn replicated(sentinels: i32, down_after: &str) -> Settings {
        resolve(&RedisCacheSpec {
            replication: Some(Replication {
                sentinels,
                down_after: down_after.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("valid")
    }

    fn env(sts: &StatefulSet) -> BTreeMap<String, Option<String>> {
        sts.spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    #[test]
    fn sentinels_are_a_majority_quorum_watching_the_redis_set_with_the_chosen_down_after() {
        let sts = build(
            &owner("redis"),
            &owner("redis-sentinel"),
            &replicated(5, "3s"),
        )
        .expect("valid")
        .expect("replicated");
        let spec = sts.spec.as_ref().expect("spec");
        assert_eq!(sts.metadata.name.as_deref(), Some("broker-sentinel"));
        assert_eq!(spec.replicas, Some(5));
        assert_eq!(
            spec.service_name.as_deref(),
            Some("broker-sentinel-headless")
        );
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/name")),
            Some(&"redis-sentinel".to_string()),
            "never the Redis pods' selector"
        );
        let env = env(&sts);
        let value = |k: &str| env.get(k).cloned().flatten();
        assert_eq!(value("QUORUM").as_deref(), Some("3"));
        assert_eq!(value("DOWN_AFTER_MS").as_deref(), Some("3000"));
        assert_eq!(value("MASTER_NAME").as_deref(), Some("broker"));
        assert_eq!(value("STATEFULSET").as_deref(), Some("broker"));
        assert_eq!(
            value("SENTINEL_SERVICE").as_deref(),
            Some("broker-sentinel-headless")
        );
        assert!(
            env.contains_key("REDIS_PASSWORD"),
            "from the Secret: {env:?}"
        );
        assert_eq!(env.get("REDIS_PASSWORD"), Some(&None), "never a literal");
    }

    #[test]
    fn no_sentinels_without_replication() {
        let settings = resolve(&RedisCacheSpec::default()).expect("valid");
        assert_eq!(
            build(&owner("redis"), &owner("redis-sentinel"), &settings),
            Ok(None)
        );
    }
}
