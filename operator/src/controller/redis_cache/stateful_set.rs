//! The Redis StatefulSet: one non-root pod, config from the ConfigMap, password from a
//! Secret, probes by `redis-cli ping`, and a checksum annotation so a config change rolls it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::config_map::{CONFIG_KEY, config_map_name};
use super::secrets::{PASSWORD_KEY, password_secret_name};
use super::services::headless_service_name;
use super::settings::{AuthSettings, REDIS_PORT, Settings};
use crate::api::redis_cache::PersistenceMode;
use crate::api::shared::PodOverrides;
use crate::controller::labels::OwnedBy;

/// Pod template annotation holding the redis.conf checksum.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "celeryoperator.io/config-checksum";
/// uid/gid of the `redis` user in the official images.
const REDIS_UID: i64 = 999;

/// The container's start command: the password, when there is one, comes from the
/// environment so it is in neither the ConfigMap nor the pod spec.
pub const START_SCRIPT: &str = r#"set -- redis-server /etc/redis/redis.conf
if [ -n "${REDIS_PASSWORD:-}" ]; then set -- "$@" --requirepass "$REDIS_PASSWORD"; fi
exec "$@""#;

/// `redis-cli` reads the password from REDISCLI_AUTH, so it never shows in the probe.
const PING_SCRIPT: &str = "redis-cli -p 6379 ping | grep -q PONG";

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

fn exec_probe(initial_delay: i32, period: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), PING_SCRIPT.into()]),
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

pub fn build(i: Inputs<'_>) -> StatefulSet {
    let s = i.settings;
    let persistent = s.persistence != PersistenceMode::None;
    let mut env = Vec::new();
    if let Some(source) = password_source(&s.auth, &i.owner.name) {
        env.push(EnvVar {
            name: "REDIS_PASSWORD".into(),
            value_from: Some(source.clone()),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "REDISCLI_AUTH".into(),
            value_from: Some(source),
            ..Default::default()
        });
    }
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
        command: Some(vec!["sh".into(), "-c".into(), START_SCRIPT.into()]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: (!env.is_empty()).then_some(env),
        readiness_probe: Some(exec_probe(2, 5)),
        liveness_probe: Some(exec_probe(15, 10)),
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
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
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
    StatefulSet {
        metadata: i.owner.meta(i.owner.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
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
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(REDIS_UID),
                        run_as_group: Some(REDIS_UID),
                        fs_group: Some(REDIS_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    automount_service_account_token: Some(false),
                    ..pod.scheduling()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
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
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone());
        assert_eq!(
            probe,
            Some(vec!["sh".into(), "-c".into(), PING_SCRIPT.into()])
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
