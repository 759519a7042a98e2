//! The Redis StatefulSet: one non-root pod (with replication: a primary and its replicas,
//! spread over nodes), config from the ConfigMap, password from a Secret, probes by
//! `redis-cli ping`, and a checksum annotation so a config change rolls it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::config_map::{CONFIG_KEY, config_map_name};
use super::secrets::{PASSWORD_KEY, connection_secret_name, password_secret_name};
use super::services::{headless_service_name, sentinel_headless_service_name, sentinel_name};
use super::settings::{AuthSettings, REDIS_PORT, Settings, down_after_ms};
use crate::api::redis_cache::{PersistenceMode, Replication};
use crate::api::shared::PodOverrides;
use crate::controller::labels::OwnedBy;

/// Pod template annotation holding the redis.conf checksum.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "celeryoperator.io/config-checksum";
/// uid/gid of the `redis` user in the official images.
const REDIS_UID: i64 = 999;

/// The container's start command: the passwords, when there are, come from the environment
/// so they are in neither the ConfigMap nor the pod spec. It accepts both the password
/// Secret's (`REDIS_PASSWORD`) and the clients' (`REDISCLI_AUTH`, from the connection
/// Secret): they differ only during a rotation (see `password.rs`).
pub const START_SCRIPT: &str = r#"set -- redis-server /etc/redis/redis.conf
if [ -n "${REDIS_PASSWORD:-}" ]; then
  set -- "$@" --user default on ">$REDIS_PASSWORD" ">$REDISCLI_AUTH" '~*' '&*' '+@all'
fi
exec "$@""#;

/// The start of a replicated pod: whoever the Sentinels name as primary is followed, so a
/// returning old primary starts as a replica of the new one instead of taking writes. A pod
/// the Sentinels still name while it starts is the primary that just went away: its
/// replicas may hold writes it lost (AOF syncs every second), so it waits for a promotion
/// and takes the role back only if none comes. The wait (`downAfter`, two failover timeouts
/// and 10 s) outlasts a failed first attempt: Sentinels whose votes split try again only
/// after twice the failover timeout. Only when no
/// Sentinel answers within 30 s (a new set whose Sentinels still start, or all of them lost)
/// does pod 0 start as primary and the others follow it.
pub const REPLICATED_START_SCRIPT: &str = r#"me="$(hostname).$HEADLESS_SERVICE.$POD_NAMESPACE.svc"
set -- redis-server /etc/redis/redis.conf --replica-announce-ip "$me"
if [ -n "${REDIS_PASSWORD:-}" ]; then
  set -- "$@" --user default on ">$REDIS_PASSWORD" ">$REDISCLI_AUTH" '~*' '&*' '+@all' --masterauth "$REDISCLI_AUTH"
fi
sentinel() {
  for n in $(seq 0 $((SENTINELS - 1))); do
    redis-cli -h "$SENTINEL_SET-$n.$SENTINEL_SERVICE.$POD_NAMESPACE.svc" -p 26379 --raw SENTINEL "$@" 2>/dev/null && return
  done
}
ask() {
  reply=$(sentinel get-master-addr-by-name "$MASTER_NAME" | head -n 1)
  case "$reply" in ""|*[!a-zA-Z0-9.-]*) ;; *) echo "$reply" ;; esac
}
primary=$(ask)
tries=0
while [ -z "$primary" ] && [ "$tries" -lt 30 ]; do
  sleep 1; tries=$((tries + 1)); primary=$(ask)
done
if [ "$primary" = "$me" ] && sentinel replicas "$MASTER_NAME" | grep -q '^name$'; then
  waited=0
  while [ "$primary" = "$me" ] && [ "$waited" -lt $(((DOWN_AFTER_MS + 2 * FAILOVER_TIMEOUT_MS) / 1000 + 10)) ]; do
    sleep 1; waited=$((waited + 1)); primary=$(ask); [ -n "$primary" ] || primary="$me"
  done
fi
[ -n "$primary" ] || primary="$STATEFULSET-0.$HEADLESS_SERVICE.$POD_NAMESPACE.svc"
echo "primary: $primary"
if [ "$primary" != "$me" ]; then set -- "$@" --replicaof "$primary" 6379; fi
exec "$@""#;

/// `redis-cli` reads the password from REDISCLI_AUTH, so it never shows in the probe. A
/// server that refuses that password answers too: the environment is fixed at start and a
/// rotation may have dropped the password since.
fn ping_script(port: i32) -> String {
    format!(
        r#"case "$(redis-cli -p {port} ping 2>&1)" in *PONG*|*WRONGPASS*) ;; *) exit 1 ;; esac"#
    )
}

pub struct Inputs<'a> {
    pub owner: &'a OwnedBy,
    pub settings: &'a Settings,
    pub config_checksum: String,
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    pub pod: Option<&'a PodOverrides>,
}

fn password_source(auth: &AuthSettings, name: &str) -> Option<EnvVarSource> {
    let (secret, key) = match auth {
        AuthSettings::Disabled => return None,
        AuthSettings::Generated => (password_secret_name(name), PASSWORD_KEY.to_string()),
        AuthSettings::Existing(r) => (r.name.clone(), r.key.clone()),
    };
    Some(EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: secret,
            key,
            optional: Some(false),
        }),
        ..Default::default()
    })
}

/// `REDIS_PASSWORD`, the password Secret's, and `REDISCLI_AUTH`, the connection Secret's
/// (the one clients use, which every server accepts even during a rotation): redis-cli,
/// `masterauth` and the Sentinels' links use the latter.
pub(crate) fn password_env(auth: &AuthSettings, name: &str) -> Vec<EnvVar> {
    let Some(source) = password_source(auth, name) else {
        return Vec::new();
    };
    let in_use = EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: connection_secret_name(name),
            key: PASSWORD_KEY.to_string(),
            optional: Some(false),
        }),
        ..Default::default()
    };
    [("REDIS_PASSWORD", source), ("REDISCLI_AUTH", in_use)]
        .into_iter()
        .map(|(var, source)| EnvVar {
            name: var.into(),
            value_from: Some(source),
            ..Default::default()
        })
        .collect()
}

/// A container that may write only its volumes, with no privilege.
pub(crate) fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pods run as the image's `redis` user.
pub(crate) fn redis_user() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(REDIS_UID),
        run_as_group: Some(REDIS_UID),
        fs_group: Some(REDIS_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn exec_probe(port: i32, initial_delay: i32, period: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), ping_script(port)]),
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// An environment variable with a literal value.
pub(crate) fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// `POD_NAMESPACE`, from the downward API.
pub(crate) fn pod_namespace_env() -> EnvVar {
    EnvVar {
        name: "POD_NAMESPACE".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.namespace".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Sentinels' `failover-timeout`: how long a failover may take before it is given up,
/// and half the time before the next attempt (Sentinel's default is 3 minutes). Promoting a
/// replica takes milliseconds; a second attempt after 8 s instead of 6 minutes is what
/// keeps a split vote short.
pub(crate) const FAILOVER_TIMEOUT_MS: u64 = 4_000;

/// What a replicated pod's start needs to find the Sentinels and the first primary.
pub(crate) fn replication_env(owner: &OwnedBy, r: &Replication) -> Result<Vec<EnvVar>, String> {
    Ok(vec![
        pod_namespace_env(),
        env_value("HEADLESS_SERVICE", headless_service_name(&owner.name)),
        env_value("STATEFULSET", owner.name.clone()),
        env_value("SENTINEL_SET", sentinel_name(&owner.name)),
        env_value(
            "SENTINEL_SERVICE",
            sentinel_headless_service_name(&owner.name),
        ),
        env_value("SENTINELS", r.sentinels.to_string()),
        env_value("MASTER_NAME", owner.name.clone()),
        env_value("DOWN_AFTER_MS", down_after_ms(r)?.to_string()),
        env_value("FAILOVER_TIMEOUT_MS", FAILOVER_TIMEOUT_MS.to_string()),
    ])
}

/// Pods of one set on different nodes where the cluster has them (preferred, so one node
/// still runs them all), unless `spec.pod.affinity` says otherwise.
pub(crate) fn spread_over_nodes(selector: &BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build(i: Inputs<'_>) -> Result<StatefulSet, String> {
    let s = i.settings;
    let persistent = s.persistence != PersistenceMode::None;
    let mut env = password_env(&s.auth, &i.owner.name);
    let start = match &s.replication {
        Some(r) => {
            env.extend(replication_env(i.owner, r)?);
            REPLICATED_START_SCRIPT
        }
        None => START_SCRIPT,
    };
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(&i.owner.name),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: CONFIG_KEY.into(),
                path: CONFIG_KEY.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if !persistent {
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    let container = Container {
        name: "redis".into(),
        image: Some(s.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), start.into()]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: (!env.is_empty()).then_some(env),
        readiness_probe: Some(exec_probe(REDIS_PORT, 2, 5)),
        liveness_probe: Some(exec_probe(REDIS_PORT, 15, 10)),
        resources: i.resources,
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/redis".into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
        ]),
        security_context: Some(locked_down()),
        ..Default::default()
    };
    let pod = i.pod.cloned().unwrap_or_default();
    let mut annotations = pod.annotations.clone();
    annotations.insert(CONFIG_CHECKSUM_ANNOTATION.into(), i.config_checksum);
    let claim = persistent.then(|| PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(i.owner.selector.clone()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: s.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    s.volume_size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let retention = if s.keep_volume_on_delete {
        "Retain"
    } else {
        "Delete"
    };
    let mut scheduling = pod.scheduling();
    if s.replication.is_some() && scheduling.affinity.is_none() {
        scheduling.affinity = Some(spread_over_nodes(&i.owner.selector));
    }
    Ok(StatefulSet {
        metadata: i.owner.meta(i.owner.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1 + s.replication.as_ref().map_or(0, |r| r.replicas)),
            // Replicas wait for the Sentinels, not for each other.
            pod_management_policy: s.replication.as_ref().map(|_| "Parallel".into()),
            // The operator rolls a replicated set itself: replicas first, one failover.
            update_strategy: s.replication.as_ref().map(|_| StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            service_name: Some(headless_service_name(&i.owner.name)),
            selector: LabelSelector {
                match_labels: Some(i.owner.selector.clone()),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: persistent.then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            volume_claim_templates: claim.map(|c| vec![c]),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(i.owner.labels.clone()),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(redis_user()),
                    automount_service_account_token: Some(false),
                    ..scheduling
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::settings::resolve;
    use super::*;
    use crate::api::redis_cache::{Persistence, Purpose, RedisCacheSpec};

    fn build_for(spec: &RedisCacheSpec) -> StatefulSet {
        let settings = resolve(spec).expect("valid");
        build(Inputs {
            owner: &OwnedBy {
                name: "broker".into(),
                namespace: "shop".into(),
                labels: BTreeMap::from([("l".to_string(), "v".to_string())]),
                selector: BTreeMap::from([("s".to_string(), "v".to_string())]),
                ..Default::default()
            },
            settings: &settings,
            config_checksum: "abc".into(),
            resources: None,
            pod: spec.pod.as_ref(),
        })
        .expect("valid")
    }

    #[test]
    fn broker_statefulset_persists_runs_non_root_and_probes_with_auth() {
        let sts = build_for(&RedisCacheSpec {
            purpose: Purpose::Broker,
            ..Default::default()
        });
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("broker-headless"));
        let claims = spec.volume_claim_templates.expect("claims");
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        let template = spec.template;
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert_eq!(
            annotations
                .get(CONFIG_CHECKSUM_ANNOTATION)
                .map(String::as_str),
            Some("abc")
        );
        let pod = template.spec.expect("pod");
        let psc = pod.security_context.expect("psc");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(999));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("redis:7.4"));
        assert_eq!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true)
        );
        let env = c.env.as_ref().expect("env");
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["REDIS_PASSWORD", "REDISCLI_AUTH"]);
        let key_ref = env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (key_ref.name.as_str(), key_ref.key.as_str()),
            ("broker-password", "password")
        );
        let in_use = env[1]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (in_use.name.as_str(), in_use.key.as_str()),
            ("broker-connection", "password"),
            "redis-cli and the links between servers use the clients' password, which every server accepts during a rotation"
        );
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone());
        assert_eq!(
            probe,
            Some(vec!["sh".into(), "-c".into(), ping_script(6379)])
        );
        assert!(
            pod.volumes
                .expect("volumes")
                .iter()
                .all(|v| v.name != "data"),
            "data is a claim, not emptyDir"
        );
    }

    #[test]
    fn a_replicated_set_starts_its_pods_at_once_spread_out_asking_the_sentinels() {
        let sts = build_for(&RedisCacheSpec {
            purpose: Purpose::Broker,
            replication: Some(crate::api::redis_cache::Replication::default()),
            ..Default::default()
        });
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3), "the primary and two replicas");
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.and_then(|u| u.type_).as_deref(),
            Some("OnDelete"),
            "the operator rolls it"
        );
        let pod = spec.template.spec.expect("pod");
        let anti = pod
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .expect("preferred anti-affinity");
        assert_eq!(
            anti[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_ref().map(|c| c[2].as_str()),
            Some(REPLICATED_START_SCRIPT)
        );
        let env: BTreeMap<_, _> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(env.get("SENTINEL_SET"), Some(&Some("broker-sentinel")));
        assert_eq!(env.get("SENTINELS"), Some(&Some("3")));
        assert_eq!(env.get("HEADLESS_SERVICE"), Some(&Some("broker-headless")));
        assert_eq!(
            env.get("POD_NAMESPACE"),
            Some(&None),
            "from the downward API"
        );

        let single = build_for(&RedisCacheSpec::default()).spec.expect("spec");
        assert_eq!(single.replicas, Some(1));
        assert_eq!(
            single.pod_management_policy, None,
            "unchanged for existing caches"
        );
        assert_eq!(
            single.template.spec.expect("pod").affinity,
            None,
            "one pod: nothing to spread"
        );
    }

    #[test]
    fn cache_without_persistence_uses_empty_dir_and_kept_claims_are_retained() {
        let sts = build_for(&RedisCacheSpec::default());
        let spec = sts.spec.expect("spec");
        assert!(spec.volume_claim_templates.is_none());
        let volumes = spec.template.spec.expect("pod").volumes.expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "data" && v.empty_dir.is_some())
        );

        let kept = build_for(&RedisCacheSpec {
            persistence: Some(Persistence {
                mode: PersistenceMode::Rdb,
                keep_on_delete: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let policy = kept
            .spec
            .and_then(|s| s.persistent_volume_claim_retention_policy)
            .expect("policy");
        assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
    }

    #[test]
    fn pod_overrides_reach_the_pod_and_the_checksum_survives_user_annotations() {
        use k8s_openapi::api::core::v1::Toleration;

        let toleration = Toleration {
            key: Some("redis".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let sts = build_for(&RedisCacheSpec {
            pod: Some(PodOverrides {
                annotations: BTreeMap::from([
                    ("scrape".to_string(), "true".to_string()),
                    (CONFIG_CHECKSUM_ANNOTATION.to_string(), "forged".to_string()),
                ]),
                node_selector: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
                tolerations: vec![toleration.clone()],
                affinity: None,
            }),
            ..Default::default()
        });
        let template = sts.spec.expect("spec").template;
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert_eq!(annotations.get("scrape").map(String::as_str), Some("true"));
        assert_eq!(
            annotations
                .get(CONFIG_CHECKSUM_ANNOTATION)
                .map(String::as_str),
            Some("abc"),
            "the operator's checksum wins, so config changes still roll the pod"
        );
        let pod = template.spec.expect("pod");
        assert_eq!(
            pod.node_selector,
            Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]))
        );
        assert_eq!(pod.tolerations, Some(vec![toleration]));
        assert_eq!(pod.affinity, None);
    }
}
