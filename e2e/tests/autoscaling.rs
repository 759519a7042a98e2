//! WorkerPool autoscaling on the real backlog: real Redis, real Celery messages and workers,
//! the operator against the real control plane (pods by kwok).

use std::collections::BTreeMap;
use std::time::Duration;

use celery_operator_e2e::celery::{CeleryWorker, python};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{
    TestNamespace, broker_url_secret, client, events, eventually, kubectl, kubectl_with_input, ok,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    client: Client,
    ns: TestNamespace,
    redis: RedisServer,
    operator: Operator,
    /// kombu's `global_keyprefix` of the pool and its workers ("" for none).
    key_prefix: String,
}

async fn setup(prefix: &str, autoscaling: &str) -> Setup {
    setup_with_key_prefix(prefix, autoscaling, "").await
}

async fn setup_with_key_prefix(prefix: &str, autoscaling: &str, key_prefix: &str) -> Setup {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let redis = RedisServer::start(None, Some("sc4le"), &[]);
    broker_url_secret(&ns.name, "broker", &redis.url(0));
    let manifest = format!(
        "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {{name: pool}}\nspec:\n  image: proj:1\n  app: tasks\n  queues: [celery, mail]\n  concurrency: 2\n  broker: {{secretKeyRef: {{name: broker, key: url}}}}\n  autoscaling: {autoscaling}\n  transportOptions: {{globalKeyPrefix: {key_prefix:?}}}\n"
    );
    ok(kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&manifest),
    ));
    let operator = Operator::start(&ns.name);
    Setup {
        client,
        ns,
        redis,
        operator,
        key_prefix: key_prefix.into(),
    }
}

impl Setup {
    fn env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("CELERY_BROKER_URL".to_string(), self.redis.url(0)),
            ("E2E_GLOBAL_KEYPREFIX".to_string(), self.key_prefix.clone()),
        ])
    }

    /// Publishes `n` real Celery messages with Celery itself.
    fn push(&self, n: usize, queue: &str, priority: u8) {
        let out = python(
            &format!(
                "from tasks import add\nfor i in range({n}): add.apply_async((i, 1), queue={queue:?}, priority={priority})"
            ),
            &self.env(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn replicas(&self) -> Option<i32> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name)
            .get("pool")
            .await
            .ok()?
            .spec?
            .replicas
    }

    async fn wait_replicas(&self, want: i32, what: &str) {
        eventually(WAIT, what, || async {
            (self.replicas().await? == want).then_some(())
        })
        .await;
    }

    fn condition(&self, type_: &str) -> String {
        ok(kubectl(&[
            "get",
            "wpool",
            "pool",
            "-n",
            &self.ns.name,
            "-o",
            &format!(
                "jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}/{{.status.conditions[?(@.type==\"{type_}\")].reason}}"
            ),
        ]))
    }

    fn worker(&self, hostname: &str) -> CeleryWorker {
        let args: Vec<String> = [
            "-A",
            "tasks",
            "worker",
            "--queues=celery,mail",
            "--concurrency=2",
            "--pool=threads",
            "--loglevel=INFO",
            "-n",
            hostname,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        CeleryWorker::start(&args, &self.env())
    }
}

#[tokio::test]
async fn a_burst_scales_up_at_once_drains_and_scales_down_to_zero() {
    let s = setup("as-burst", "{minReplicas: 0, maxReplicas: 5, targetTasksPerReplica: 2, scaleDownStabilization: 3s, idleBeforeScaleToZero: 6s}").await;
    s.wait_replicas(0, "an idle pool starting at zero").await;
    // 5 on plain keys and 2 on priority keys: 7 waiting -> ceil(7 / 2) = 4.
    s.push(3, "celery", 0);
    s.push(2, "mail", 0);
    s.push(2, "celery", 9);
    s.wait_replicas(4, "4 replicas for 7 waiting tasks").await;
    let waiting = ok(kubectl(&[
        "get",
        "wpool",
        "pool",
        "-n",
        &s.ns.name,
        "-o",
        "jsonpath={.status.waiting}",
    ]));
    assert_eq!(waiting, "7", "the priority keys count");
    assert_eq!(s.condition("ScalingActive"), "True/ValidMetric");
    let columns = ok(kubectl(&["get", "wpool", "-n", &s.ns.name]));
    assert!(
        columns.contains("BACKLOG") && columns.contains("DESIRED"),
        "{columns}"
    );

    let worker = s.worker("celery@drainer");
    eventually(WAIT, "the worker to drain the queues", || async {
        let left: u64 = ["celery", "mail", "celery\x06\x169"]
            .iter()
            .map(|k| {
                String::from_utf8_lossy(&s.redis.cli(&["LLEN", k]).stdout)
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(1)
            })
            .sum();
        (left == 0).then_some(())
    })
    .await;
    // Down to one warm worker after the stabilization window, to zero after the idle period.
    s.wait_replicas(1, "scale down to one after the window")
        .await;
    s.wait_replicas(0, "scale to zero after the idle period")
        .await;
    drop(worker);
    // And from zero to one as soon as anything waits.
    s.push(1, "celery", 0);
    s.wait_replicas(1, "0 -> 1 on one waiting task").await;
}

#[tokio::test]
async fn min_and_max_replicas_bound_the_scale_and_are_reported() {
    let s = setup(
        "as-max",
        "{minReplicas: 2, maxReplicas: 3, targetTasksPerReplica: 1}",
    )
    .await;
    s.wait_replicas(2, "the minimum with nothing waiting").await;
    eventually(WAIT, "ScalingLimited=True/TooFewReplicas", || async {
        (s.condition("ScalingLimited") == "True/TooFewReplicas").then_some(())
    })
    .await;
    s.push(20, "celery", 5);
    s.wait_replicas(3, "the maximum").await;
    eventually(WAIT, "ScalingLimited=True/TooManyReplicas", || async {
        (s.condition("ScalingLimited") == "True/TooManyReplicas").then_some(())
    })
    .await;
}

#[tokio::test]
async fn busy_workers_keep_replicas_and_scale_in_removes_idle_pods_first() {
    // Under a kombu key prefix: queues, unacked and the heartbeat channel all carry it.
    let s = setup_with_key_prefix("as-busy", "{minReplicas: 0, maxReplicas: 4, targetTasksPerReplica: 1, scaleDownStabilization: 8s, idleBeforeScaleToZero: 2s}", "app:").await;
    s.push(2, "celery", 0);
    s.wait_replicas(2, "2 replicas for 2 tasks").await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns.name);
    let names = || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=pool"))
            .await
            .ok()?;
        Some(
            list.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
                .collect::<Vec<_>>(),
        )
    };
    let all = eventually(WAIT, "the pool's 2 pods", || async {
        names().await.filter(|n| n.len() == 2)
    })
    .await;
    // A real worker named like the second pod runs a long task (the list is then empty).
    let busy = all[1].clone();
    let _worker = s.worker(&format!("celery@{busy}"));
    let out = python(
        "from tasks import sleep\nsleep.apply_async((40,), queue='celery')",
        &s.env(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(WAIT, "the busy pod's deletion cost", || async {
        let p = pods.get(&busy).await.ok()?;
        (p.annotations()
            .get("controller.kubernetes.io/pod-deletion-cost")?
            == "1")
            .then_some(())
    })
    .await;
    // After the window the pool shrinks to the one running task: the idle pod goes.
    s.wait_replicas(1, "scale in to the one running task").await;
    let left = eventually(WAIT, "one pod left", || async {
        names().await.filter(|n| n.len() == 1)
    })
    .await;
    assert_eq!(
        left.as_slice(),
        std::slice::from_ref(&busy),
        "the ReplicaSet removed the idle pod, not the busy one"
    );
    let load = ok(kubectl(&[
        "get",
        "wpool",
        "pool",
        "-n",
        &s.ns.name,
        "-o",
        "jsonpath={.status.waiting}/{.status.inFlight}",
    ]));
    assert_eq!(load, "0/1", "empty lists, one task running");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.replicas().await,
        Some(1),
        "a running task keeps its worker beyond the idle period"
    );
}

#[tokio::test]
async fn an_unreachable_broker_holds_replicas_and_sets_the_condition() {
    let mut s = setup("as-down", "{minReplicas: 0, maxReplicas: 5, targetTasksPerReplica: 1, scaleDownStabilization: 1s, idleBeforeScaleToZero: 1s}").await;
    s.push(3, "celery", 0);
    s.wait_replicas(3, "3 replicas").await;
    s.redis.stop();
    eventually(WAIT, "ScalingActive=False/BrokerUnreachable", || async {
        (s.condition("ScalingActive") == "False/BrokerUnreachable").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.replicas().await,
        Some(3),
        "replicas are held while the broker is unreachable"
    );
    // A new operator process that never read the broker holds them too (not minReplicas).
    s.operator.restart();
    eventually(WAIT, "the new process to reconcile the pool", || async {
        s.operator
            .metric("celery_operator_reconciles_total{kind=\"WorkerPool\"}")
            .filter(|n| *n >= 1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.replicas().await,
        Some(3),
        "a restart while the broker is down keeps the replicas"
    );
    assert_eq!(s.condition("ScalingActive"), "False/BrokerUnreachable");
    let seen = events(&s.ns.name, "reason=BrokerUnreachable");
    assert!(
        seen.contains("Warning:BrokerUnreachable:holding 3 replicas"),
        "a Warning event is recorded: {seen}"
    );
    s.redis.restart();
    eventually(WAIT, "ScalingActive=True again", || async {
        (s.condition("ScalingActive") == "True/ValidMetric").then_some(())
    })
    .await;
    // And it scales again on what the broker holds.
    s.push(5, "celery", 0);
    s.wait_replicas(5, "scaling resumes: 5 replicas").await;
}
