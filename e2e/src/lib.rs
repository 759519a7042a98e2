//! Helpers for the end-to-end tests: a client for the local control plane that
//! `e2e/cluster/up.sh` started, kubectl, throwaway namespaces, and polling.
//!
//! The tests never start a cluster themselves; `make e2e` (and `make test`) does, and passes
//! its kubeconfig in `E2E_KUBECONFIG`.

pub mod celery;
pub mod chart;
pub mod measure;
pub mod operator;
pub mod pods;
pub mod redis;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Path of the kubeconfig of the cluster under test.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("E2E_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!("E2E_KUBECONFIG is not set: run the end-to-end tests with `make e2e`"),
    }
}

/// Where the tests' logs and failure reports go (beside the test kubeconfig), created.
pub fn logs_dir() -> PathBuf {
    let dir = kubeconfig_path()
        .parent()
        .map(|p| p.join("logs"))
        .unwrap_or_else(|| ".".into());
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Root of the repository (for `crds/`, `deploy/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An admin client for the cluster under test.
pub async fn client() -> Client {
    let kc = Kubeconfig::read_from(kubeconfig_path()).expect("read E2E_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Runs the cluster's own kubectl (the one `up.sh` built) with the test kubeconfig.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with_input(args, None)
}

/// `kubectl get OBJECT -n NS -o jsonpath=PATH`, which must succeed.
pub fn jsonpath(ns: &str, object: &str, path: &str) -> String {
    ok(kubectl(&[
        "get",
        object,
        "-n",
        ns,
        "-o",
        &format!("jsonpath={path}"),
    ]))
}

/// Like [`kubectl`], feeding `input` on stdin.
pub fn kubectl_with_input(args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("--kubeconfig").arg(kubeconfig_path()).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(stdin);
    child.wait_with_output().expect("kubectl output")
}

fn kubectl_bin() -> PathBuf {
    std::env::var_os("E2E_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "kubectl".into())
}

/// Asserts a kubectl call succeeded and returns its stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real node's name (`e2e/cluster/node.sh`).
pub const REAL_NODE: &str = "celery-e2e-node";

/// The taint of the kwok nodes while a real node runs beside them.
pub const KWOK_TAINT_KEY: &str = "kwok.x-k8s.io/node";

/// A namespace that exists for one test and is deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// A namespace whose pods run on the kwok nodes: simulated, never started, whatever their
    /// image ([`TestNamespace::simulated`]).
    pub async fn new(client: &Client, prefix: &str) -> Self {
        Self::simulated(client, prefix).await
    }

    /// A namespace whose pods all go to the kwok nodes: the API server's PodNodeSelector and
    /// PodTolerationRestriction admission give each pod the fake nodes' selector and taint
    /// toleration from the namespace's annotations.
    pub async fn simulated(client: &Client, prefix: &str) -> Self {
        let toleration = serde_json::json!([{
            "key": KWOK_TAINT_KEY, "operator": "Equal", "value": "fake", "effect": "NoSchedule"
        }]);
        Self::create(
            client,
            prefix,
            serde_json::json!({
                "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
                "scheduler.alpha.kubernetes.io/defaultTolerations": toleration.to_string(),
            }),
        )
        .await
    }

    /// A namespace whose pods run for real, on the real node (unless they tolerate the kwok
    /// taint and select a fake node themselves).
    pub async fn real_node(client: &Client, prefix: &str) -> Self {
        Self::create(client, prefix, serde_json::json!({})).await
    }

    async fn create(client: &Client, prefix: &str, annotations: serde_json::Value) -> Self {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {"celeryoperator.io/e2e": "true"},
                "annotations": annotations,
            }
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self { name }
    }
}

impl TestNamespace {
    /// After a failure: what the namespace held, its events, its pods' logs, and what the
    /// chart's operator pods (when installed) logged about it, saved beside the test logs.
    fn save_diagnostics(&self) {
        let text = |args: &[&str]| {
            let out = kubectl(args);
            format!(
                "$ kubectl {}\n{}{}\n",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let ns = self.name.as_str();
        let mut report = text(&["get", "celery,all,pvc", "-n", ns, "-o", "wide"]);
        report += &text(&["get", "celery", "-n", ns, "-o", "yaml"]);
        report += &text(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]);
        // Containers on the real node log what led there (kwok's pods have no logs); a
        // restarted container's previous run is often the one that explains it.
        let pods =
            String::from_utf8_lossy(&kubectl(&["get", "pods", "-n", ns, "-o", "name"]).stdout)
                .into_owned();
        for pod in pods.lines() {
            for previous in ["--previous=false", "--previous=true"] {
                report += &text(&[
                    "logs",
                    "-n",
                    ns,
                    pod,
                    "--all-containers",
                    "--timestamps",
                    previous,
                ]);
            }
        }
        let operator = chart::Release {
            name: "celery-operator".into(),
            namespace: "celery-operator".into(),
        };
        report += &operator
            .logs()
            .lines()
            .filter(|l| l.contains(ns))
            .collect::<Vec<_>>()
            .join("\n");
        let path = logs_dir().join(format!("{ns}.failed.txt"));
        if std::fs::write(&path, report).is_ok() {
            eprintln!("what {ns} held when the test failed: {}", path.display());
        }
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace (and so everything in it) before the test's runtime goes: a
    /// blocking kubectl call, since a task spawned here would die with the runtime.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.save_diagnostics();
        }
        let out = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        if !out.status.success() {
            eprintln!(
                "could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Creates the Secret `name` in `ns` whose key `url` holds a broker URL.
pub fn broker_url_secret(ns: &str, name: &str, url: &str) {
    ok(kubectl(&[
        "create",
        "secret",
        "generic",
        name,
        "-n",
        ns,
        &format!("--from-literal=url={url}"),
    ]));
}

/// The events in `ns` that match a field selector (`involvedObject.kind=WorkerPool`,
/// `reason=BrokerUnreachable`), one `type:reason:note` per line.
pub fn events(ns: &str, field_selector: &str) -> String {
    ok(kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        field_selector,
        "-o",
        "jsonpath={range .items[*]}{.type}:{.reason}:{.note}{.message}{\"\\n\"}{end}",
    ]))
}

/// The reference of a locally built image (`e2e/cluster/images.sh`), from `E2E_IMAGE_<NAME>`
/// (`redis`, `celery-app`), which `make e2e` sets.
pub fn image(name: &str) -> String {
    let var = format!("E2E_IMAGE_{}", name.to_uppercase().replace('-', "_"));
    std::env::var(&var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the real-node tests with `make e2e`"))
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl apply -n ns -f deploy/samples/<file>`.
pub fn apply_sample(ns: &str, file: &str) {
    let path = repo_root().join("deploy/samples").join(file);
    ok(kubectl(&[
        "apply",
        "-n",
        ns,
        "-f",
        path.to_str().expect("utf-8 path"),
    ]));
}

/// `kubectl apply -n ns -f -` of `yaml`, returning the output (for rejection tests too).
pub fn apply_yaml(ns: &str, yaml: &str) -> Output {
    kubectl_with_input(&["apply", "-n", ns, "-f", "-"], Some(yaml))
}

/// `kubectl wait --for=condition=Ready` on `objects` (e.g. `rediscache/broker`), 60 s.
pub fn wait_ready(ns: &str, objects: &[&str]) {
    let mut args = vec!["wait", "-n", ns, "--for=condition=Ready", "--timeout=60s"];
    args.extend_from_slice(objects);
    ok(kubectl(&args));
}

/// Slot task ids of an every-second task from its creation up to `last` (inclusive).
pub fn every_second_slot_ids(
    pt: &celery_operator::api::periodic_task::PeriodicTask,
    last: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    use kube::ResourceExt;
    let uid = pt.uid().expect("uid");
    let created = pt.creation_timestamp().expect("created").0.as_second();
    let mut slot =
        chrono::DateTime::from_timestamp(created, 0).expect("ts") + chrono::TimeDelta::seconds(1);
    let mut ids = Vec::new();
    while slot <= last {
        ids.push(
            celery_operator::celery::task_id_for_slot(&uid, &slot)
                .expect("id")
                .to_string(),
        );
        slot += chrono::TimeDelta::seconds(1);
    }
    ids
}
