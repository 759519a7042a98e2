//! Autoscaler reaction time: a burst of real Celery messages is pushed (LPUSH of the exact
//! protocol v2 envelope) and the clock stops when the pool's Deployment has the replicas the
//! backlog asks for. 50 bursts of one more message each, default 1 s poll interval.
//! Needs a running control plane: e2e/bench/run-autoscale.sh.

use std::time::{Duration, Instant};

use celery_operator::celery::{TaskMessage, TransportOptions};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{TestNamespace, client, kubectl, kubectl_with_input, ok};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

const BURSTS: usize = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-autoscale").await;
    let redis = RedisServer::start(None, None, &["--save", ""]);
    ok(kubectl(&[
        "create",
        "secret",
        "generic",
        "broker",
        "-n",
        &ns.name,
        &format!("--from-literal=url={}", redis.url(0)),
    ]));
    let manifest = "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {name: pool}\nspec:\n  image: proj:1\n  app: tasks\n  broker: {secretKeyRef: {name: broker, key: url}}\n  autoscaling: {minReplicas: 0, maxReplicas: 100, targetTasksPerReplica: 1}\n";
    ok(kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(manifest),
    ));
    let _operator = Operator::start(&ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replicas = || async {
        deployments
            .get("pool")
            .await
            .ok()
            .and_then(|d| d.spec?.replicas)
    };
    let start = Instant::now();
    while replicas().await != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pool never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transport = TransportOptions::default();
    let mut reactions = Vec::with_capacity(BURSTS);
    for burst in 1..=BURSTS {
        let msg =
            TaskMessage::new("tasks.add", uuid::Uuid::new_v4()).args(serde_json::json!([burst, 1]));
        let encoded = msg
            .encode(&transport, uuid::Uuid::new_v4(), chrono::Utc::now())
            .expect("valid message");
        let out = redis.cli(&["LPUSH", &encoded.queue_key, &encoded.envelope]);
        assert!(out.status.success());
        let pushed = Instant::now();
        let want = i32::try_from(burst).expect("small");
        loop {
            if replicas().await == Some(want) {
                break;
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(30),
                "no reaction to burst {burst}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reactions.push(pushed.elapsed());
    }
    reactions.sort();
    println!(
        "autoscaler reaction (burst pushed -> Deployment spec.replicas), {BURSTS} bursts, poll interval 1s"
    );
    println!("| p50 | p99 | max | min |");
    println!("|---|---|---|---|");
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {} | {} | {} | {} |",
        ms(percentile(&reactions, 0.5)),
        ms(percentile(&reactions, 0.99)),
        ms(reactions[reactions.len() - 1]),
        ms(reactions[0])
    );
}
