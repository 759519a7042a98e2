//! Proof that the local control plane is a real Kubernetes: CRDs, workload controllers with
//! kwok-run pods, garbage collection, ServiceAccount tokens and RBAC.

use std::time::Duration;

use celery_operator_e2e::{TestNamespace, client, eventually, kubectl, ok, repo_root};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

#[tokio::test]
async fn committed_crds_apply_and_kubectl_get_celery_answers() {
    let crds = repo_root().join("crds");
    ok(kubectl(&[
        "apply",
        "--server-side",
        "-f",
        crds.to_str().expect("utf-8 path"),
    ]));
    ok(kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/rediscaches.celeryoperator.io",
        "crd/workerpools.celeryoperator.io",
        "crd/periodictasks.celeryoperator.io",
    ]));
    let client = client().await;
    let ns = TestNamespace::new(&client, "smoke-crd").await;
    // A RedisCache created through the category must be listed by `kubectl get celery`.
    ok(celery_operator_e2e::kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata:\n  name: smoke\nspec:\n  purpose: broker\n",
        ),
    ));
    let listed = ok(kubectl(&["get", "celery", "-n", &ns.name, "-o", "name"]));
    assert_eq!(listed.trim(), "rediscache.celeryoperator.io/smoke");
    let short = ok(kubectl(&[
        "get",
        "rcache",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.items[0].spec.purpose}",
    ]));
    assert_eq!(short, "broker");
}

async fn ready_pods(client: &Client, ns: &str, selector: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    list.items
        .iter()
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

#[tokio::test]
async fn deployment_and_statefulset_pods_become_running_and_ready() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "smoke-workloads").await;
    let pod_spec = json!({"containers": [{"name": "main", "image": "registry.invalid/none:1"}]});
    let deploy: Deployment = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}
    }));
    let sts: StatefulSet = from_json(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec}}
    }));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");
    statefulsets
        .create(&PostParams::default(), &sts)
        .await
        .expect("create statefulset");

    eventually(WAIT, "2 ready web pods and deployment status", || async {
        let d = deployments.get("web").await.ok()?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        (ready == 2 && ready_pods(&client, &ns.name, "app=web").await == 2).then_some(())
    })
    .await;
    eventually(WAIT, "2 ready db pods and statefulset status", || async {
        let s = statefulsets.get("db").await.ok()?;
        let ready = s.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        (ready == 2 && ready_pods(&client, &ns.name, "app=db").await == 2).then_some(())
    })
    .await;
    // Ordinal pods prove the StatefulSet controller, not just kwok, did the work.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels("app=db"))
        .await
        .expect("list")
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1"]);
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "smoke-gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owner = cms
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .expect("owner");
    let dependent: ConfigMap = from_json(json!({
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().expect("uid")
        }]}
    }));
    cms.create(&PostParams::default(), &dependent)
        .await
        .expect("dependent");
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    eventually(
        WAIT,
        "the garbage collector to delete the dependent",
        || async { cms.get_opt("dependent").await.ok()?.is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn service_account_token_authenticates_and_rbac_denies_what_is_not_granted() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "smoke-rbac").await;
    let pp = PostParams::default();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.create(&pp, &from_json(json!({"metadata": {"name": "reader"}})))
        .await
        .expect("sa");
    Api::<Role>::namespaced(client.clone(), &ns.name)
        .create(&pp, &from_json(json!({
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
        })))
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .create(&pp, &from_json(json!({
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name}]
        })))
        .await
        .expect("rolebinding");

    let request: TokenRequest =
        from_json(json!({"spec": {"audiences": [], "expirationSeconds": 600}}));
    let token = sas
        .create_token_request("reader", &pp, &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token status")
        .token
        .expect("token");

    let mut config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(celery_operator_e2e::kubeconfig_path())
            .expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let sa_client = Client::try_from(config).expect("sa client");

    let review: SelfSubjectReview = Api::all(sa_client.clone())
        .create(&pp, &from_json(json!({})))
        .await
        .expect("SelfSubjectReview");
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        user.as_deref(),
        Some(format!("system:serviceaccount:{}:reader", ns.name).as_str())
    );

    let granted: Api<ConfigMap> = Api::namespaced(sa_client.clone(), &ns.name);
    granted
        .list(&ListParams::default())
        .await
        .expect("configmaps are granted");
    let denied: Api<Secret> = Api::namespaced(sa_client.clone(), &ns.name);
    match denied.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing secrets must be forbidden, got {other:?}"),
    }
    match granted
        .create(&pp, &from_json(json!({"metadata": {"name": "x"}})))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("creating a configmap must be forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn a_test_namespace_is_deleted_when_the_test_drops_it() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "dropped").await;
    let name = ns.name.clone();
    ok(kubectl(&[
        "create",
        "configmap",
        "left",
        "-n",
        &name,
        "--from-literal=a=b",
    ]));
    drop(ns);
    // Gone, or on its way (the namespace controller empties it first).
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let left = nss.get_opt(&name).await.expect("get namespace");
    assert!(
        left.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace {name} was left behind"
    );
    eventually(WAIT, "the namespace is gone", || async {
        nss.get_opt(&name)
            .await
            .ok()
            .and_then(|n| n.is_none().then_some(()))
    })
    .await;
}
