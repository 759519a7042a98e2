//! Autoscaler reaction time: a burst of real Celery messages is pushed (LPUSH of the exact
//! protocol v2 envelope) and the clock stops when the pool's Deployment has the replicas the
//! backlog asks for; default 1 s poll interval. Two series of 50 bursts:
//! - growing: each burst adds one message to the waiting ones (1 -> 2 -> ... -> 50 replicas);
//! - from zero: the queue is emptied and the pool scaled to zero, then 1 to 20 messages are
//!   pushed at once (0 -> N replicas).
//!
//! Each push waits a spread of 0-999 ms first, so bursts land at every phase of the poll
//! cycle (right after the previous reaction they would all land just after a poll).
//!
//! Needs a running control plane: e2e/bench/run-autoscale.sh.

use std::time::{Duration, Instant};

use celery_operator::celery::{TaskMessage, TransportOptions};
use celery_operator_e2e::measure::percentile;
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{TestNamespace, broker_url_secret, client, kubectl_with_input, ok};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

const BURSTS: usize = 50;

#[tokio::main]
async fn main() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-autoscale").await;
    let redis = RedisServer::start(None, None, &["--save", ""]);
    broker_url_secret(&ns.name, "broker", &redis.url(0));
    let manifest = "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {name: pool}\nspec:\n  image: proj:1\n  app: tasks\n  broker: {secretKeyRef: {name: broker, key: url}}\n  autoscaling: {minReplicas: 0, maxReplicas: 100, targetTasksPerReplica: 1, scaleDownStabilization: 1s, idleBeforeScaleToZero: 1s}\n";
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
    // Deterministic spread over the poll cycle: 0, 379, 758, 137, ... ms.
    let phase = |burst: usize| Duration::from_millis((burst as u64 * 379) % 1000);
    let push = |n: usize| {
        let mut args = vec!["LPUSH".to_string(), "celery".to_string()];
        for i in 0..n {
            let msg =
                TaskMessage::new("tasks.add", uuid::Uuid::new_v4()).args(serde_json::json!([i, 1]));
            let encoded = msg
                .encode(&transport, uuid::Uuid::new_v4(), chrono::Utc::now())
                .expect("valid message");
            assert_eq!(encoded.queue_key, "celery");
            args.push(encoded.envelope);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(redis.cli(&args).status.success());
        Instant::now()
    };
    let wait_for = |want: i32, what: String| {
        let replicas = &replicas;
        async move {
            let since = Instant::now();
            while replicas().await != Some(want) {
                assert!(since.elapsed() < Duration::from_secs(60), "{what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    let mut growing = Vec::with_capacity(BURSTS);
    for burst in 1..=BURSTS {
        tokio::time::sleep(phase(burst)).await;
        let pushed = push(1);
        wait_for(
            i32::try_from(burst).expect("small"),
            format!("no reaction to burst {burst}"),
        )
        .await;
        growing.push(pushed.elapsed());
    }

    let mut from_zero = Vec::with_capacity(BURSTS);
    for burst in 1..=BURSTS {
        assert!(redis.cli(&["DEL", "celery"]).status.success());
        wait_for(0, format!("no scale to zero before burst {burst}")).await;
        let n = 1 + (burst * 7) % 20;
        tokio::time::sleep(phase(burst)).await;
        let pushed = push(n);
        wait_for(
            i32::try_from(n).expect("small"),
            format!("no reaction to burst {burst} of {n}"),
        )
        .await;
        from_zero.push(pushed.elapsed());
    }

    println!(
        "autoscaler reaction (burst pushed -> Deployment spec.replicas), {BURSTS} bursts per series, poll interval 1s"
    );
    println!("| series | p50 | p99 | max | min |");
    println!("|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    for (name, mut reactions) in [
        ("growing, +1 message", growing),
        ("from zero, 1-20 messages", from_zero),
    ] {
        reactions.sort();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(percentile(&reactions, 0.5)),
            ms(percentile(&reactions, 0.99)),
            ms(reactions[reactions.len() - 1]),
            ms(reactions[0])
        );
    }
}
