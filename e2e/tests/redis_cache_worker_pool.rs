//! RedisCache and WorkerPool end to end: the operator (a host process watching one namespace)
//! against the real control plane, pods run by kwok.

use std::collections::BTreeMap;
use std::time::Duration;

use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::{
    TestNamespace, apply_sample, apply_yaml, client, events, eventually, kubectl, ok, wait_ready,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn secret_text(s: &Secret, key: &str) -> String {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    String::from_utf8(bytes).expect("utf-8")
}

/// resourceVersion of every object the operator owns in `ns`, by kind/name.
async fn owned_versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=celery-operator");
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($t:ty) => {
            for o in Api::<$t>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .expect("list")
                .items
            {
                out.insert(
                    format!("{}/{}", stringify!($t), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(StatefulSet);
    collect!(Deployment);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(Service);
    collect!(PodDisruptionBudget);
    out
}

#[tokio::test]
async fn samples_become_ready_with_the_objects_their_specs_imply() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rc-samples").await;
    let operator = Operator::start(&ns.name);
    apply_sample(&ns.name, "rediscache.yaml");
    apply_sample(&ns.name, "workerpool.yaml");
    wait_ready(&ns.name, &["rediscache/broker"]);
    wait_ready(&ns.name, &["workerpool/default"]);

    // RedisCache `broker`: redis.conf, Secrets, Services, StatefulSet, PDB.
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("broker-config")
        .await
        .expect("config");
    let conf = cm
        .data
        .as_ref()
        .and_then(|d| d.get("redis.conf"))
        .expect("redis.conf")
        .clone();
    for line in [
        "maxmemory-policy noeviction",
        "appendonly yes",
        "port 6379",
        "dir /data",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line:?} in\n{conf}");
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let password = secret_text(
        &secrets
            .get("broker-password")
            .await
            .expect("password secret"),
        "password",
    );
    assert_eq!(password.len(), 64);
    let conn = secrets
        .get("broker-connection")
        .await
        .expect("connection secret");
    assert_eq!(
        secret_text(&conn, "host"),
        format!("broker.{}.svc", ns.name)
    );
    assert_eq!(secret_text(&conn, "port"), "6379");
    assert_eq!(secret_text(&conn, "password"), password);
    assert_eq!(
        secret_text(&conn, "url"),
        format!("redis://default:{password}@broker.{}.svc:6379/0", ns.name)
    );
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        services
            .get("broker-headless")
            .await
            .expect("headless")
            .spec
            .and_then(|s| s.cluster_ip)
            .as_deref(),
        Some("None")
    );
    services.get("broker").await.expect("client service");
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .get("broker")
        .await
        .expect("sts");
    assert_eq!(sts.owner_references()[0].kind, "RedisCache");
    let pod = sts
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod");
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    assert!(
        sts.spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .is_some(),
        "a broker persists"
    );
    Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns.name)
        .get("broker")
        .await
        .expect("pdb");
    let status = ok(kubectl(&[
        "get",
        "rcache",
        "broker",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.status.endpoint} {.status.connectionSecret} {.status.readyReplicas}",
    ]));
    assert_eq!(
        status,
        format!("broker.{}.svc:6379 broker-connection 1", ns.name)
    );

    // WorkerPool `default`: the Deployment runs celery with the broker URL from the Secret.
    let d = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .get("default")
        .await
        .expect("deployment");
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let c = &spec.template.spec.as_ref().expect("pod").containers[0];
    assert_eq!(
        c.args.as_ref().expect("args").join(" "),
        "-A proj worker --loglevel=INFO --queues=celery,mail"
    );
    let env = c.env.as_ref().expect("env");
    let broker_url = env
        .iter()
        .find(|e| e.name == "CELERY_BROKER_URL")
        .expect("CELERY_BROKER_URL");
    assert_eq!(
        broker_url.value.as_deref(),
        Some("$(CELERY_OPERATOR_CELERY_BROKER_URL_BASE)/0")
    );
    assert!(
        env.iter()
            .all(|e| !e.value.as_deref().unwrap_or_default().contains(&password)),
        "never inlined"
    );
    let columns = ok(kubectl(&["get", "wpool", "-n", &ns.name]));
    assert!(
        columns.contains("QUEUES") && columns.contains("[\"celery\",\"mail\"]"),
        "{columns}"
    );

    let seen = events(&ns.name, "involvedObject.kind=RedisCache");
    assert!(
        seen.contains("Normal:Created:Created StatefulSet broker"),
        "events:\n{seen}"
    );
    let log = operator.log_text();
    assert!(
        !log.contains(&password),
        "the password must never be logged"
    );
    assert!(
        !seen.contains(&password),
        "the password must never be in events"
    );
}

#[tokio::test]
async fn spec_changes_update_objects_and_a_config_change_rolls_the_pod() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rc-update").await;
    let _operator = Operator::start(&ns.name);
    apply_sample(&ns.name, "rediscache.yaml");
    apply_sample(&ns.name, "workerpool.yaml");
    wait_ready(&ns.name, &["rediscache/broker"]);
    wait_ready(&ns.name, &["workerpool/default"]);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let checksum = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("celeryoperator.io/config-checksum"))
            .cloned()
            .expect("checksum")
    };
    let before = checksum(&sts_api.get("broker").await.expect("sts"));

    let patch = PatchParams::default();
    Api::<celery_operator::api::RedisCache>::namespaced(client.clone(), &ns.name)
        .patch(
            "broker",
            &patch,
            &Patch::Merge(json!({"spec": {"maxMemory": "200Mi", "config": {"timeout": "60"}}})),
        )
        .await
        .expect("patch rediscache");
    Api::<celery_operator::api::WorkerPool>::namespaced(client.clone(), &ns.name)
        .patch(
            "default",
            &patch,
            &Patch::Merge(json!({"spec": {"concurrency": 4, "replicas": 3}})),
        )
        .await
        .expect("patch workerpool");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    eventually(WAIT, "redis.conf to hold the new settings", || async {
        let conf = cms
            .get("broker-config")
            .await
            .ok()?
            .data?
            .get("redis.conf")?
            .clone();
        (conf.contains("maxmemory 209715200") && conf.contains("timeout 60")).then_some(())
    })
    .await;
    let after = eventually(WAIT, "a new checksum on the pod template", || async {
        let c = checksum(&sts_api.get("broker").await.ok()?);
        (c != before).then_some(c)
    })
    .await;
    assert_ne!(before, after);
    eventually(WAIT, "Updated events on the RedisCache", || async {
        let seen = events(&ns.name, "involvedObject.kind=RedisCache");
        (seen.contains("Updated:Updated ConfigMap broker-config")
            && seen.contains("Updated:Updated StatefulSet broker"))
        .then_some(())
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually(WAIT, "the worker Deployment to follow the spec", || async {
        let d = deployments.get("default").await.ok()?;
        let spec = d.spec?;
        let args = spec.template.spec?.containers[0].args.clone()?;
        (spec.replicas == Some(3) && args.contains(&"--concurrency=4".to_string())).then_some(())
    })
    .await;
    wait_ready(&ns.name, &["workerpool/default"]);
}

#[tokio::test]
async fn password_and_objects_survive_reconciles_and_operator_restarts_untouched() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rc-restart").await;
    let mut operator = Operator::start(&ns.name);
    apply_sample(&ns.name, "rediscache.yaml");
    apply_sample(&ns.name, "workerpool.yaml");
    wait_ready(&ns.name, &["rediscache/broker"]);
    wait_ready(&ns.name, &["workerpool/default"]);
    // Let status writes and kwok settle before taking the baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let password = secret_text(
        &secrets.get("broker-password").await.expect("secret"),
        "password",
    );
    let before = owned_versions(&client, &ns.name).await;
    let status_before = ok(kubectl(&[
        "get",
        "rcache,wpool",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={range .items[*]}{.metadata.resourceVersion} {end}",
    ]));

    // A reconcile triggered by an unrelated metadata change, then two crash-restarts, each
    // followed by reconciles of both objects.
    let annotated = ok(kubectl(&[
        "annotate",
        "-n",
        &ns.name,
        "rcache/broker",
        "touched=1",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]));
    for _ in 0..2 {
        operator.restart();
        eventually(
            Duration::from_secs(30),
            "reconciles after the restart",
            || async {
                let reconciled = |kind: &str| {
                    operator
                        .metric(&format!(
                            "celery_operator_reconciles_total{{kind=\"{kind}\"}}"
                        ))
                        .is_some_and(|n| n >= 1.0)
                };
                (reconciled("RedisCache") && reconciled("WorkerPool")).then_some(())
            },
        )
        .await;
    }
    // Writes, if any, would follow the reconcile at once.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let after = owned_versions(&client, &ns.name).await;
    assert_eq!(
        before, after,
        "no owned object may be written when nothing changed"
    );
    let password_after = secret_text(
        &secrets.get("broker-password").await.expect("secret"),
        "password",
    );
    assert_eq!(password, password_after, "the password is never rotated");
    // The annotation bumped the RedisCache itself once; statuses were not rewritten after that.
    let status_after = ok(kubectl(&[
        "get",
        "rcache,wpool",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={range .items[*]}{.metadata.resourceVersion} {end}",
    ]));
    let wpool_before = status_before.split_whitespace().nth(1);
    assert_eq!(
        status_after.split_whitespace().collect::<Vec<_>>(),
        [Some(annotated.as_str()), wpool_before]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        "RedisCache and WorkerPool untouched after the annotation (before: {status_before})"
    );
}

#[tokio::test]
async fn deleting_garbage_collects_everything_but_a_claim_asked_to_be_kept() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rc-delete").await;
    let _operator = Operator::start(&ns.name);
    ok(apply_yaml(
        &ns.name,
        r#"
apiVersion: celeryoperator.io/v1alpha1
kind: RedisCache
metadata: {name: kept}
spec:
  persistence: {mode: aof, size: 1Gi, keepOnDelete: true}
---
apiVersion: celeryoperator.io/v1alpha1
kind: RedisCache
metadata: {name: dropped}
spec:
  persistence: {mode: rdb, size: 1Gi}
"#,
    ));
    wait_ready(&ns.name, &["rediscache/kept"]);
    wait_ready(&ns.name, &["rediscache/dropped"]);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    eventually(WAIT, "both claims", || async {
        let names: Vec<String> = pvcs
            .list(&ListParams::default())
            .await
            .ok()?
            .iter()
            .map(|p| p.name_any())
            .collect();
        (names.contains(&"data-kept-0".to_string())
            && names.contains(&"data-dropped-0".to_string()))
        .then_some(())
    })
    .await;

    let caches: Api<celery_operator::api::RedisCache> = Api::namespaced(client.clone(), &ns.name);
    caches
        .delete("kept", &DeleteParams::background())
        .await
        .expect("delete kept");
    caches
        .delete("dropped", &DeleteParams::background())
        .await
        .expect("delete dropped");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    eventually(WAIT, "owned objects to be garbage-collected", || async {
        let gone = sts.get_opt("kept").await.ok()?.is_none()
            && sts.get_opt("dropped").await.ok()?.is_none()
            && secrets.get_opt("kept-password").await.ok()?.is_none()
            && secrets.get_opt("dropped-connection").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    eventually(WAIT, "the dropped claim to be deleted", || async {
        pvcs.get_opt("data-dropped-0")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let kept = pvcs.get_opt("data-kept-0").await.expect("get");
    assert!(
        kept.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
        "keepOnDelete keeps the claim"
    );
}

#[tokio::test]
async fn a_pool_waits_for_its_broker_and_resolves_when_it_appears() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "wp-broker").await;
    let _operator = Operator::start(&ns.name);
    apply_sample(&ns.name, "workerpool.yaml");
    let condition = || {
        ok(kubectl(&[
            "get",
            "wpool",
            "default",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"BrokerResolved\")].status}:{.status.conditions[?(@.type==\"BrokerResolved\")].message}",
        ]))
    };
    eventually(
        WAIT,
        "BrokerResolved=False naming the missing RedisCache",
        || async {
            let c = condition();
            (c == "False:spec.broker.redisCache: RedisCache broker not found").then_some(())
        },
    )
    .await;
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns.name)
            .get_opt("default")
            .await
            .expect("get")
            .is_none(),
        "no Deployment without a broker"
    );
    let seen = events(&ns.name, "involvedObject.kind=WorkerPool");
    assert!(
        seen.contains("Warning:BrokerNotFound:spec.broker.redisCache: RedisCache broker not found"),
        "a Warning event names the missing broker:\n{seen}"
    );
    apply_sample(&ns.name, "rediscache.yaml");
    wait_ready(&ns.name, &["workerpool/default"]);
    assert!(condition().starts_with("True:"));

    // A result backend on database 1 of the same RedisCache: URL from its Secret, never inlined.
    ok(kubectl(&[
        "patch",
        "wpool",
        "default",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"spec":{"resultBackend":{"redisCache":"broker","database":1}}}"#,
    ]));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let env = eventually(WAIT, "CELERY_RESULT_BACKEND on the worker", || async {
        let d = deployments.get("default").await.ok()?;
        let env = d.spec?.template.spec?.containers[0].env.clone()?;
        env.iter()
            .any(|e| e.name == "CELERY_RESULT_BACKEND")
            .then_some(env)
    })
    .await;
    let var = |name: &str| env.iter().find(|e| e.name == name).cloned().expect(name);
    assert_eq!(
        var("CELERY_RESULT_BACKEND").value.as_deref(),
        Some("$(CELERY_OPERATOR_CELERY_RESULT_BACKEND_BASE)/1")
    );
    let base = var("CELERY_OPERATOR_CELERY_RESULT_BACKEND_BASE")
        .value_from
        .and_then(|v| v.secret_key_ref)
        .expect("from a Secret");
    assert_eq!(base.name, "broker-connection");
    let seen = events(&ns.name, "involvedObject.kind=WorkerPool");
    assert!(
        seen.contains("Normal:Updated:Updated Deployment default"),
        "{seen}"
    );
}

#[tokio::test]
async fn a_pool_starts_no_worker_before_its_broker_answers() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "wp-hold").await;
    let _operator = Operator::start(&ns.name);
    // A broker whose pod can be placed nowhere: its RedisCache exists, with its connection
    // Secret, but never becomes Ready.
    ok(apply_yaml(
        &ns.name,
        "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata: {name: broker}\nspec:\n  purpose: broker\n  pod: {nodeSelector: {celery-operator-e2e/nowhere: \"true\"}}\n",
    ));
    apply_sample(&ns.name, "workerpool.yaml");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replicas = || async {
        deployments
            .get_opt("default")
            .await
            .expect("get")
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas)
    };
    eventually(WAIT, "the Deployment held at 0 replicas", || async {
        (replicas().await == Some(0)).then_some(())
    })
    .await;
    let seen = eventually(WAIT, "a WaitingForBroker event", || async {
        let seen = events(&ns.name, "involvedObject.kind=WorkerPool");
        seen.contains("Normal:WaitingForBroker:holding 0 of 2 replicas until the broker's RedisCache is Ready")
            .then_some(seen)
    })
    .await;
    assert!(!seen.contains("Warning"), "{seen}");
    // Once Redis can run and answers, the workers start (a StatefulSet does not replace a
    // pod that never ran, so the cache is made anew where its pod can run).
    ok(kubectl(&[
        "delete",
        "rediscache",
        "broker",
        "-n",
        &ns.name,
        "--cascade=foreground",
    ]));
    ok(kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "--for=delete",
        "statefulset/broker",
        "pod/broker-0",
        "--timeout=60s",
    ]));
    apply_sample(&ns.name, "rediscache.yaml");
    wait_ready(&ns.name, &["rediscache/broker"]);
    eventually(WAIT, "2 replicas once the broker is Ready", || async {
        (replicas().await == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn invalid_specs_are_rejected_at_apply_naming_the_field() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "invalid").await;
    let pool = |spec: &str| {
        format!(
            "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {{name: bad}}\nspec:\n  image: x\n  app: proj\n{spec}"
        )
    };
    let cache = |spec: &str| {
        format!(
            "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    const BOTH: &str = "set exactly one of redisCache or secretKeyRef";
    let cases: Vec<(String, &[&str])> = vec![
        (
            pool("  replicas: -1\n  broker: {redisCache: b}\n"),
            &["spec.replicas"],
        ),
        (
            pool("  concurrency: 0\n  broker: {redisCache: b}\n"),
            &["spec.concurrency"],
        ),
        (
            pool("  pool: fibers\n  broker: {redisCache: b}\n"),
            &["spec.pool"],
        ),
        (
            pool("  broker: {redisCache: b, secretKeyRef: {name: s, key: url}}\n"),
            &["spec.broker", BOTH],
        ),
        (pool("  broker: {}\n"), &["spec.broker", BOTH]),
        (
            pool("  broker: {redisCache: b}\n  resultBackend: {}\n"),
            &["spec.resultBackend", BOTH],
        ),
        (
            pool("  broker: {secretKeyRef: {name: s, key: url}, database: 2}\n"),
            &["spec.broker", "database applies to redisCache only"],
        ),
        (
            pool(
                "  broker: {redisCache: b}\n  autoscaling: {maxReplicas: 3, pollInterval: 500ms}\n",
            ),
            &["spec.autoscaling.pollInterval"],
        ),
        (
            pool("  broker: {redisCache: b}\n  autoscaling: {maxReplicas: 3, pollInterval: 0s}\n"),
            &[
                "spec.autoscaling.pollInterval",
                "pollInterval must be at least 1s",
            ],
        ),
        (cache("  purpose: queue\n"), &["spec.purpose"]),
        (
            cache("  config: {requirepass: hunter2}\n"),
            &["spec.config", "must not set a directive the operator owns"],
        ),
        (cache("  config: {port: \"7000\"}\n"), &["spec.config"]),
        (
            cache("  config: {timeout: \"0\\nrequirepass x\"}\n"),
            &["spec.config", "single lines"],
        ),
        (
            cache("  maxMemory: 12parsecs\n"),
            &["spec.maxMemory", "at least 1Mi"],
        ),
        (
            cache("  maxMemory: 512\n"),
            &["spec.maxMemory", "at least 1Mi"],
        ),
        (
            cache("  persistence: {mode: aof, size: \"0\"}\n"),
            &["spec.persistence.size", "positive quantity"],
        ),
    ];
    for (manifest, expected) in &cases {
        let out = apply_yaml(&ns.name, manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        for text in *expected {
            assert!(
                stderr.contains(text),
                "message for\n{manifest}\nshould name {text:?}, got: {stderr}"
            );
        }
    }
    // Quantities the API server accepts are accepted.
    ok(apply_yaml(
        &ns.name,
        &cache("  maxMemory: 1e9\n  persistence: {mode: rdb, size: 2Gi}\n"),
    ));
}

#[tokio::test]
async fn a_cache_keeps_its_data_volume_and_says_why_at_apply() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "volume").await;
    let cache = |name: &str, spec: &str| {
        format!(
            "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    };
    let rejected = |manifest: String, expected: &str| {
        let out = apply_yaml(&ns.name, &manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        assert!(
            stderr.contains(expected),
            "message for\n{manifest}\nshould say {expected:?}, got: {stderr}"
        );
    };
    // A cache has no volume; becoming a broker would give it one (the purpose's default).
    ok(apply_yaml(&ns.name, &cache("c", "  purpose: cache\n")));
    rejected(
        cache("c", "  purpose: broker\n"),
        "cannot gain or lose its data volume",
    );
    ok(apply_yaml(
        &ns.name,
        &cache("c", "  purpose: broker\n  persistence: {mode: none}\n"),
    ));
    // A volume keeps its size and class; rdb <-> aof is free.
    ok(apply_yaml(
        &ns.name,
        &cache("v", "  persistence: {mode: rdb, size: 1Gi}\n"),
    ));
    rejected(
        cache("v", "  persistence: {mode: rdb, size: 2Gi}\n"),
        "spec.persistence.size and spec.persistence.storageClassName cannot change",
    );
    rejected(
        cache(
            "v",
            "  persistence: {mode: rdb, size: 1Gi, storageClassName: fast}\n",
        ),
        "cannot change after creation",
    );
    rejected(
        cache("v", "  persistence: {mode: none}\n"),
        "cannot gain or lose its data volume",
    );
    ok(apply_yaml(
        &ns.name,
        &cache("v", "  persistence: {mode: aof, size: 1Gi}\n"),
    ));
}

/// The samples document optional fields as commented-out YAML; uncommented, they must still
/// be accepted, or the documentation has drifted from the CRDs.
#[tokio::test]
async fn every_commented_field_of_the_samples_is_valid_when_uncommented() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "samples").await;
    let key_like = |s: &str| {
        s.split_once(':').is_some_and(|(k, _)| {
            k.starts_with(|c: char| c.is_ascii_alphabetic())
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
    };
    for file in ["rediscache.yaml", "workerpool.yaml"] {
        let path = celery_operator_e2e::repo_root()
            .join("deploy/samples")
            .join(file);
        let text = std::fs::read_to_string(&path).expect("sample");
        let mut uncommented = 0;
        let yaml: String = text
            .lines()
            .map(|line| match line.strip_prefix("  # ") {
                Some(rest) if rest.starts_with(' ') || rest.starts_with("- ") || key_like(rest) => {
                    uncommented += 1;
                    format!("  {rest}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        assert!(
            uncommented >= 10,
            "{file}: only {uncommented} commented lines found"
        );
        let out = apply_yaml(&ns.name, &yaml);
        assert!(
            out.status.success(),
            "{file} uncommented is refused: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
