//! What the in-cluster tests share: the installed release, manifests of the three kinds with
//! the locally built images, client pods fed by the connection Secret, and the executions the
//! test app's workers record in Redis.

use std::time::Duration;

use celery_operator_e2e::chart::Release;
use celery_operator_e2e::pods::{exec, ready_pods, run_script, script_pod_with};
use celery_operator_e2e::{
    REAL_NODE, TestNamespace, apply_yaml, client, eventually, image, kubectl, ok,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use serde_json::{Value, json};

use super::{RELEASE, RELEASE_NAMESPACE};

/// Real pods need longer than kwok's: images unpack, Redis loads, Celery imports.
pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// The release `main` installs for every test.
pub(crate) fn release() -> Release {
    Release {
        name: RELEASE.into(),
        namespace: RELEASE_NAMESPACE.into(),
    }
}

/// What follows `marker` on its line of a client pod's log.
pub(crate) fn marked<'a>(logs: &'a str, marker: &str) -> Option<&'a str> {
    logs.lines().find_map(|l| l.strip_prefix(marker))
}

/// A client and a namespace whose pods run on the real node.
pub(crate) async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, prefix).await;
    (client, ns)
}

/// `kubectl apply` of a manifest, which must be admitted.
pub(crate) fn apply(ns: &str, yaml: &str) {
    ok(apply_yaml(ns, yaml));
}

/// A RedisCache of the locally built Redis image; `extra` is more of its spec, as YAML lines
/// indented by two.
pub(crate) fn redis_cache(name: &str, purpose: &str, extra: &str) -> String {
    format!(
        "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata: {{name: {name}}}\nspec:\n  purpose: {purpose}\n  image: {}\n{extra}",
        image("redis")
    )
}

/// A WorkerPool of the test app's image (`celery -A tasks worker`) on the RedisCache `broker`
/// (database 0), results in its database 1.
pub(crate) fn worker_pool(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {{name: {name}}}\nspec:\n  image: {}\n  app: tasks\n  queues: [celery]\n  broker: {{redisCache: broker}}\n  resultBackend: {{redisCache: broker, database: 1}}\n  terminationGracePeriodSeconds: 90\n{extra}",
        image("celery-app")
    )
}

/// `kubectl wait --for=condition=Ready` with the real pods' patience.
pub(crate) fn wait_ready(ns: &str, objects: &[&str]) {
    let timeout = format!("--timeout={}s", WAIT.as_secs());
    let mut args = vec!["wait", "-n", ns, "--for=condition=Ready", timeout.as_str()];
    args.extend_from_slice(objects);
    ok(kubectl(&args));
}

/// Container environment from the RedisCache's connection Secret, only: `URL`, `HOST`,
/// `PORT`, `PASSWORD` (and the test app's `CELERY_BROKER_URL`).
pub(crate) fn connection_env(cache: &str) -> Value {
    let secret = format!("{cache}-connection");
    let from = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}});
    json!([
        from("URL", "url"),
        from("HOST", "host"),
        from("PORT", "port"),
        from("PASSWORD", "password"),
        from("CELERY_BROKER_URL", "url"),
    ])
}

/// Runs `script` (sh) in a one-shot pod of `image_name` with the connection env of `cache`,
/// and returns its log; it must succeed.
pub(crate) async fn client_pod(
    client: &Client,
    ns: &str,
    name: &str,
    image_name: &str,
    cache: &str,
    script: &str,
) -> String {
    let pod = script_pod_with(name, image_name, script, connection_env(cache));
    run_script(client, ns, pod, "Succeeded").await
}

/// Pushes Celery tasks from inside the cluster, as a Django view would: Python in a pod of the
/// test app's image, `apply_async` on the broker of the connection Secret. Prints one task id
/// per line; returns them.
pub(crate) async fn push_tasks(client: &Client, ns: &str, name: &str, python: &str) -> Vec<String> {
    let script = format!("cd /app && python3 -c '{}'", python.replace('\'', "'\\''"));
    let logs = client_pod(client, ns, name, "celery-app", "broker", &script).await;
    logs.lines()
        .filter(|l| l.len() == 36 && l.chars().filter(|c| *c == '-').count() == 4)
        .map(str::to_owned)
        .collect()
}

/// The Redis pod of the RedisCache `name` (StatefulSet pod 0).
pub(crate) fn redis_pod(name: &str) -> String {
    format!("{name}-0")
}

/// `redis-cli` in the RedisCache's own pod (its REDISCLI_AUTH holds the password).
pub(crate) fn redis_cli(ns: &str, cache: &str, args: &[&str]) -> String {
    let mut all = vec!["redis-cli"];
    all.extend_from_slice(args);
    exec(ns, &redis_pod(cache), &all)
}

/// The executions the test app recorded (`e2e:executed` in the broker's database 0).
pub(crate) fn executed(ns: &str) -> Vec<Value> {
    let raw = redis_cli(ns, "broker", &["lrange", "e2e:executed", "0", "-1"]);
    raw.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("recorded execution is JSON"))
        .collect()
}

/// The pods of a WorkerPool that run and are ready.
pub(crate) async fn worker_pods(client: &Client, ns: &str, pool: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    ready_pods(
        &pods,
        &format!("app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance={pool}"),
    )
    .await
}

/// Saves the operator pods' logs next to the test logs, for a failed run.
pub(crate) fn save_operator_logs(release: &Release) {
    let path = celery_operator_e2e::logs_dir().join("in-cluster-operator.log");
    if std::fs::write(&path, release.logs()).is_ok() {
        eprintln!("operator pods' logs: {}", path.display());
    }
}

pub(crate) async fn operator_replicas_run_from_the_chart_and_elect_one_leader() {
    let client = client().await;
    let release = release();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release.namespace);
    let running = eventually(WAIT, "the chart's two operator replicas ready", || async {
        let ready = ready_pods(&pods, &release.selector()).await;
        (ready.len() == 2).then_some(ready)
    })
    .await;
    let leader = release.wait_leader(WAIT).await;
    let names: Vec<&str> = running
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    assert!(
        names.contains(&leader.as_str()),
        "leader {leader} of {names:?}"
    );
    for pod in &running {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(REAL_NODE));
        assert_eq!(spec.service_account_name.as_deref(), Some(RELEASE));
        let image = &spec.containers[0].image;
        assert_eq!(
            image.as_deref(),
            Some(celery_operator_e2e::image("operator").as_str())
        );
    }
    // One replica leads; the other waits, serving probes and admission only.
    let logs = |pod: &str| ok(kubectl(&["logs", "-n", &release.namespace, pod]));
    assert!(
        logs(&leader).contains("acquired leadership"),
        "{}",
        logs(&leader)
    );
    let standby = names.iter().find(|n| **n != leader).expect("a standby");
    let log = logs(standby);
    assert!(
        log.contains("waiting for leadership") && !log.contains("acquired leadership"),
        "{log}"
    );
}

pub(crate) async fn webhook_in_the_operator_pods_refuses_a_bad_manifest() {
    let (_client, ns) = setup("ic-webhook").await;
    let bad = "apiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {name: bad}\nspec:\n  task: tasks.record\n  schedule: {crontab: {minute: \"61\"}}\n  broker: {redisCache: broker}\n";
    // Until the webhook's certificate is in the caBundle, the API server cannot call it and
    // refuses with "failed calling webhook" (failurePolicy Fail): wait for the real answer.
    let refusal = eventually(WAIT, "the webhook's refusal", || async {
        let out = apply_yaml(&ns.name, bad);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && stderr.contains("denied the request")).then_some(stderr)
    })
    .await;
    assert!(
        refusal.contains("spec.schedule.crontab.minute") && refusal.contains("61"),
        "{refusal}"
    );
    let good = bad.replace("\"61\"", "\"5\"");
    apply(&ns.name, &good);
}
