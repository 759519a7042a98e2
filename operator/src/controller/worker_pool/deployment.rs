//! The worker Deployment: `celery -A <app> worker` with exactly the flags the spec implies.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::api::worker_pool::{
    DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS, LogLevel, WorkerPoolKind, WorkerPoolSpec,
};
use crate::controller::labels::OwnedBy;

/// The worker's argv after `celery`.
pub fn worker_args(spec: &WorkerPoolSpec) -> Vec<String> {
    let mut args = vec![
        "-A".to_string(),
        spec.app.clone(),
        "worker".into(),
        format!(
            "--loglevel={}",
            log_level(spec.log_level.unwrap_or(LogLevel::Info))
        ),
        format!("--queues={}", spec.queues.join(",")),
    ];
    if let Some(n) = spec.concurrency {
        args.push(format!("--concurrency={n}"));
    }
    if let Some(pool) = spec.pool {
        args.push(format!("--pool={}", pool_name(pool)));
    }
    if let Some(n) = spec.prefetch_multiplier {
        args.push(format!("--prefetch-multiplier={n}"));
    }
    if let Some(n) = spec.max_tasks_per_child {
        args.push(format!("--max-tasks-per-child={n}"));
    }
    if let Some(n) = spec.max_memory_per_child {
        args.push(format!("--max-memory-per-child={n}"));
    }
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// `celery worker` options the operator sets from the spec, and the field that sets each.
const OWNED_FLAGS: &[(&[&str], &str)] = &[
    (&["-l", "--loglevel"], "spec.logLevel"),
    (&["-Q", "--queues"], "spec.queues"),
    (&["-c", "--concurrency"], "spec.concurrency"),
    (&["-P", "--pool"], "spec.pool"),
    (&["--prefetch-multiplier"], "spec.prefetchMultiplier"),
    (&["--max-tasks-per-child"], "spec.maxTasksPerChild"),
    (&["--max-memory-per-child"], "spec.maxMemoryPerChild"),
];

/// `celery` options that only go before `worker` (after it, Celery exits 2); the operator
/// sets the app and the broker URLs come from the environment.
const GLOBAL_FLAGS: &[&str] = &[
    "-A",
    "--app",
    "-b",
    "--broker",
    "--result-backend",
    "--config",
    "--workdir",
];

/// Each `extraArgs` entry that clashes with what the operator sets, or that Celery refuses
/// after `worker`.
pub fn extra_args_problems(spec: &WorkerPoolSpec) -> Vec<String> {
    let takes = |arg: &str, flag: &str| {
        arg == flag
            || arg.strip_prefix(flag).is_some_and(|rest| {
                // `--pool=solo`, or a short flag glued to its value (`-Psolo`).
                rest.starts_with('=') || (!flag.starts_with("--") && !rest.is_empty())
            })
    };
    spec.extra_args
        .iter()
        .enumerate()
        .filter_map(|(i, arg)| {
            if let Some((_, field)) = OWNED_FLAGS
                .iter()
                .find(|(flags, _)| flags.iter().any(|f| takes(arg, f)))
            {
                return Some(format!(
                    "spec.extraArgs[{i}]: {arg} is set by {field}; use that field"
                ));
            }
            GLOBAL_FLAGS.iter().find(|f| takes(arg, f)).map(|f| {
                format!(
                    "spec.extraArgs[{i}]: {f} is a `celery` option, not a `worker` one; the operator sets the app (spec.app) and the broker (spec.broker)"
                )
            })
        })
        .collect()
}

fn log_level(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warning => "WARNING",
        LogLevel::Error => "ERROR",
        LogLevel::Critical => "CRITICAL",
    }
}

fn pool_name(p: WorkerPoolKind) -> &'static str {
    match p {
        WorkerPoolKind::Prefork => "prefork",
        WorkerPoolKind::Threads => "threads",
        WorkerPoolKind::Solo => "solo",
        WorkerPoolKind::Gevent => "gevent",
        WorkerPoolKind::Eventlet => "eventlet",
    }
}

pub struct Inputs<'a> {
    pub owner: &'a OwnedBy,
    pub spec: &'a WorkerPoolSpec,
    /// `spec.replicas`, or the autoscaler's decision.
    pub replicas: i32,
    /// Broker and result backend URL variables (from Secrets), set before the user's env so
    /// the user's variables can refer to them.
    pub url_env: Vec<EnvVar>,
    /// The Secrets those URLs come from, by name, and the resourceVersion each was read at.
    pub secret_versions: BTreeMap<String, String>,
}

/// Pod template annotation `name=resourceVersion,...` of the Secrets the broker URLs come
/// from: a new version (a rotated password) rolls the workers, which read env only at start.
pub const SECRET_VERSIONS_ANNOTATION: &str = "celeryoperator.io/secret-versions";

pub fn build(i: Inputs<'_>) -> Deployment {
    let spec = i.spec;
    let pod = spec.pod.clone().unwrap_or_default();
    let mut env = i.url_env;
    env.extend(spec.env.iter().cloned());
    let container = Container {
        name: "worker".into(),
        image: Some(spec.image.clone()),
        command: Some(vec!["celery".into()]),
        args: Some(worker_args(spec)),
        env: (!env.is_empty()).then_some(env),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Deployment {
        metadata: i.owner.meta(i.owner.name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(i.replicas),
            selector: LabelSelector {
                match_labels: Some(i.owner.selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(i.owner.labels.clone()),
                    annotations: {
                        let mut annotations = pod.annotations.clone();
                        if !i.secret_versions.is_empty() {
                            let versions: Vec<String> = i
                                .secret_versions
                                .iter()
                                .map(|(name, version)| format!("{name}={version}"))
                                .collect();
                            annotations
                                .insert(SECRET_VERSIONS_ANNOTATION.into(), versions.join(","));
                        }
                        (!annotations.is_empty()).then_some(annotations)
                    },
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(
                        spec.termination_grace_period_seconds
                            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS),
                    ),
                    security_context: Some(k8s_openapi::api::core::v1::PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
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

    #[test]
    fn extra_args_that_clash_with_the_operators_flags_are_named() {
        let mut s = spec();
        s.extra_args = vec![
            "--without-gossip".into(),
            "--pool=solo".into(),
            "-A".into(),
            "other".into(),
            "-Qfoo".into(),
            "--concurrency".into(),
            "--loglevel-x".into(),
        ];
        let problems = extra_args_problems(&s);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("spec.extraArgs[1]: --pool=solo is set by spec.pool"));
        assert!(problems[1].starts_with("spec.extraArgs[2]: -A is a `celery` option"));
        assert!(problems[2].starts_with("spec.extraArgs[4]: -Qfoo is set by spec.queues"));
        assert!(
            problems[3].starts_with("spec.extraArgs[5]: --concurrency is set by spec.concurrency")
        );
    }

    use super::*;
    use crate::api::shared::BrokerRef;

    fn spec() -> WorkerPoolSpec {
        WorkerPoolSpec {
            image: "proj:1".into(),
            app: "proj".into(),
            queues: vec!["celery".into(), "mail".into()],
            broker: BrokerRef {
                redis_cache: Some("broker".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn minimal_spec_gives_celery_defaults_only() {
        assert_eq!(
            worker_args(&spec()),
            [
                "-A",
                "proj",
                "worker",
                "--loglevel=INFO",
                "--queues=celery,mail"
            ]
        );
    }

    #[test]
    fn every_tuning_field_becomes_its_flag() {
        let s = WorkerPoolSpec {
            concurrency: Some(4),
            pool: Some(WorkerPoolKind::Threads),
            prefetch_multiplier: Some(1),
            max_tasks_per_child: Some(100),
            max_memory_per_child: Some(200_000),
            log_level: Some(LogLevel::Warning),
            extra_args: vec!["--without-gossip".into()],
            ..spec()
        };
        assert_eq!(
            worker_args(&s),
            [
                "-A",
                "proj",
                "worker",
                "--loglevel=WARNING",
                "--queues=celery,mail",
                "--concurrency=4",
                "--pool=threads",
                "--prefetch-multiplier=1",
                "--max-tasks-per-child=100",
                "--max-memory-per-child=200000",
                "--without-gossip",
            ]
        );
    }

    #[test]
    fn deployment_runs_celery_with_secret_env_first_and_a_long_grace_period() {
        let s = WorkerPoolSpec {
            replicas: Some(3),
            env: vec![EnvVar {
                name: "DJANGO_SETTINGS_MODULE".into(),
                value: Some("proj.settings".into()),
                ..Default::default()
            }],
            ..spec()
        };
        let url = EnvVar {
            name: "CELERY_BROKER_URL".into(),
            value: Some("$(X)/0".into()),
            ..Default::default()
        };
        let d = build(Inputs {
            owner: &OwnedBy {
                name: "default".into(),
                namespace: "shop".into(),
                labels: BTreeMap::from([("a".to_string(), "b".to_string())]),
                selector: BTreeMap::from([("a".to_string(), "b".to_string())]),
                ..Default::default()
            },
            spec: &s,
            replicas: 3,
            url_env: vec![url],
            secret_versions: BTreeMap::from([
                ("broker-connection".to_string(), "41".to_string()),
                ("results".to_string(), "7".to_string()),
            ]),
        });
        let annotations = d.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
        assert_eq!(
            annotations
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(SECRET_VERSIONS_ANNOTATION))
                .map(String::as_str),
            Some("broker-connection=41,results=7"),
            "a new version of either Secret rolls the workers"
        );
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(300));
        let c = &pod.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["celery".to_string()][..]));
        assert_eq!(
            c.args.as_ref().map(|a| a[0..3].join(" ")),
            Some("-A proj worker".into())
        );
        let names: Vec<_> = c
            .env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, ["CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"]);
    }

    #[test]
    fn pod_overrides_env_from_and_resources_reach_the_pod() {
        use k8s_openapi::api::core::v1::{
            Affinity, ConfigMapEnvSource, EnvFromSource, NodeAffinity, NodeSelector,
            NodeSelectorRequirement, NodeSelectorTerm, ResourceRequirements, Toleration,
        };
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

        use crate::api::shared::PodOverrides;

        let affinity = Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "zone".into(),
                            operator: "In".into(),
                            values: Some(vec!["a".into()]),
                        }]),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let toleration = Toleration {
            key: Some("workers".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        let resources = ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_string(),
                Quantity("500m".into()),
            )])),
            ..Default::default()
        };
        let env_from = EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "django".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = WorkerPoolSpec {
            env_from: vec![env_from.clone()],
            resources: Some(resources.clone()),
            termination_grace_period_seconds: Some(900),
            pod: Some(PodOverrides {
                annotations: BTreeMap::from([("scrape".to_string(), "true".to_string())]),
                node_selector: BTreeMap::from([("pool".to_string(), "celery".to_string())]),
                tolerations: vec![toleration.clone()],
                affinity: Some(affinity.clone()),
            }),
            ..spec()
        };
        let selector = BTreeMap::from([("app".to_string(), "default".to_string())]);
        let d = build(Inputs {
            owner: &OwnedBy {
                name: "default".into(),
                namespace: "shop".into(),
                labels: selector.clone(),
                selector: selector.clone(),
                ..Default::default()
            },
            spec: &s,
            replicas: 1,
            url_env: Vec::new(),
            secret_versions: BTreeMap::new(),
        });
        let spec = d.spec.expect("spec");
        assert_eq!(spec.selector.match_labels, Some(selector.clone()));
        let template = spec.template;
        let meta = template.metadata.expect("metadata");
        assert_eq!(meta.labels, Some(selector));
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([("scrape".to_string(), "true".to_string())]))
        );
        let pod = template.spec.expect("pod");
        assert_eq!(
            pod.node_selector,
            Some(BTreeMap::from([("pool".to_string(), "celery".to_string())]))
        );
        assert_eq!(pod.tolerations, Some(vec![toleration]));
        assert_eq!(pod.affinity, Some(affinity));
        assert_eq!(pod.termination_grace_period_seconds, Some(900));
        assert_eq!(
            pod.security_context
                .and_then(|c| c.seccomp_profile)
                .map(|p| p.type_),
            Some("RuntimeDefault".into())
        );
        let c = &pod.containers[0];
        assert_eq!(c.env_from, Some(vec![env_from]));
        assert_eq!(c.resources, Some(resources));
        assert_eq!(c.env, None, "no broker URL given, none invented");
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
    }
}
