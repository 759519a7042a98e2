//! What autoscaling costs the broker: 1,000 autoscaled WorkerPools (queues `celery` and
//! `mail`, default priority steps, 1 s poll interval) on one real Redis, the operator
//! running against the real control plane. After every pool has had its first reading, the
//! Redis commands per second, Redis CPU and operator CPU are measured over a window from
//! `INFO commandstats` and /proc.
//! Needs a running control plane: e2e/bench/run-autoscale.sh.
//! Env: BENCH_POOLS (default 1000), BENCH_SECONDS (default 30).

use std::time::{Duration, Instant};

use celery_operator::api::WorkerPool;
use celery_operator_e2e::measure::{command_rates, command_stats, process_cpu, redis_cpu};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{TestNamespace, broker_url_secret, client, kubectl_with_input, ok};
use kube::Api;
use kube::api::ListParams;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let pools = env_number("BENCH_POOLS", 1000);
    let window = Duration::from_secs(env_number("BENCH_SECONDS", 30));
    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-cost").await;
    let redis = RedisServer::start(None, None, &["--save", ""]);
    broker_url_secret(&ns.name, "broker", &redis.url(0));
    let manifest: String = (0..pools)
        .map(|i| {
            format!(
                "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {{name: pool-{i}}}\nspec:\n  image: proj:1\n  app: tasks\n  queues: [celery, mail]\n  broker: {{secretKeyRef: {{name: broker, key: url}}}}\n  autoscaling: {{minReplicas: 0, maxReplicas: 10}}\n---\n"
            )
        })
        .collect();
    let started = Instant::now();
    ok(kubectl_with_input(
        &["apply", "--server-side", "-n", &ns.name, "-f", "-"],
        Some(&manifest),
    ));
    let operator = Operator::start(&ns.name);
    let api: Api<WorkerPool> = Api::namespaced(client.clone(), &ns.name);
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        let active = list
            .items
            .iter()
            .filter(|wp| {
                wp.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "ScalingActive" && c.status == "True")
                })
            })
            .count();
        if active as u64 == pools {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {active}/{pools} pools got a first reading"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let settle = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let (stats0, redis_cpu0, op_cpu0) = (
        command_stats(&redis),
        redis_cpu(&redis),
        process_cpu(operator.pid()),
    );
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (stats1, redis_cpu1, op_cpu1) = (
        command_stats(&redis),
        redis_cpu(&redis),
        process_cpu(operator.pid()),
    );
    let secs = t0.elapsed().as_secs_f64();

    println!(
        "autoscaling cost: {pools} WorkerPools x 2 queues x 4 priority keys, poll interval 1s, one redis-server, {secs:.0} s window (all pools reading after {:.0} s)",
        settle.as_secs_f64()
    );
    println!("| command | calls/s | Redis µs/s |");
    println!("|---|---|---|");
    let mut total = 0.0;
    for (name, (rate, usec)) in command_rates(&stats0, &stats1, secs) {
        // The bench's own INFO calls are not the autoscaler's.
        if name == "info" {
            continue;
        }
        total += rate;
        println!("| {name} | {rate:.0} | {usec:.0} |");
    }
    println!("| **total** | **{total:.0}** | |");
    println!(
        "Redis CPU {:.1} % of one core; operator CPU {:.1} % of one core",
        (redis_cpu1 - redis_cpu0) / secs * 100.0,
        (op_cpu1 - op_cpu0) / secs * 100.0
    );
}
