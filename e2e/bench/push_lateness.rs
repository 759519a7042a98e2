//! Push lateness (push time minus slot instant) of the operator's engine, every task every
//! second, against one real redis-server, side by side with a real `celery beat` given the
//! same schedules against the same Redis (e2e/bench/beat.py).
//!
//! Runs: 10,000 tasks in the engine (phases spread over the second, as creation times
//! spread them, and all on the same instant: the worst case), 1,000 tasks through the API
//! server (objects created with kubectl-equivalent calls, watched by the controller, status
//! written back; needs E2E_KUBECONFIG), and celery beat with 1,000 and 10,000 entries.
//!
//! `e2e/bench/run.sh` sets everything up; env: BENCH_SECONDS (measured window, default 30),
//! BENCH_SKIP_API=1, BENCH_SKIP_BEAT=1.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use celery_operator::api::periodic_task::PeriodicTask;
use celery_operator::broker::BrokerUrl;
use celery_operator::controller::Context;
use celery_operator::controller::periodic_task::engine::{Engine, Job};
use celery_operator::controller::periodic_task::stats::Snapshot;
use celery_operator::controller::periodic_task::{plan, run_with_engine};
use celery_operator::metrics::Metrics;
use celery_operator_e2e::celery::{app_dir, venv_bin};
use celery_operator_e2e::redis::RedisServer;
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

const WARMUP: Duration = Duration::from_secs(3);

fn seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

struct Row {
    name: String,
    tasks: usize,
    pushes: u64,
    expected: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Row {
    fn from_snapshot(name: &str, tasks: usize, s: &Snapshot) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Row {
            name: name.into(),
            tasks,
            pushes: s.samples,
            expected: tasks as u64 * seconds(),
            p50: ms(s.p50),
            p99: ms(s.p99),
            max: ms(s.max),
        }
    }
}

fn task_object(i: usize, anchor: DateTime<Utc>) -> PeriodicTask {
    let spec = serde_json::from_value(json!({
        "task": "tasks.add",
        "args": [i, 1],
        "schedule": {"every": "1s"},
        "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
    }))
    .expect("spec");
    let mut pt = PeriodicTask::new(&format!("t{i}"), spec);
    pt.metadata.namespace = Some("bench".into());
    pt.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    pt.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_microsecond(anchor.timestamp_micros()).expect("ts"),
    ));
    pt
}

/// `n` tasks straight into an engine; `spread` spreads their phases over the second.
async fn engine_run(redis: &RedisServer, n: usize, spread: bool) -> Snapshot {
    redis.cli(&["FLUSHALL"]);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let engine = Engine::start(tx, None);
    let now = Utc::now();
    let base = DateTime::from_timestamp(now.timestamp() + 1, 0).expect("ts");
    for i in 0..n {
        let offset = if spread {
            TimeDelta::microseconds((i as i64 * 1_000_000) / n as i64)
        } else {
            TimeDelta::zero()
        };
        let pt = task_object(i, base + offset);
        let p = plan::build(&pt, now).expect("plan");
        engine.upsert(
            format!("bench/t{i}"),
            Job {
                plan: p,
                url: BrokerUrl::new(redis.url(0)),
                results: None,
                status_runs: Default::default(),
                run_now: None,
            },
        );
    }
    tokio::time::sleep(WARMUP).await;
    engine.stats.reset();
    tokio::time::sleep(Duration::from_secs(seconds())).await;
    let snap = engine.stats.snapshot();
    for i in 0..n {
        engine.remove(format!("bench/t{i}"));
    }
    snap
}

/// `n` PeriodicTasks created through the API server and run by the controller in-process.
async fn api_run(redis: &RedisServer, n: usize) -> Option<Snapshot> {
    let path = std::env::var_os("E2E_KUBECONFIG")?;
    redis.cli(&["FLUSHALL"]);
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    // 1,000 status writes a second need more than the default client-side budget.
    config.read_timeout = Some(Duration::from_secs(30));
    let client = kube::Client::try_from(config).expect("client");
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
    )
    .await
    .expect("namespace");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "broker"}, "stringData": {"url": redis.url(0)}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret");
    let gvk = kube::api::GroupVersionKind::gvk("celeryoperator.io", "v1alpha1", "PeriodicTask");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "periodictasks");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    // Phases spread over the second with startTime, as creation times would spread them.
    let start = Utc::now().timestamp() + 2;
    let created = futures_create(&api, n, start).await;
    eprintln!("  created {created} PeriodicTasks in {ns}");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Some(ns.clone()),
        Arc::new(Metrics::default()),
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = Engine::start(tx, None);
    let stats = engine.stats.clone();
    let controller = tokio::spawn(run_with_engine(ctx, engine, rx));
    tokio::time::sleep(WARMUP + Duration::from_secs(2)).await;
    stats.reset();
    tokio::time::sleep(Duration::from_secs(seconds())).await;
    let snap = stats.snapshot();
    controller.abort();
    let _ = nss.delete(&ns, &DeleteParams::background()).await;
    Some(snap)
}

async fn futures_create(api: &Api<DynamicObject>, n: usize, start: i64) -> usize {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let at = DateTime::from_timestamp(start, 0).expect("ts")
                    + TimeDelta::microseconds((i as i64 * 1_000_000) / n as i64);
                // Raw JSON: k8s Time would serialize startTime to whole seconds.
                let pt: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "celeryoperator.io/v1alpha1",
                    "kind": "PeriodicTask",
                    "metadata": {"name": format!("t{i}")},
                    "spec": {
                        "task": "tasks.add",
                        "args": [i, 1],
                        "schedule": {"every": "1s"},
                        "startTime": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
                    }
                }))
                .expect("object");
                api.create(&PostParams::default(), &pt).await.is_ok()
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
}

/// A real `celery beat` with `n` entries every second against the same Redis.
fn beat_run(redis: &RedisServer, n: usize) -> Option<Row> {
    if !venv_bin("python").exists() {
        return None;
    }
    redis.cli(&["FLUSHALL"]);
    let script = celery_operator_e2e::repo_root().join("e2e/bench/beat.py");
    let out = Command::new(venv_bin("python"))
        .arg(script)
        .args([
            "--tasks",
            &n.to_string(),
            "--warmup",
            &WARMUP.as_secs().to_string(),
            "--seconds",
            &seconds().to_string(),
        ])
        .env("CELERY_BROKER_URL", redis.url(0))
        .env("PYTHONPATH", app_dir())
        .output()
        .expect("python");
    if !out.status.success() {
        eprintln!("beat failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        eprintln!(
            "beat.py printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        return None;
    };
    eprintln!(
        "  beat sent {} messages in all, to {} of {n} entries",
        v["sent"], v["entries_sent"]
    );
    Some(Row {
        name: "celery beat (same Redis)".into(),
        tasks: n,
        pushes: v["pushes"].as_u64().unwrap_or(0),
        expected: n as u64 * seconds(),
        p50: v["p50_ms"].as_f64().unwrap_or(f64::NAN),
        p99: v["p99_ms"].as_f64().unwrap_or(f64::NAN),
        max: v["max_ms"].as_f64().unwrap_or(f64::NAN),
    })
}

#[tokio::main]
async fn main() {
    let redis = RedisServer::start(None, None, &["--save", "", "--appendonly", "no"]);
    let mut rows = Vec::new();
    eprintln!("engine, 10,000 tasks, phases spread over the second ...");
    rows.push(Row::from_snapshot(
        "operator engine (in-process)",
        10_000,
        &engine_run(&redis, 10_000, true).await,
    ));
    eprintln!("engine, 10,000 tasks, all on the same instant ...");
    rows.push(Row::from_snapshot(
        "operator engine, same instant",
        10_000,
        &engine_run(&redis, 10_000, false).await,
    ));
    if std::env::var("BENCH_SKIP_API").is_err() {
        eprintln!("API server, 1,000 PeriodicTasks ...");
        match api_run(&redis, 1_000).await {
            Some(s) => rows.push(Row::from_snapshot("operator via API server", 1_000, &s)),
            None => eprintln!("  skipped: E2E_KUBECONFIG is not set"),
        }
    }
    if std::env::var("BENCH_SKIP_BEAT").is_err() {
        for n in [1_000, 10_000] {
            eprintln!("celery beat, {n} entries ...");
            if let Some(row) = beat_run(&redis, n) {
                rows.push(row);
            }
        }
    }
    println!(
        "\npush lateness, every task every second, {} s measured after {} s warm-up",
        seconds(),
        WARMUP.as_secs()
    );
    println!(
        "| {:<32} | {:>6} | {:>15} | {:>9} | {:>9} | {:>9} |",
        "publisher", "tasks", "pushes/expected", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<34}|{:->8}|{:->17}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", "", ""
    );
    let ms = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "n/a".into()
        }
    };
    for r in rows {
        println!(
            "| {:<32} | {:>6} | {:>15} | {:>9} | {:>9} | {:>9} |",
            r.name,
            r.tasks,
            format!("{}/{}", r.pushes, r.expected),
            ms(r.p50),
            ms(r.p99),
            ms(r.max)
        );
    }
}
