//! What reading run outcomes costs: N PeriodicTasks (`tasks.add`, `every` BENCH_EVERY) on one
//! real Redis, a real Celery worker running them, the operator (release) on the real
//! control plane. Measured twice over a window once every task has run: without
//! `resultBackend`, then with it (every task re-applied to read outcomes from db 1, and every
//! task's status showing a SUCCESS). Prints Redis commands, API requests and operator CPU per
//! minute for both, so the difference is what outcomes cost.
//! Run with `e2e/bench/run-on-cluster.sh outcome_cost`.
//! Env: BENCH_TASKS (default 1000), BENCH_EVERY (default 30s), BENCH_SECONDS (default 120).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use celery_operator::api::PeriodicTask;
use celery_operator_e2e::celery::CeleryWorker;
use celery_operator_e2e::measure::{
    api_requests, command_rates, command_stats, process_cpu, rates, redis_cpu,
};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{TestNamespace, broker_url_secret, client, kubectl_with_input, ok};
use kube::Api;
use kube::api::ListParams;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn manifest(tasks: usize, every: &str, outcomes: bool) -> String {
    let results = if outcomes {
        "\n  resultBackend: {secretKeyRef: {name: results, key: url}}"
    } else {
        ""
    };
    (0..tasks)
        .map(|i| {
            format!(
                "apiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {{name: task-{i}}}\nspec:\n  task: tasks.add\n  args: [{i}, 1]\n  schedule: {{every: {every}}}\n  broker: {{secretKeyRef: {{name: broker, key: url}}}}{results}\n---\n"
            )
        })
        .collect()
}

/// Waits until `done` holds for every task's status; returns how long that took.
async fn wait_all(
    api: &Api<PeriodicTask>,
    tasks: usize,
    what: &str,
    done: impl Fn(&PeriodicTask) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        let count = list.items.iter().filter(|pt| done(pt)).count();
        if count == tasks {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "only {count}/{tasks} tasks {what}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Per-minute rates of Redis commands and API requests, and CPU, over `window`.
struct Window {
    redis: BTreeMap<String, f64>,
    redis_usec: BTreeMap<String, f64>,
    api: BTreeMap<String, f64>,
    redis_cpu: f64,
    operator_cpu: f64,
}

async fn measure(redis: &RedisServer, operator: &Operator, window: Duration) -> Window {
    let stats0 = command_stats(redis);
    let (api0, rcpu0, ocpu0) = (
        api_requests(),
        redis_cpu(redis),
        process_cpu(operator.pid()),
    );
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let stats1 = command_stats(redis);
    let (api1, rcpu1, ocpu1) = (
        api_requests(),
        redis_cpu(redis),
        process_cpu(operator.pid()),
    );
    let secs = t0.elapsed().as_secs_f64();
    let per_minute = |m: BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        m.into_iter().map(|(k, v)| (k, v * 60.0)).collect()
    };
    let commands = command_rates(&stats0, &stats1, secs);
    let column = |pick: fn(&(f64, f64)) -> f64| -> BTreeMap<String, f64> {
        commands
            .iter()
            .map(|(k, v)| (k.clone(), pick(v) * 60.0))
            .collect()
    };
    Window {
        redis: column(|v| v.0),
        redis_usec: column(|v| v.1),
        api: per_minute(rates(&api0, &api1, secs)),
        redis_cpu: (rcpu1 - rcpu0) / secs * 100.0,
        operator_cpu: (ocpu1 - ocpu0) / secs * 100.0,
    }
}

fn table(title: &str, without: &BTreeMap<String, f64>, with: &BTreeMap<String, f64>) {
    println!("| {title} | without outcomes /min | with outcomes /min |");
    println!("|---|---|---|");
    let keys: std::collections::BTreeSet<&String> = without.keys().chain(with.keys()).collect();
    for key in keys {
        // The bench's own INFO and /metrics reads, and watches, are not the operator's cost.
        if key == "info" || key.ends_with(' ') || key.starts_with("WATCH") {
            continue;
        }
        let at = |m: &BTreeMap<String, f64>| m.get(key).copied().unwrap_or(0.0);
        println!("| {key} | {:.0} | {:.0} |", at(without), at(with));
    }
}

#[tokio::main]
async fn main() {
    let tasks: usize = env_or("BENCH_TASKS", "1000").parse().expect("BENCH_TASKS");
    let every = env_or("BENCH_EVERY", "30s");
    let window = Duration::from_secs(
        env_or("BENCH_SECONDS", "120")
            .parse()
            .expect("BENCH_SECONDS"),
    );
    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-outcomes").await;
    let redis = RedisServer::start(None, None, &["--save", ""]);
    broker_url_secret(&ns.name, "broker", &redis.url(0));
    broker_url_secret(&ns.name, "results", &redis.url(1));
    let _worker = CeleryWorker::with_result_backend(&redis.url(0), &redis.url(1), "celery");
    let apply = |outcomes: bool| {
        ok(kubectl_with_input(
            &["apply", "--server-side", "-n", &ns.name, "-f", "-"],
            Some(&manifest(tasks, &every, outcomes)),
        ))
    };
    apply(false);
    let operator = Operator::start(&ns.name);
    let api: Api<PeriodicTask> = Api::namespaced(client.clone(), &ns.name);
    let first = wait_all(&api, tasks, "ran", |pt| {
        pt.status.as_ref().and_then(|s| s.total_runs).unwrap_or(0) >= 1
    })
    .await;
    let without = measure(&redis, &operator, window).await;
    apply(true);
    let settled = wait_all(&api, tasks, "showed SUCCESS", |pt| {
        pt.status
            .as_ref()
            .and_then(|s| s.last_result.as_deref())
            .is_some_and(|r| r.starts_with("SUCCESS"))
    })
    .await;
    let with = measure(&redis, &operator, window).await;

    println!(
        "outcome cost: {tasks} PeriodicTasks every {every} on one redis-server and one worker (threads, 4), {}s windows; all ran after {:.0} s, all showed SUCCESS {:.0} s after resultBackend was added",
        window.as_secs(),
        first.as_secs_f64(),
        settled.as_secs_f64()
    );
    println!("Redis commands (all clients: the worker's BRPOP, SETEX, PUBLISH... included):");
    table("command", &without.redis, &with.redis);
    println!("Redis µs per minute:");
    table("command", &without.redis_usec, &with.redis_usec);
    println!("API requests (all clients; the bench makes none in the windows):");
    table("verb resource", &without.api, &with.api);
    println!(
        "| CPU % of one core | without | with |\n|---|---|---|\n| redis-server | {:.1} | {:.1} |\n| operator | {:.1} | {:.1} |",
        without.redis_cpu, with.redis_cpu, without.operator_cpu, with.operator_cpu
    );
}
