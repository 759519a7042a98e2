//! PeriodicTasks at scale, through the API server as users run them: BENCH_TASKS tasks
//! (`crontab: {minute: BENCH_MINUTE}`) on one redis-server on the host, applied with
//! `kubectl apply` in chunks, the operator (release) on the host, watching its namespace.
//! Measured:
//! - first status: from the `kubectl apply` that created a task returning to its status
//!   having Ready and `nextScheduleTime` (seen through a watch);
//! - per slot: the share of tasks whose message arrived and its lateness (pop time minus
//!   the slot; a collector pops the queue as a worker does, blocking until there is
//!   something), and duplicates;
//! - staleness of `status.lastScheduleTime`: sampled every 5 s, for each task how long its
//!   status has shown an older slot than one that has come;
//! - per window of BENCH_SLOTS slots once every task had its first status: API requests per
//!   minute by verb and resource, the operator's CPU, RSS and peak RSS;
//! - around each slot (1 s before to 1 s after): Redis's `EXEC` time and the CPU of every
//!   command on the machine, so a slow slot shows whether Redis had more to do or the cores
//!   were busy with something else.
//!
//! Run with `e2e/bench/run-on-cluster.sh scale`.
//! Env: BENCH_TASKS (default 10000), BENCH_MINUTE (default `*`), BENCH_SLOTS (default 3),
//! BENCH_CHUNK (tasks per kubectl apply, default 500), BENCH_STATUS_RATE (the operator's
//! `--status-writes-per-second`, default its own).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celery_operator::api::PeriodicTask;
use celery_operator::schedule::{Cron, parse_tz};
use celery_operator_e2e::measure::{
    api_requests, command_rates, command_stats, cpu_by_command, parse_command_stats, percentile,
    process_anon_huge_kib, process_cpu, process_rss_kib, rates,
};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{TestNamespace, broker_url_secret, client, kubectl_with_input, ok};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn manifest(from: usize, to: usize, minute: &str) -> String {
    (from..to)
        .map(|i| {
            format!(
                "apiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {{name: task-{i}}}\nspec:\n  task: tasks.add\n  args: [{i}, 1]\n  schedule: {{crontab: {{minute: \"{minute}\"}}}}\n  broker: {{secretKeyRef: {{name: broker, key: url}}}}\n---\n"
            )
        })
        .collect()
}

/// What the watch has seen of each task.
#[derive(Default)]
struct Seen {
    /// When each task first had Ready and nextScheduleTime.
    first_status: HashMap<String, Instant>,
    last_schedule: HashMap<String, DateTime<Utc>>,
    /// Time between two status changes of the same task.
    rewrite_gaps: Vec<Duration>,
    changed_at: HashMap<String, Instant>,
}

fn observe(seen: &mut Seen, pt: &PeriodicTask) {
    let name = pt.metadata.name.clone().unwrap_or_default();
    let Some(status) = &pt.status else { return };
    let now = Instant::now();
    let ready = status.conditions.iter().any(|c| c.type_ == "Ready");
    if ready && status.next_schedule_time.is_some() {
        seen.first_status.entry(name.clone()).or_insert(now);
    }
    if let Some(last) = &status.last_schedule_time {
        let last =
            DateTime::<Utc>::from_timestamp_micros(last.0.as_microsecond()).unwrap_or_default();
        seen.last_schedule.insert(name.clone(), last);
    }
    if let Some(before) = seen.changed_at.insert(name, now) {
        seen.rewrite_gaps.push(now - before);
    }
}

/// Pops `celery` until `stop` as a worker does, blocking until messages are there (`BLMPOP`,
/// up to 1,000 at a time, so popping keeps up with 10,000 at once), noting when each arrived;
/// task ids are read after the window, so that parsing never holds up the next pop.
async fn collect(url: String, stop: Instant) -> Vec<(String, DateTime<Utc>)> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("collector connects");
    let mut got: Vec<(Vec<String>, DateTime<Utc>)> = Vec::new();
    while Instant::now() < stop {
        // Blocks at most 0.1 s: well inside the client's 0.5 s reply timeout.
        let popped: Option<(String, Vec<String>)> = redis::cmd("BLMPOP")
            .arg(0.1)
            .arg(1)
            .arg("celery")
            .arg("RIGHT")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("BLMPOP");
        if let Some((_, messages)) = popped {
            got.push((messages, Utc::now()));
        }
    }
    got.into_iter()
        .flat_map(|(messages, at)| messages.into_iter().map(move |m| (task_id(&m), at)))
        .collect()
}

/// What ran around one slot, from 1 s before it to 1 s after.
struct Around {
    slot: DateTime<Utc>,
    /// Redis time in `EXEC` (the pushes' transactions), µs.
    exec_us: u64,
    /// CPU seconds per command name (and the machine's steal time), most first.
    cpu: Vec<(String, f64)>,
}

/// Reads, around each of `slots`, Redis's `EXEC` time and every process's CPU, to tell what
/// makes a slow slot slow: more Redis work, or other processes on the cores.
async fn watch_around(url: String, slots: Vec<DateTime<Utc>>) -> Vec<Around> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("sampler connects");
    let mut reading = async move || {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO");
        let exec = parse_command_stats(&info).get("exec").map_or(0, |s| s.1);
        let cpu = tokio::task::spawn_blocking(cpu_by_command)
            .await
            .expect("cpu reading");
        (exec, cpu)
    };
    let until =
        |at: DateTime<Utc>| tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default());
    let mut rows = Vec::new();
    for slot in slots {
        until(slot - chrono::TimeDelta::seconds(1)).await;
        let (exec0, cpu0) = reading().await;
        until(slot + chrono::TimeDelta::seconds(1)).await;
        let (exec1, cpu1) = reading().await;
        let mut cpu: Vec<(String, f64)> = cpu1
            .iter()
            .filter_map(|(name, &now)| Some((name.clone(), now - cpu0.get(name)?)))
            .filter(|(_, used)| *used > 0.0)
            .collect();
        cpu.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows.push(Around {
            slot,
            exec_us: exec1.saturating_sub(exec0),
            cpu,
        });
    }
    rows
}

fn task_id(message: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(message).unwrap_or_default();
    v["headers"]["id"].as_str().unwrap_or_default().to_string()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let tasks: usize = env_or("BENCH_TASKS", "10000").parse().expect("BENCH_TASKS");
    let minute = env_or("BENCH_MINUTE", "*");
    let slots: usize = env_or("BENCH_SLOTS", "3").parse().expect("BENCH_SLOTS");
    let chunk: usize = env_or("BENCH_CHUNK", "500").parse().expect("BENCH_CHUNK");
    let cron = Cron::parse(&format!("{minute} * * * *")).expect("crontab minute");
    let utc = parse_tz("UTC").expect("UTC");
    let next_slot =
        |after: DateTime<Utc>| cron.next_after(after, &utc).map(|s| s.with_timezone(&Utc));

    let client = client().await;
    let ns = TestNamespace::new(&client, "bench-scale").await;
    let redis = RedisServer::start(None, None, &["--save", ""]);
    broker_url_secret(&ns.name, "broker", &redis.url(0));
    let mut args = vec![];
    let rate = std::env::var("BENCH_STATUS_RATE").ok();
    if let Some(rate) = &rate {
        args.extend(["--status-writes-per-second", rate.as_str()]);
    }
    let operator = Operator::start_with(&ns.name, &args, &[]);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let api: Api<PeriodicTask> = Api::namespaced(client.clone(), &ns.name);
    let watch = {
        let (seen, api) = (seen.clone(), api.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(pt) | watcher::Event::InitApply(pt)) = event {
                    observe(&mut seen.lock().expect("seen"), &pt);
                }
            }
        })
    };

    // Applied while the collector already pops, so a slot during the apply counts too.
    let applied_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let mut from = 0;
    while from < tasks {
        let to = (from + chunk).min(tasks);
        ok(kubectl_with_input(
            &["apply", "-n", &ns.name, "-f", "-"],
            Some(&manifest(from, to, &minute)),
        ));
        let now = Instant::now();
        let mut applied = applied_at.lock().expect("applied");
        applied.extend((from..to).map(|i| (format!("task-{i}"), now)));
        from = to;
    }
    let applying = started.elapsed();
    eprintln!("applied {tasks} tasks in {}", secs(applying));
    let all_applied = Instant::now();
    let converged = loop {
        let count = seen.lock().expect("seen").first_status.len();
        if count >= tasks {
            break all_applied.elapsed();
        }
        assert!(
            all_applied.elapsed() < Duration::from_secs(1800),
            "only {count}/{tasks} tasks got a first status"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "every task had its first status {} after the last apply",
        secs(converged)
    );
    let mut first_status: Vec<Duration> = {
        let seen = seen.lock().expect("seen");
        let applied = applied_at.lock().expect("applied");
        seen.first_status
            .iter()
            .filter_map(|(name, at)| Some(at.saturating_duration_since(*applied.get(name)?)))
            .collect()
    };
    first_status.sort();

    // The measured window: from the next slot, BENCH_SLOTS slots, and 50 s after the last.
    let now = Utc::now();
    let measured: Vec<DateTime<Utc>> = std::iter::successors(next_slot(now), |s| next_slot(*s))
        .take(slots)
        .collect();
    let (Some(first), Some(last)) = (measured.first().copied(), measured.last().copied()) else {
        panic!("the schedule has no slots");
    };
    tokio::time::sleep(
        (first - Utc::now() - chrono::TimeDelta::seconds(2))
            .to_std()
            .unwrap_or_default(),
    )
    .await;
    let _ = redis.cli(&["DEL", "celery"]);
    let window_end = last + chrono::TimeDelta::seconds(50);
    let window = (window_end - Utc::now()).to_std().unwrap_or_default();
    let collector = tokio::spawn(collect(redis.url(0), Instant::now() + window));
    let around = tokio::spawn(watch_around(redis.url(0), measured.clone()));
    let redis0 = command_stats(&redis);
    let (api0, cpu0, t0) = (api_requests(), process_cpu(operator.pid()), Instant::now());
    seen.lock().expect("seen").rewrite_gaps.clear();
    let mut staleness: Vec<Duration> = Vec::new();
    // One reading at one moment says little (a batch may be packed then): one every 5 s.
    let mut rss_samples: Vec<u64> = Vec::new();
    while Utc::now() < window_end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_samples.push(process_rss_kib(operator.pid()).0);
        let now = Utc::now();
        let seen = seen.lock().expect("seen");
        for last in seen.last_schedule.values() {
            // How long the status has shown old news: since the first slot after it came.
            let owed = next_slot(*last).filter(|s| *s <= now);
            staleness.push(owed.map_or(Duration::ZERO, |s| (now - s).to_std().unwrap_or_default()));
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (api1, cpu1) = (api_requests(), process_cpu(operator.pid()));
    let redis1 = command_stats(&redis);
    let (rss, peak) = process_rss_kib(operator.pid());
    let huge = process_anon_huge_kib(operator.pid());
    rss_samples.sort();
    let popped = collector.await.expect("collector");
    let around = around.await.expect("readings around the slots");
    watch.abort();
    staleness.sort();
    let mut gaps = std::mem::take(&mut seen.lock().expect("seen").rewrite_gaps);
    gaps.sort();

    println!(
        "scale: {tasks} PeriodicTasks, crontab minute {minute:?}, one redis-server, operator (release, status writes/s {}) on the host, applied in chunks of {chunk} in {}",
        rate.as_deref().unwrap_or("default"),
        secs(applying)
    );
    println!(
        "first status (apply returned -> Ready and nextScheduleTime): p50 {}, p99 {}, max {}; every task {} after the last apply returned",
        secs(percentile(&first_status, 0.5)),
        secs(percentile(&first_status, 0.99)),
        secs(percentile(&first_status, 1.0)),
        secs(converged)
    );
    println!("| slot | pushed | duplicates | first ms | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut by_slot: BTreeMap<DateTime<Utc>, Vec<(String, DateTime<Utc>)>> = BTreeMap::new();
    for (id, at) in popped {
        // A message belongs to the latest slot at or before its arrival.
        let slot = measured.iter().rev().find(|s| **s <= at).copied();
        if let Some(slot) = slot {
            by_slot.entry(slot).or_default().push((id, at));
        }
    }
    for slot in &measured {
        let got = by_slot.remove(slot).unwrap_or_default();
        let ids: HashSet<&String> = got.iter().map(|(id, _)| id).collect();
        let mut late: Vec<i64> = got
            .iter()
            .map(|(_, at)| (*at - *slot).num_milliseconds())
            .collect();
        late.sort();
        println!(
            "| {} | {:.1} % ({}) | {} | {} | {} | {} | {} |",
            slot.format("%H:%M:%S"),
            ids.len() as f64 * 100.0 / tasks as f64,
            ids.len(),
            got.len() - ids.len(),
            percentile(&late, 0.0),
            percentile(&late, 0.5),
            percentile(&late, 0.99),
            percentile(&late, 1.0)
        );
    }
    println!(
        "| slot | Redis EXEC ms (1 s around it) | CPU ms from 1 s before to 1 s after it, most first ((steal): the hypervisor's) |"
    );
    println!("|---|---|---|");
    for a in &around {
        let top: Vec<String> = a
            .cpu
            .iter()
            .take(6)
            .map(|(name, used)| format!("{name} {:.0}", used * 1000.0))
            .collect();
        println!(
            "| {} | {:.1} | {} |",
            a.slot.format("%H:%M:%S"),
            a.exec_us as f64 / 1000.0,
            top.join(", ")
        );
    }
    println!(
        "lastScheduleTime staleness (every task every 5 s): p50 {}, p99 {}, max {}; one task's status rewritten every p50 {}, p99 {}",
        secs(percentile(&staleness, 0.5)),
        secs(percentile(&staleness, 0.99)),
        secs(percentile(&staleness, 1.0)),
        secs(percentile(&gaps, 0.5)),
        secs(percentile(&gaps, 0.99)),
    );
    println!(
        "operator over the {:.0} s window: CPU {:.1} % of a core, RSS every 5 s p50 {} MiB, max {} MiB, at the end {} MiB ({} MiB of it transparent huge pages; peak since start {} MiB, {:.1} MiB per 1,000 tasks at p50)",
        elapsed,
        (cpu1 - cpu0) / elapsed * 100.0,
        percentile(&rss_samples, 0.5) / 1024,
        percentile(&rss_samples, 1.0) / 1024,
        rss / 1024,
        huge / 1024,
        peak / 1024,
        percentile(&rss_samples, 0.5) as f64 / 1024.0 / (tasks as f64 / 1000.0)
    );
    println!(
        "| Redis command (all clients; the collector's BLMPOP included) | calls per minute | Redis µs per minute |"
    );
    println!("|---|---|---|");
    for (name, (calls, usec)) in command_rates(&redis0, &redis1, elapsed) {
        println!("| {name} | {:.0} | {:.0} |", calls * 60.0, usec * 60.0);
    }
    println!("| API requests (all clients; the bench holds one watch) | per minute |");
    println!("|---|---|");
    for (key, per_second) in rates(&api0, &api1, elapsed) {
        if key.starts_with("WATCH") || key.ends_with(' ') {
            continue;
        }
        println!("| {key} | {:.0} |", per_second * 60.0);
    }
}
