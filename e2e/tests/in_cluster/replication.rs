//! A replicated broker on real pods: a primary, two replicas and three Sentinels. The client
//! Service follows the primary; killing the primary's pod promotes a replica within seconds,
//! a write every replica confirmed survives, and the old primary comes back as a replica.
//! Killed five times under PeriodicTasks pushing every second, no push is lost or doubled.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use celery_operator::api::periodic_task::PeriodicTask;
use celery_operator_e2e::{eventually, every_second_slot_ids, jsonpath, kubectl, ok};
use chrono::DateTime;
use kube::Api;
use serde_json::Value;

use super::support::{WAIT, apply, redis_cache, setup, wait_ready, worker_pool};

const CACHE: &str = "ha";

/// stdout of `sh -c script` in `pod`, or None when kubectl or the script fails. redis-cli
/// there authenticates with the password clients use now (the connection Secret's): the
/// pod's own REDISCLI_AUTH is the one it started with, which a rotation may have dropped.
fn sh(ns: &str, pod: &str, script: &str) -> Option<String> {
    let cache = pod.rsplit_once('-').map_or(pod, |(set, _)| set);
    let cache = cache.strip_suffix("-sentinel").unwrap_or(cache);
    sh_as(ns, pod, &connection_password(ns, cache), script)
}

/// The password in the connection Secret of `cache`: the one clients use now.
fn connection_password(ns: &str, cache: &str) -> String {
    let encoded = jsonpath(
        ns,
        &format!("secret/{cache}-connection"),
        "{.data.password}",
    );
    String::from_utf8(STANDARD.decode(encoded).expect("base64")).expect("utf-8")
}

/// Like [`sh`], redis-cli authenticating with `password`.
fn sh_as(ns: &str, pod: &str, password: &str, script: &str) -> Option<String> {
    let auth = format!("REDISCLI_AUTH={password}");
    let out = kubectl(&[
        "exec", "-n", ns, pod, "--", "env", &auth, "sh", "-c", script,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The primary's address as the first Sentinel of `cache` tells it.
fn sentinel_primary(ns: &str, cache: &str) -> Option<String> {
    sh(
        ns,
        &format!("{cache}-sentinel-0"),
        &format!("redis-cli -p 26379 --raw SENTINEL get-master-addr-by-name {cache} | head -n 1"),
    )
    .filter(|a| !a.is_empty())
}

/// Waits until each Sentinel of `cache` knows both replicas in sync and the two other
/// Sentinels (learnt from the primary's INFO and its hello channel, within seconds).
async fn settled(ns: &str, cache: &str) {
    for n in 0..3 {
        let pod = format!("{cache}-sentinel-{n}");
        eventually(WAIT, "the Sentinels to know the whole set", || async {
            let ask = |what: &str| {
                sh(
                    ns,
                    &pod,
                    &format!("redis-cli -p 26379 --raw SENTINEL {what} {cache}"),
                )
            };
            let replicas = ask("REPLICAS")?;
            let peers = ask("SENTINELS")?;
            let linked = replicas.matches("master-link-status\nok").count();
            let down = replicas.matches("s_down").count();
            let known = peers.lines().filter(|l| *l == "runid").count();
            (linked == 2 && down == 0 && known == 2).then_some(())
        })
        .await;
    }
}

fn role(ns: &str, pod: &str) -> Option<String> {
    sh(ns, pod, "redis-cli --raw ROLE | head -n 1")
}

fn labelled_primary(ns: &str) -> String {
    pods_labelled(ns, "celeryoperator.io/role=primary", "").join(" ")
}

/// The names of the pods in `ns` that match the label `selector` and the field selector
/// `fields` (all when empty).
fn pods_labelled(ns: &str, selector: &str, fields: &str) -> Vec<String> {
    let fields = format!("--field-selector={fields}");
    let mut args = vec!["get", "pods", "-n", ns, "-l", selector];
    if fields.len() > "--field-selector=".len() {
        args.push(&fields);
    }
    args.extend(["-o", "jsonpath={.items[*].metadata.name}"]);
    ok(kubectl(&args))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

pub(crate) async fn killing_the_primary_promotes_a_replica_and_the_old_one_returns_as_replica() {
    let (_client, ns) = setup("ic-repl").await;
    let ns = &ns.name;
    apply(
        ns,
        &redis_cache(
            CACHE,
            "broker",
            "  replication: {replicas: 2, sentinels: 3, downAfter: 1s}\n",
        ),
    );
    wait_ready(ns, &["rediscache/ha"]);
    assert_eq!(jsonpath(ns, "rediscache/ha", "{.status.primary}"), "ha-0");
    eventually(WAIT, "both replicas linked to ha-0", || async {
        sh(ns, "ha-0", "redis-cli INFO replication")
            .filter(|i| i.contains("connected_slaves:2"))
            .map(|_| ())
    })
    .await;
    eventually(WAIT, "the client Service's pod labelled", || async {
        (labelled_primary(ns) == "ha-0").then_some(())
    })
    .await;
    settled(ns, CACHE).await;
    let secret = |key: &str| jsonpath(ns, "secret/ha-connection", &format!("{{.data.{key}}}"));
    assert!(!secret("sentinelUrl").is_empty() && !secret("masterName").is_empty());
    eventually(WAIT, "both replicas in status, in sync", || async {
        let states = jsonpath(ns, "rediscache/ha", "{.status.replicas[*].state}");
        let pods = jsonpath(ns, "rediscache/ha", "{.status.replicas[*].pod}");
        (states == "online online" && pods.contains("ha-1") && pods.contains("ha-2")).then_some(())
    })
    .await;
    // A drain takes one pod of each set at a time.
    for budget in ["pdb/ha", "pdb/ha-sentinel"] {
        assert_eq!(
            jsonpath(ns, budget, "{.spec.maxUnavailable}"),
            "1",
            "{budget}"
        );
    }

    // A write both replicas confirmed, on one connection (WAIT counts that client's writes).
    // Sentinel promotes the replica with the highest offset it last read (by INFO, every
    // few seconds), so only a write every replica has is sure to survive its choice.
    let confirmed = sh(
        ns,
        "ha-0",
        "printf 'SET before-kill 1\\nWAIT 2 5000\\n' | redis-cli --raw",
    )
    .expect("write");
    assert!(confirmed.ends_with('2'), "{confirmed}");

    let (new, without_primary) = kill_primary(ns, CACHE).await;
    eprintln!("failover: {new} took writes {without_primary:?} after ha-0 was killed");
    // Tuned, well under Sentinel's default of 30 s before a failover even starts.
    assert!(
        without_primary < Duration::from_secs(30),
        "{without_primary:?}"
    );
    assert_eq!(
        sh(ns, &new, "redis-cli GET before-kill").as_deref(),
        Some("1"),
        "the confirmed write survived"
    );

    // The operator follows: status, the role label, and the client Service behind it.
    eventually(WAIT, "status and label to name the new primary", || async {
        (jsonpath(ns, "rediscache/ha", "{.status.primary}") == new && labelled_primary(ns) == new)
            .then_some(())
    })
    .await;
    eventually(WAIT, "the client Service to take writes", || async {
        sh(
            ns,
            "ha-sentinel-0",
            "redis-cli -h ha -p 6379 SET through-service 1",
        )
        .filter(|r| r == "OK")
        .map(|_| ())
    })
    .await;

    // The old primary returns as a replica of the new one, with what was written since.
    eventually(WAIT, "ha-0 back as a replica", || async {
        (role(ns, "ha-0").as_deref() == Some("slave")).then_some(())
    })
    .await;
    eventually(
        WAIT,
        "ha-0 to hold the writes made while it was gone",
        || async {
            sh(ns, "ha-0", "redis-cli GET through-service")
                .filter(|v| v == "1")
                .map(|_| ())
        },
    )
    .await;
    assert_eq!(role(ns, &new).as_deref(), Some("master"));
}

const TASKS: usize = 6;
const KILLS: usize = 5;

/// Kills the pod the Sentinels name as primary and waits until another takes writes; returns
/// it and how long no pod took writes.
async fn kill_primary(ns: &str, cache: &str) -> (String, Duration) {
    let old = sentinel_primary(ns, cache).expect("a primary");
    let old_pod = old.split('.').next().expect("pod").to_string();
    let killed = Instant::now();
    ok(kubectl(&[
        "delete",
        "pod",
        "-n",
        ns,
        &old_pod,
        "--grace-period=0",
        "--force",
    ]));
    let new = eventually(WAIT, "another primary to take writes", || async {
        let new = sentinel_primary(ns, cache).filter(|a| *a != old)?;
        let pod = new.split('.').next()?.to_string();
        sh(ns, &pod, "redis-cli SET e2e:writable 1")
            .filter(|r| r == "OK")
            .map(|_| pod)
    })
    .await;
    (new, killed.elapsed())
}

/// The task ids of the messages in `queue` on the current primary, with their counts.
fn queued_ids(ns: &str, cache: &str, queue: &str) -> BTreeMap<String, usize> {
    let primary = sentinel_primary(ns, cache).expect("a primary");
    let pod = primary.split('.').next().expect("pod");
    let raw = sh(ns, pod, &format!("redis-cli --raw LRANGE {queue} 0 -1")).expect("lrange");
    let mut ids = BTreeMap::new();
    for line in raw.lines().filter(|l| l.starts_with('{')) {
        let message: Value = serde_json::from_str(line).expect("a Celery message");
        let id = message["headers"]["id"].as_str().expect("id").to_string();
        *ids.entry(id).or_default() += 1;
    }
    ids
}

pub(crate) async fn five_primary_kills_under_every_second_tasks_lose_and_double_no_push() {
    let (client, ns) = setup("ic-repl5").await;
    let ns = &ns.name;
    under_traffic(ns).await;

    let mut outages = Vec::new();
    for kill in 0..KILLS {
        pushes_go_on(ns, 3 * TASKS / 2).await;
        let (new, outage) = kill_primary(ns, "broker").await;
        eprintln!("kill {}: {new} took writes after {outage:.2?}", kill + 1);
        outages.push(outage);
        settled(ns, "broker").await;
    }
    pushes_go_on(ns, 3 * TASKS / 2).await;
    let counted: Vec<String> = (0..TASKS).step_by(2).map(|i| format!("beat-{i}")).collect();
    let (missing, twice, pushed) = lost_and_doubled(&client, ns, &counted).await;
    let worker_errors: usize = ok(kubectl(&[
        "logs",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/instance=pool",
        "--tail=-1",
    ]))
    .lines()
    .filter(|l| is_worker_error(l))
    .count();
    let mut sorted = outages.clone();
    sorted.sort();
    eprintln!(
        "{KILLS} primary kills: no primary for p50 {:.2?}, max {:.2?}; {} slots pushed, {} lost, {} twice; {worker_errors} worker error lines",
        sorted[KILLS / 2],
        sorted[KILLS - 1],
        pushed,
        missing.len(),
        twice.len()
    );
    assert!(missing.is_empty(), "slots never pushed: {missing:?}");
    assert!(twice.is_empty(), "slots pushed twice: {twice:?}");
    assert!(sorted[KILLS - 1] < Duration::from_secs(30), "{sorted:?}");
}

/// The RedisCache `broker` with replication (Sentinels seeing a failure after 1 s), once
/// the whole set is up and known to its Sentinels.
async fn replicated_broker(ns: &str) {
    apply(
        ns,
        &redis_cache(
            "broker",
            "broker",
            "  replication: {replicas: 2, sentinels: 3, downAfter: 1s}\n",
        ),
    );
    wait_ready(ns, &["rediscache/broker"]);
    settled(ns, "broker").await;
}

/// `n` PeriodicTasks `<prefix>-<i>` of `tasks.record` every second on `broker`, catching up
/// every missed slot, task `i` on the queue `queue(i)`.
fn every_second_tasks(ns: &str, prefix: &str, n: usize, queue: impl Fn(usize) -> &'static str) {
    let tasks: String = (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {{name: {prefix}-{i}}}\nspec:\n  task: tasks.record\n  args: [{i}]\n  queue: {}\n  schedule: {{every: 1s}}\n  missedRunPolicy: RunAll\n  broker: {{redisCache: broker}}\n",
                queue(i)
            )
        })
        .collect();
    apply(ns, &tasks);
}

/// The replicated `broker`, `TASKS` every-second PeriodicTasks on it and the pool `pool` of
/// two workers. Half the tasks go to a queue no worker reads, so what was pushed can be
/// counted there; the others keep the workers busy.
async fn under_traffic(ns: &str) {
    replicated_broker(ns).await;
    apply(
        ns,
        &worker_pool("pool", "  replicas: 2\n  concurrency: 2\n"),
    );
    every_second_tasks(ns, "beat", TASKS, |i| {
        if i % 2 == 0 { "unconsumed" } else { "celery" }
    });
    wait_ready(ns, &["workerpool/pool"]);
}

/// Waits until `more` pushes reached the queue `unconsumed`.
async fn pushes_go_on(ns: &str, more: usize) {
    let before = queued_ids(ns, "broker", "unconsumed").len();
    eventually(WAIT, "pushes going on", || async {
        (queued_ids(ns, "broker", "unconsumed").len() >= before + more).then_some(())
    })
    .await;
}

/// Suspends the tasks, then returns the slots of each that are not in `unconsumed` and
/// those that are there twice.
async fn lost_and_doubled(
    client: &kube::Client,
    ns: &str,
    names: &[String],
) -> (Vec<String>, Vec<String>, usize) {
    for name in names {
        ok(kubectl(&[
            "patch",
            "ptask",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ]));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pushed = queued_ids(ns, "broker", "unconsumed");
    let api: Api<PeriodicTask> = Api::namespaced(client.clone(), ns);
    let mut missing = Vec::new();
    for name in names {
        let pt = api.get(name).await.expect("task");
        let last = pt
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .expect("lastScheduleTime");
        let last = DateTime::from_timestamp_micros(last.0.as_microsecond()).expect("ts");
        missing.extend(
            every_second_slot_ids(&pt, last)
                .into_iter()
                .filter(|id| !pushed.contains_key(id)),
        );
    }
    let twice = pushed
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    (missing, twice, pushed.len())
}

pub(crate) async fn a_config_change_rolls_replicas_first_then_fails_over_once() {
    let (client, ns) = setup("ic-roll").await;
    let ns = &ns.name;
    replicated_broker(ns).await;
    // The primary moves off pod 0 first: a StatefulSet's own order (2, 1, 0) would then
    // restart it in the middle.
    let (primary, _) = kill_primary(ns, "broker").await;
    settled(ns, "broker").await;
    let names: Vec<String> = (0..3).map(|i| format!("roll-{i}")).collect();
    every_second_tasks(ns, "roll", names.len(), |_| "unconsumed");
    pushes_go_on(ns, 6).await;

    // Every primary the Sentinels name while the change rolls, in order.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (ns, stop) = (ns.to_string(), stop.clone());
        std::thread::spawn(move || {
            let mut seen: Vec<String> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(p) = sentinel_primary(&ns, "broker")
                    && seen.last() != Some(&p)
                {
                    seen.push(p);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        })
    };
    ok(kubectl(&[
        "patch",
        "rediscache",
        "broker",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"maxMemory":"100Mi"}}"#,
    ]));
    for n in 0..3 {
        let pod = format!("broker-{n}");
        eventually(
            Duration::from_secs(300),
            "every pod running the new config",
            || async {
                sh(ns, &pod, "redis-cli --raw CONFIG GET maxmemory | tail -n 1")
                    .filter(|m| m == "104857600")
                    .map(|_| ())
            },
        )
        .await;
    }
    wait_ready(ns, &["rediscache/broker"]);
    settled(ns, "broker").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let primaries = watcher.join().expect("watcher");

    // Replicas first: the old primary's pod is the newest.
    let created = |pod: &str| jsonpath(ns, &format!("pod/{pod}"), "{.metadata.creationTimestamp}");
    let newest = (0..3)
        .map(|n| format!("broker-{n}"))
        .max_by_key(|p| created(p))
        .expect("pods");
    let (missing, twice, pushed) = lost_and_doubled(&client, ns, &names).await;
    eprintln!(
        "maxMemory rolled: primaries {primaries:?}; {pushed} slots pushed, {} lost, {} twice",
        missing.len(),
        twice.len()
    );
    assert_eq!(primaries.len(), 2, "one failover: {primaries:?}");
    assert!(
        primaries[0].starts_with(&format!("{primary}.")),
        "{primaries:?}"
    );
    assert_eq!(newest, primary, "the primary's pod was replaced last");
    assert!(missing.is_empty(), "slots never pushed: {missing:?}");
    assert!(twice.is_empty(), "slots pushed twice: {twice:?}");
}

/// The worker pods of the pool `pool` that have not finished (terminating ones included).
fn worker_pods(ns: &str) -> Vec<String> {
    pods_labelled(
        ns,
        "app.kubernetes.io/instance=pool",
        "status.phase!=Succeeded,status.phase!=Failed",
    )
}

/// A worker log line that shows a failed command or a lost connection.
fn is_worker_error(line: &str) -> bool {
    [
        "ERROR",
        "Connection to broker lost",
        "WRONGPASS",
        "NOAUTH",
        "AuthenticationError",
    ]
    .iter()
    .any(|marker| line.contains(marker))
}

pub(crate) async fn rotating_the_password_under_traffic_fails_no_command_and_drops_the_old_one() {
    let (client, ns) = setup("ic-rotate").await;
    let ns = &ns.name;
    under_traffic(ns).await;
    pushes_go_on(ns, 3 * TASKS / 2).await;

    let old = connection_password(ns, "broker");
    // Every old worker's whole log, followed until its pod is gone.
    let old_workers = worker_pods(ns);
    let followers: Vec<_> = old_workers
        .iter()
        .map(|pod| {
            std::process::Command::new("kubectl")
                .args(["logs", "-f", "-n", ns, pod])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("kubectl logs -f")
        })
        .collect();

    let new = "r0tated-under-traffic";
    let started = Instant::now();
    ok(kubectl(&[
        "patch",
        "secret",
        "broker-password",
        "-n",
        ns,
        "-p",
        &format!(r#"{{"stringData":{{"password":"{new}"}}}}"#),
    ]));
    eventually(
        Duration::from_secs(300),
        "the rotation to finish",
        || async {
            let status = jsonpath(
                ns,
                "rediscache/broker",
                r#"{.status.conditions[?(@.type=="PasswordRotated")].status}"#,
            );
            (status == "True").then_some(())
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(connection_password(ns, "broker"), new, "clients were moved");

    // Every server takes the new password and refuses the old one.
    let servers = ["broker-0", "broker-1", "broker-2"]
        .map(|p| (p, 6379))
        .into_iter()
        .chain(
            [
                "broker-sentinel-0",
                "broker-sentinel-1",
                "broker-sentinel-2",
            ]
            .map(|p| (p, 26379)),
        );
    for (pod, port) in servers {
        let ping = format!("redis-cli -p {port} PING 2>&1");
        assert_eq!(sh_as(ns, pod, new, &ping).as_deref(), Some("PONG"), "{pod}");
        let refused = sh_as(ns, pod, &old, &ping).unwrap_or_default();
        assert!(
            refused.contains("WRONGPASS"),
            "{pod} takes the old password: {refused}"
        );
    }
    // The workers rolled to the new one, and work goes on after the rotation.
    let now = worker_pods(ns);
    assert!(
        now.iter().all(|p| !old_workers.contains(p)),
        "old workers {old_workers:?} still run: {now:?}"
    );
    pushes_go_on(ns, 3 * TASKS / 2).await;

    let counted: Vec<String> = (0..TASKS).step_by(2).map(|i| format!("beat-{i}")).collect();
    let (missing, twice, pushed) = lost_and_doubled(&client, ns, &counted).await;
    let mut worker_log = String::new();
    for follower in followers {
        let out = follower.wait_with_output().expect("old worker log");
        worker_log += &String::from_utf8_lossy(&out.stdout);
    }
    for pod in worker_pods(ns) {
        worker_log += &ok(kubectl(&["logs", "-n", ns, &pod]));
    }
    let errors: Vec<&str> = worker_log.lines().filter(|l| is_worker_error(l)).collect();
    let warnings = celery_operator_e2e::events(ns, "type=Warning");
    let failed_pushes: Vec<&str> = warnings
        .lines()
        .filter(|l| l.contains("BrokerUnreachable") || l.contains("RotationStalled"))
        .collect();
    eprintln!(
        "rotation under traffic: done in {took:.1?}; {pushed} slots pushed, {} lost, {} twice; {} worker error lines; {} warnings of failed pushes or a stalled rotation",
        missing.len(),
        twice.len(),
        errors.len(),
        failed_pushes.len()
    );
    assert!(
        errors.is_empty(),
        "workers saw failed commands: {errors:#?}"
    );
    assert!(failed_pushes.is_empty(), "{failed_pushes:#?}");
    assert!(missing.is_empty(), "slots never pushed: {missing:?}");
    assert!(twice.is_empty(), "slots pushed twice: {twice:?}");
}
