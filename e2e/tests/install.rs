//! Installing the operator as users do: the Helm chart, the kustomize base, and the chart's
//! RBAC being exactly enough for the operator.

use std::process::{Command, Output};
use std::time::Duration;

use celery_operator_e2e::celery::{CeleryWorker, recorded};
use celery_operator_e2e::chart::{chart, helm};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{
    TestNamespace, client, events, eventually, jsonpath, kubeconfig_path, kubectl,
    kubectl_with_input, ok, repo_root,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

const WAIT: Duration = Duration::from_secs(60);

fn must(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn helm_lint_passes_strictly() {
    must(helm(&["lint", "--strict", &chart()]));
}

#[tokio::test]
async fn chart_render_applies_with_server_side_dry_run() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "helm-dry").await;
    let rendered = must(helm(&[
        "template",
        "dry",
        &chart(),
        "--namespace",
        &ns.name,
        "--set",
        "serviceMonitor.enabled=false",
    ]));
    ok(kubectl_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    ));
}

#[tokio::test]
async fn helm_install_and_upgrade_succeed() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "helm-install").await;
    let release = format!("co-{}", &ns.name[ns.name.len() - 8..]);
    must(helm(&[
        "install",
        &release,
        &chart(),
        "--namespace",
        &ns.name,
        // Its pods are simulated: a cluster-wide webhook nobody answers would refuse every
        // other test's objects (the in-cluster tests run the chart's webhook for real).
        "--set",
        "webhook.enabled=false",
        "--wait",
        "--timeout",
        "60s",
    ]));
    let name = format!("{release}-celery-operator");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get(&name).await.expect("operator deployment");
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2), "two replicas by default");
    let pod = spec.template.spec.expect("pod");
    let c = &pod.containers[0];
    assert!(
        c.args
            .as_ref()
            .expect("args")
            .contains(&"--leader-election".to_string())
    );
    let sc = c.security_context.as_ref().expect("security context");
    assert_eq!(
        (sc.read_only_root_filesystem, sc.allow_privilege_escalation),
        (Some(true), Some(false))
    );
    assert_eq!(
        pod.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    must(helm(&[
        "upgrade",
        &release,
        &chart(),
        "--namespace",
        &ns.name,
        "--set",
        "replicaCount=3",
        "--set",
        "webhook.enabled=false",
        "--wait",
        "--timeout",
        "60s",
    ]));
    eventually(WAIT, "the upgraded replica count", || async {
        (deployments.get(&name).await.ok()?.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    must(helm(&["uninstall", &release, "--namespace", &ns.name]));
}

#[tokio::test]
async fn kustomize_base_applies() {
    // Server-side dry run: the API server checks every object (the webhook configuration
    // too) and persists none, so no webhook that no pod answers is left cluster-wide.
    let deploy = repo_root().join("deploy");
    // A dry-run Namespace holds nothing: its objects need the real one.
    let _ = kubectl(&["create", "namespace", "celery-operator"]);
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-k",
        deploy.to_str().expect("utf-8"),
        "-o",
        "json",
    ]);
    let _ = kubectl(&["delete", "namespace", "celery-operator", "--wait=false"]);
    let out = ok(out);
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let items = list["items"].as_array().expect("items");
    let of_kind = |kind: &str| {
        items
            .iter()
            .filter(|o| o["kind"] == kind)
            .collect::<Vec<_>>()
    };
    let deployment = of_kind("Deployment");
    assert_eq!(deployment.len(), 1);
    assert_eq!(deployment[0]["spec"]["replicas"], 2);
    assert_eq!(of_kind("ValidatingWebhookConfiguration").len(), 1);
    assert_eq!(of_kind("CustomResourceDefinition").len(), 3);
}

/// A kubeconfig that authenticates as the chart's ServiceAccount (TokenRequest API).
async fn service_account_kubeconfig(
    client: &kube::Client,
    ns: &str,
    sa: &str,
) -> std::path::PathBuf {
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 3600}}))
            .expect("request");
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("token")
        .status
        .and_then(|s| s.token)
        .expect("token value");
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path()).expect("kubeconfig"))
            .expect("yaml");
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": serde_json::to_value(cluster).expect("cluster")}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    });
    let path = kubeconfig_path()
        .parent()
        .expect("dir")
        .join(format!("sa-{ns}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write");
    path
}

fn can_i(kubeconfig: &std::path::Path, args: &[&str]) -> bool {
    let out = Command::new(std::env::var("E2E_KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .expect("kubectl");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn the_chart_rbac_is_enough_for_the_operator_and_no_more() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rbac").await;
    let other = TestNamespace::new(&client, "rbac-other").await;
    let release = format!("co-{}", &ns.name[ns.name.len() - 8..]);
    // Namespaced install, no in-cluster replicas: the operator runs on the host as its SA.
    must(helm(&[
        "install",
        &release,
        &chart(),
        "--namespace",
        &ns.name,
        "--set",
        &format!("watchNamespace={}", ns.name),
        "--set",
        "replicaCount=0",
        // No operator pod would answer it (the host-run operator checks the RBAC here).
        "--set",
        "webhook.enabled=false",
    ]));
    let sa = format!("{release}-celery-operator");
    let kubeconfig = service_account_kubeconfig(&client, &ns.name, &sa).await;
    let kc = kubeconfig.display().to_string();
    let lease = [
        "--leader-election",
        "--lease-name",
        &sa,
        "--lease-namespace",
        &ns.name,
    ];
    let _operator = Operator::start_with(&ns.name, &lease, &[("KUBECONFIG", &kc)]);
    for sample in ["rediscache.yaml", "workerpool.yaml"] {
        let path = repo_root().join("deploy/samples").join(sample);
        ok(kubectl(&[
            "apply",
            "-n",
            &ns.name,
            "-f",
            path.to_str().expect("utf-8"),
        ]));
    }
    ok(kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "--for=condition=Ready",
        "--timeout=60s",
        "rediscache/broker",
        "workerpool/default",
    ]));
    let seen = events(&ns.name, "involvedObject.kind=RedisCache");
    assert!(
        seen.contains("Normal:Created:Created StatefulSet broker"),
        "the operator records its events as the chart SA: {seen}"
    );

    for allowed in [
        vec!["patch", "statefulsets", "-n", &ns.name],
        vec!["create", "secrets", "-n", &ns.name],
        vec![
            "patch",
            "rediscaches",
            "--subresource=status",
            "-n",
            &ns.name,
        ],
        vec!["patch", "leases", "-n", &ns.name],
        vec!["patch", "pods", "-n", &ns.name],
    ] {
        assert!(
            can_i(&kubeconfig, &allowed),
            "should be allowed: {allowed:?}"
        );
    }
    for denied in [
        vec!["get", "secrets", "-n", &other.name],
        vec!["list", "deployments", "-n", &other.name],
        vec!["delete", "statefulsets", "-n", &ns.name],
        vec!["delete", "secrets", "-n", &ns.name],
        vec!["delete", "pods", "-n", &ns.name],
        vec!["update", "rediscaches", "-n", &ns.name],
        vec!["create", "clusterroles"],
        vec!["delete", "customresourcedefinitions"],
        vec!["list", "nodes"],
    ] {
        assert!(!can_i(&kubeconfig, &denied), "must be denied: {denied:?}");
    }
    eventually(WAIT, "status written as the service account", || async {
        let s = jsonpath(&ns.name, "wpool/default", "{.status.readyReplicas}");
        (s == "2").then_some(())
    })
    .await;

    // The beat as the service account: it reads the broker Secret, pushes, writes status,
    // and a real worker runs the task.
    let redis = RedisServer::start(None, Some("rbac-s3cret"), &["--save", ""]);
    let _worker = CeleryWorker::on_queues(&redis.url(0), "celery");
    let ran = |redis: &RedisServer| {
        recorded(redis)
            .iter()
            .filter(|e| e["kwargs"]["tag"] == "rbac")
            .count()
    };
    let manifests = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "beat-broker"},
         "stringData": {"url": redis.url(0)}},
        {"apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
         "metadata": {"name": "tick"},
         "spec": {"task": "tasks.record", "kwargs": {"tag": "rbac"}, "schedule": {"every": "1s"},
                  "broker": {"secretKeyRef": {"name": "beat-broker", "key": "url"}}}},
    ]});
    ok(kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&manifests.to_string()),
    ));
    eventually(WAIT, "the periodic task runs on the worker", || async {
        (ran(&redis) >= 2).then_some(())
    })
    .await;
    eventually(
        WAIT,
        "PeriodicTask status written as the service account",
        || async {
            let out = ok(kubectl(&[
                "get",
                "ptask",
                "tick",
                "-n",
                &ns.name,
                "-o",
                "jsonpath={.status.totalRuns} {.status.conditions[?(@.type==\"Ready\")].status}",
            ]));
            let mut parts = out.split_whitespace();
            let runs: i64 = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            (runs >= 2 && parts.next() == Some("True")).then_some(())
        },
    )
    .await;

    // Losing read access to the broker Secret (like any API trouble) is not a missing
    // Secret: the task keeps its schedule with the URL it read before.
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns.name);
    for mut role in roles.list(&ListParams::default()).await.expect("roles") {
        let name = role.name_any();
        for rule in role.rules.iter_mut().flatten() {
            if let Some(resources) = rule.resources.as_mut() {
                resources.retain(|r| r != "secrets");
            }
        }
        roles
            .replace(&name, &PostParams::default(), &role)
            .await
            .expect("revoke secrets");
    }
    eventually(WAIT, "reading Secrets is denied", || async {
        (!can_i(&kubeconfig, &["get", "secrets", "-n", &ns.name])).then_some(())
    })
    .await;
    // The run-now annotation makes a reconcile; the Secret's version it read before is
    // still the current one as far as it can tell, so it goes on with that.
    ok(kubectl(&[
        "annotate",
        "ptask",
        "tick",
        "-n",
        &ns.name,
        "celeryoperator.io/run-now=after-revoke",
    ]));
    eventually(WAIT, "the run-now acted on", || async {
        let acted = jsonpath(&ns.name, "ptask/tick", "{.status.lastRunNow}");
        (acted == "after-revoke").then_some(())
    })
    .await;
    let before = ran(&redis);
    eventually(WAIT, "the task still runs on schedule", || async {
        (ran(&redis) >= before + 3).then_some(())
    })
    .await;
    let seen = events(&ns.name, "involvedObject.kind=PeriodicTask");
    assert!(
        !seen.contains("BrokerNotFound"),
        "an unreadable Secret is not a missing one: {seen}"
    );
    let ready = ok(kubectl(&[
        "get",
        "ptask",
        "tick",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]));
    assert_eq!(ready, "True");
}
