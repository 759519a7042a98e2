//! The real node (`e2e/cluster/node.sh`): containers from the locally built images really run
//! under containerd and runc, with the bridge network, kube-proxy Services, CoreDNS, hostPath
//! volumes, rollouts and graceful termination; the kwok nodes beside it take only the pods
//! that tolerate their taint.
//!
//! Every test is named `real_node_*`: `make e2e` skips them when the node is off
//! (`E2E_REAL_NODE=0`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use celery_operator_e2e::pods::{
    POD_WAIT as WAIT, finished_pod_logs, from_json, is_ready, ready_pod, script_pod,
};
use celery_operator_e2e::{
    KWOK_TAINT_KEY, REAL_NODE, TestNamespace, client, eventually, image, kubectl, ok,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// The container ID the runtime gave the pod's first container (`containerd://…`).
fn container_id(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .clone()
}

fn redis_pod(name: &str, labels: serde_json::Value) -> Pod {
    from_json(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{
            "name": "redis", "image": image("redis"), "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 6379}],
            "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 1}
        }]}
    }))
}

fn redis_service(name: &str, selector: serde_json::Value) -> Service {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 6379, "targetPort": 6379}]}
    }))
}

#[tokio::test]
async fn real_node_redis_pod_runs_and_kubectl_logs_and_exec_reach_it() {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, "node-redis").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &redis_pod("redis", json!({"app": "redis"})),
    )
    .await
    .expect("create pod");
    let pod = ready_pod(&pods, "redis").await;
    assert_eq!(node_of(&pod), Some(REAL_NODE));
    let id = container_id(&pod).expect("container id");
    assert!(id.starts_with("containerd://"), "{id}");
    assert!(
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| ip.starts_with("10.245.0.")),
        "pod IP on the node's bridge: {:?}",
        pod.status
    );

    // kubectl logs: the API server reaches the kubelet, which reads the container's log.
    let logs = ok(kubectl(&["logs", "-n", &ns.name, "redis"]));
    assert!(logs.contains("Ready to accept connections"), "{logs}");

    // kubectl exec: a real process in the container, as the image's user.
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "-n", ns.name.as_str(), "redis", "--"];
        all.extend_from_slice(args);
        ok(kubectl(&all)).trim().to_owned()
    };
    assert_eq!(exec(&["id", "-u"]), "999");
    let token = uuid::Uuid::new_v4().to_string();
    assert_eq!(exec(&["redis-cli", "set", "token", &token]), "OK");
    assert_eq!(exec(&["redis-cli", "get", "token"]), token);
    let ps = exec(&["cat", "/proc/1/cmdline"]);
    assert!(
        ps.starts_with("redis-server"),
        "pid 1 of the container: {ps}"
    );
}

/// PING over plain TCP, RESP inline: the reply of a real Redis.
fn redis_ping(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn real_node_pods_reach_a_service_by_dns_name_and_the_host_by_cluster_ip() {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, "node-svc").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    pods.create(&pp, &redis_pod("redis", json!({"app": "redis"})))
        .await
        .expect("create pod");
    let svc = services
        .create(&pp, &redis_service("cache", json!({"app": "redis"})))
        .await
        .expect("create service");
    ready_pod(&pods, "redis").await;

    // From a second pod: the Service's DNS name through CoreDNS, the ClusterIP through
    // kube-proxy, a real PONG from the first pod.
    let fqdn = format!("cache.{}.svc.cluster.local", ns.name);
    pods.create(
        &pp,
        &script_pod(
            "client",
            &format!(
                "getent hosts {fqdn} && getent hosts cache && redis-cli -h {fqdn} ping \
                 && redis-cli -h cache set from client"
            ),
        ),
    )
    .await
    .expect("create client");
    let logs = finished_pod_logs(&pods, &ns.name, "client", "Succeeded").await;
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("cluster IP assigned");
    assert!(
        logs.lines()
            .any(|l| l.starts_with(&format!("{cluster_ip} ")) && l.contains(&fqdn)),
        "the name resolves to the ClusterIP {cluster_ip}: {logs}"
    );
    assert!(logs.contains("PONG"), "{logs}");
    let value = ok(kubectl(&[
        "exec",
        "-n",
        &ns.name,
        "redis",
        "--",
        "redis-cli",
        "get",
        "from",
    ]));
    assert_eq!(value.trim(), "client");

    // Names outside the cluster never resolve: CoreDNS answers NXDOMAIN, forwards nothing.
    pods.create(
        &pp,
        &script_pod(
            "outside",
            "if getent hosts deb.debian.org; then exit 1; fi; \
             getent hosts kubernetes.default.svc.cluster.local",
        ),
    )
    .await
    .expect("create outside");
    let logs = finished_pod_logs(&pods, &ns.name, "outside", "Succeeded").await;
    assert!(logs.starts_with("10.0.0.1 "), "{logs}");

    // From the host: the ClusterIP, translated by kube-proxy's rules to the pod.
    let addr = format!("{cluster_ip}:6379");
    let reply = eventually(WAIT, "PONG from the host by ClusterIP", || async {
        redis_ping(&addr).ok()
    })
    .await;
    assert_eq!(reply, "+PONG\r\n");
}

#[tokio::test]
async fn real_node_statefulset_replacement_pod_reads_what_its_predecessor_wrote() {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, "node-sts").await;
    let pp = PostParams::default();
    let sts: StatefulSet = from_json(json!({
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    // As the image's user (uid 999): the volume is writable by non-root pods.
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "redis", "image": image("redis"), "imagePullPolicy": "IfNotPresent",
                        "command": ["redis-server", "--dir", "/data", "--appendonly", "yes"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 1}
                    }]
                }
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}
            }]
        }
    }));
    Api::<StatefulSet>::namespaced(client.clone(), &ns.name)
        .create(&pp, &sts)
        .await
        .expect("create statefulset");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let first = ready_pod(&pods, "db-0").await;
    assert_eq!(node_of(&first), Some(REAL_NODE));

    // The default StorageClass bound the claim to a hostPath volume: a real directory here.
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns.name)
        .get("data-db-0")
        .await
        .expect("claim");
    let spec = pvc.spec.expect("claim spec");
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(spec.volume_name.as_deref().expect("bound"))
        .await
        .expect("volume");
    let dir = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .expect("hostPath volume");

    let token = uuid::Uuid::new_v4().to_string();
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "-n", ns.name.as_str(), "db-0", "--"];
        all.extend_from_slice(args);
        ok(kubectl(&all)).trim().to_owned()
    };
    assert_eq!(exec(&["redis-cli", "set", "token", &token]), "OK");
    let on_disk = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("volume directory {dir}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        on_disk.iter().any(|f| f.starts_with("appendonly")),
        "Redis's append-only file in {dir}: {on_disk:?}"
    );

    let first_uid = first.uid().expect("uid");
    pods.delete("db-0", &DeleteParams::default())
        .await
        .expect("delete pod");
    let second = eventually(WAIT, "a replacement db-0, ready", || async {
        let p = pods.get_opt("db-0").await.ok().flatten()?;
        (p.uid().as_deref() != Some(first_uid.as_str()) && is_ready(&p)).then_some(p)
    })
    .await;
    assert_ne!(container_id(&second), container_id(&first));
    assert_eq!(exec(&["redis-cli", "get", "token"]), token);
}

/// The events a container's TERM trap writes to a volume, one `<event> <hostname> <ms>` a
/// line: `start`, `term` when TERM arrives, `done` when its work (sleep `work` seconds) is over.
fn graceful_container(work: u32) -> serde_json::Value {
    let log = "/events/log";
    json!({
        "name": "main", "image": image("redis"), "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", format!(
            "ev() {{ echo \"$1 $(cat /etc/hostname) $(date +%s%3N)\" >> {log}; }}; \
             trap 'ev term; sleep {work}; ev done; exit 0' TERM; \
             ev start; while true; do sleep 0.1; done"
        )],
        "volumeMounts": [{"name": "events", "mountPath": "/events"}]
    })
}

/// (event, hostname, milliseconds) lines of the events file on the host.
fn events_file(path: &str) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// A claim on the default StorageClass, and the host directory it was bound to.
async fn events_volume(client: &Client, ns: &str) -> String {
    let pvc: PersistentVolumeClaim = from_json(json!({
        "metadata": {"name": "events"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    }));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    claims
        .create(&PostParams::default(), &pvc)
        .await
        .expect("claim");
    let volume = eventually(WAIT, "the events claim bound", || async {
        claims.get("events").await.ok()?.spec?.volume_name
    })
    .await;
    Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .expect("volume")
        .spec
        .and_then(|s| s.host_path)
        .map(|h| format!("{}/log", h.path))
        .expect("hostPath volume")
}

#[tokio::test]
async fn real_node_rollout_replaces_containers_after_their_term_trap_finishes_its_work() {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, "node-rollout").await;
    let log = events_volume(&client, &ns.name).await;
    let deploy: Deployment = from_json(json!({
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 1,
            // The old pod goes first (the claim is ReadWriteOnce, one pod at a time).
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [graceful_container(3)],
                    "volumes": [{"name": "events", "persistentVolumeClaim": {"claimName": "events"}}]
                }
            }
        }
    }));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let ready = |want: usize| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=app"))
                .await
                .ok()?;
            let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == want).then_some(ready)
        }
    };
    let old = eventually(WAIT, "the first pod ready", || ready(1))
        .await
        .remove(0);
    let old_name = old.name_any();
    eventually(WAIT, "the first container started", || async {
        events_file(&log)
            .iter()
            .any(|(e, h, _)| e == "start" && *h == old_name)
            .then_some(())
    })
    .await;

    // A new template: the Deployment controller replaces the pod, the kubelet stops the old
    // container with TERM and waits for it.
    deployments
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await
        .expect("patch");
    let new = eventually(WAIT, "the replacement pod ready", || async {
        let p = ready(1).await?.remove(0);
        (p.name_any() != old_name).then_some(p)
    })
    .await;
    assert_eq!(node_of(&new), Some(REAL_NODE));
    assert_ne!(container_id(&new), container_id(&old));

    let events = events_file(&log);
    let at = |event: &str, host: &str| {
        events
            .iter()
            .find(|(e, h, _)| e == event && h == host)
            .map(|(_, _, t)| *t)
            .unwrap_or_else(|| panic!("no {event} of {host} in {events:?}"))
    };
    let (term, done) = (at("term", &old_name), at("done", &old_name));
    assert!(
        done >= term + 3000,
        "the trap's 3 s of work ran to its end: term {term}, done {done}"
    );
    assert!(
        at("start", &new.name_any()) >= done,
        "the new container started after the old one finished: {events:?}"
    );
    eventually(WAIT, "the old pod deleted", || async {
        pods.get_opt(&old_name)
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
}

#[tokio::test]
async fn real_node_termination_grace_period_ends_a_container_that_works_too_long() {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, "node-grace").await;
    let log = events_volume(&client, &ns.name).await;
    let pod: Pod = from_json(json!({
        "metadata": {"name": "slow"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [graceful_container(60)],
            "volumes": [{"name": "events", "persistentVolumeClaim": {"claimName": "events"}}]
        }
    }));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    ready_pod(&pods, "slow").await;
    eventually(WAIT, "the container started", || async {
        events_file(&log)
            .iter()
            .any(|(e, _, _)| e == "start")
            .then_some(())
    })
    .await;

    let started = Instant::now();
    pods.delete("slow", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "the pod gone", || async {
        pods.get_opt("slow")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
    let took = started.elapsed();
    let events = events_file(&log);
    assert!(
        events.iter().any(|(e, _, _)| e == "term"),
        "TERM reached the container: {events:?}"
    );
    assert!(
        !events.iter().any(|(e, _, _)| e == "done"),
        "killed before its 60 s of work ended: {events:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(30),
        "the 2 s grace period, then KILL: gone after {took:?}"
    );
}

#[tokio::test]
async fn real_node_only_pods_tolerating_the_kwok_taint_go_to_a_fake_node() {
    let client = client().await;
    let ns = TestNamespace::real_node(&client, "node-kwok").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    let on_kwok = |name: &str, tolerate: bool| -> Pod {
        let tolerations = if tolerate {
            json!([{"key": KWOK_TAINT_KEY, "operator": "Equal", "value": "fake", "effect": "NoSchedule"}])
        } else {
            json!([])
        };
        from_json(json!({
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"type": "kwok"},
                "tolerations": tolerations,
                // Never pulled: kwok only pretends to run it.
                "containers": [{"name": "main", "image": "registry.invalid/none:1"}]
            }
        }))
    };
    pods.create(&pp, &on_kwok("tolerates", true))
        .await
        .expect("create");
    pods.create(&pp, &on_kwok("intolerant", false))
        .await
        .expect("create");
    let pod = ready_pod(&pods, "tolerates").await;
    let node = node_of(&pod).expect("scheduled");
    assert!(node.starts_with("kwok-node-"), "on {node}");

    // The other one is refused by the taint: unschedulable, on no node.
    let reason = eventually(WAIT, "intolerant pod unschedulable", || async {
        let p = pods.get_opt("intolerant").await.ok().flatten()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        cond.message
    })
    .await;
    assert!(reason.contains("untolerated taint"), "{reason}");
    let p = pods.get("intolerant").await.expect("get");
    assert_eq!(node_of(&p), None);
}
