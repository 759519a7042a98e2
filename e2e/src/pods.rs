//! Pods on the real node: waiting for them, one-shot script pods, `kubectl exec` and logs.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::{eventually, image, kubectl, ok};

/// Starting a container here takes a few seconds; a rollout or a volume a few more.
pub const POD_WAIT: Duration = Duration::from_secs(90);

/// A pod from JSON (tests write pods as `json!` literals).
pub fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// Running, and its Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits for the pod `name` to run and be ready.
pub async fn ready_pod(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(
        POD_WAIT,
        &format!("pod {name} running and ready"),
        || async { pods.get_opt(name).await.ok().flatten().filter(is_ready) },
    )
    .await
}

/// The ready pods matching `selector` (`app=x`), by name.
pub async fn ready_pods(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let mut ready: Vec<Pod> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    ready.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    ready
}

/// Waits for a pod to end with `phase` (`Succeeded`, `Failed`) and returns its logs.
pub async fn finished_pod_logs(pods: &Api<Pod>, ns: &str, name: &str, phase: &str) -> String {
    let ended = eventually(POD_WAIT, &format!("pod {name} to finish"), || async {
        let p = pods.get_opt(name).await.ok().flatten()?;
        match p.status.as_ref()?.phase.as_deref() {
            Some(done @ ("Succeeded" | "Failed")) => Some(done.to_string()),
            _ => None,
        }
    })
    .await;
    let logs = ok(kubectl(&["logs", "-n", ns, name]));
    assert_eq!(ended, phase, "pod {name} ended {ended}; its log:\n{logs}");
    logs
}

/// A pod of the Redis image that runs `script` in sh once, to completion.
pub fn script_pod(name: &str, script: &str) -> Pod {
    script_pod_with(name, "redis", script, json!([]))
}

/// A one-shot pod of the locally built image `image_name` running `script` in sh, with the
/// container environment `env` (a JSON list of EnvVar).
pub fn script_pod_with(name: &str, image_name: &str, script: &str, env: serde_json::Value) -> Pod {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": image(image_name), "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script], "env": env
        }]}
    }))
}

/// Runs a script pod to completion and returns its logs; panics unless it ends `phase`.
pub async fn run_script(client: &Client, ns: &str, pod: Pod, phase: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = pod.metadata.name.clone().expect("named pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create script pod");
    finished_pod_logs(&pods, ns, &name, phase).await
}

/// `kubectl exec -n ns pod -- args...`, trimmed stdout; panics if it fails.
pub fn exec(ns: &str, pod: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", "-n", ns, pod, "--"];
    all.extend_from_slice(args);
    ok(kubectl(&all)).trim().to_owned()
}
