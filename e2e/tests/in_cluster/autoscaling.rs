//! Autoscaling real worker pods on the backlog: from zero on the first message, up through a
//! burst, and back in with the busy pod kept, every task executed exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use celery_operator_e2e::{eventually, kubectl, ok};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::Value;

use super::support::{
    WAIT, apply, executed, push_tasks, redis_cache, setup, wait_ready, worker_pods, worker_pool,
};

const MAX_REPLICAS: i32 = 4;
const BURST: usize = 300;

async fn replicas(client: &Client, ns: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt("pool")
        .await
        .ok()
        .flatten()
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
}

/// Executions recorded so far, by task id.
fn executions_by_id(ns: &str) -> BTreeMap<String, Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in executed(ns) {
        let id = e["id"].as_str().expect("id").to_owned();
        by_id.entry(id).or_default().push(e);
    }
    by_id
}

/// `work(seconds, tag)` pushed `n` times from a pod; prints the task ids.
fn push_script(n: usize, seconds: u32, tag: &str) -> String {
    format!(
        "import tasks\nfor _ in range({n}): print(tasks.work.apply_async(({seconds}, \"{tag}\")).id)"
    )
}

pub(crate) async fn from_zero_through_a_burst_and_back_loses_and_repeats_nothing() {
    let (client, ns) = setup("ic-scale").await;
    let ns = &ns.name;
    apply(ns, &redis_cache("broker", "broker", ""));
    apply(
        ns,
        &worker_pool(
            "pool",
            &format!(
                "  concurrency: 4\n  prefetchMultiplier: 1\n  autoscaling:\n    minReplicas: 0\n    maxReplicas: {MAX_REPLICAS}\n    pollInterval: 1s\n    scaleDownStabilization: 15s\n    idleBeforeScaleToZero: 20s\n"
            ),
        ),
    );
    wait_ready(ns, &["rediscache/broker"]);
    eventually(WAIT, "the pool at zero replicas", || async {
        (replicas(&client, ns).await == Some(0)).then_some(())
    })
    .await;
    let mut pushed: Vec<String> = Vec::new();

    // 0 -> 1: the first message starts a worker, which runs it.
    let first = push_tasks(&client, ns, "push-first", &push_script(1, 1, "first")).await;
    let start = Instant::now();
    assert_eq!(first.len(), 1);
    let run = eventually(WAIT, "the first message executed from zero", || async {
        executions_by_id(ns).remove(&first[0])
    })
    .await;
    let from_zero = start.elapsed();
    let host = run[0]["hostname"].as_str().expect("hostname").to_owned();
    pushed.extend(first);
    assert_eq!(replicas(&client, ns).await, Some(1));

    // A burst: scale out to the maximum with real pods, drain, count what ran where.
    let burst_pushed = Instant::now();
    let burst = push_tasks(&client, ns, "push-burst", &push_script(BURST, 1, "burst")).await;
    assert_eq!(burst.len(), BURST);
    let mut peak = 0;
    let mut first_new_worker: Option<Duration> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        peak = peak.max(replicas(&client, ns).await.unwrap_or(0));
        let done = executions_by_id(ns);
        if first_new_worker.is_none()
            && done
                .values()
                .flatten()
                .any(|e| e["hostname"].as_str() != Some(host.as_str()))
        {
            first_new_worker = Some(burst_pushed.elapsed());
        }
        if burst.iter().all(|id| done.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the burst did not drain in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained = burst_pushed.elapsed();
    let first_new_worker = first_new_worker.expect("a second worker ran part of the burst");
    pushed.extend(burst);
    assert_eq!(peak, MAX_REPLICAS, "the burst scaled to the maximum");
    let hosts: std::collections::BTreeSet<String> = executed(ns)
        .iter()
        .filter_map(|e| e["hostname"].as_str().map(str::to_owned))
        .collect();
    assert!(hosts.len() as i32 >= MAX_REPLICAS, "ran on {hosts:?}");

    // A long task while the pool shrinks: its pod is marked busy and is kept.
    let long = push_tasks(&client, ns, "push-long", &push_script(1, 60, "long")).await;
    let long_id = long[0].clone();
    let runner = eventually(WAIT, "a worker to start the long task", || async {
        for pod in worker_pods(&client, ns, "pool").await {
            let name = pod.metadata.name.clone()?;
            let log = ok(kubectl(&["logs", "-n", ns, &name]));
            if log.contains(&format!("Task tasks.work[{long_id}] received")) {
                return Some(pod);
            }
        }
        None
    })
    .await;
    let long_started = Instant::now();
    pushed.extend(long);
    let runner_name = runner.metadata.name.clone().expect("name");
    eventually(
        Duration::from_secs(90),
        "the pool to shrink to one",
        || async { (replicas(&client, ns).await == Some(1)).then_some(()) },
    )
    .await;
    let shrunk_after = long_started.elapsed();
    let cost = ok(kubectl(&[
        "get",
        "pod",
        &runner_name,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.annotations.controller\\.kubernetes\\.io/pod-deletion-cost}",
    ]));
    let left = eventually(WAIT, "the idle pods gone", || async {
        let pods = worker_pods(&client, ns, "pool").await;
        (pods.len() == 1).then_some(pods)
    })
    .await;
    assert_eq!(
        left[0].metadata.uid, runner.metadata.uid,
        "the pod running the long task was removed (its deletion cost: {cost:?})"
    );
    let long_run = eventually(
        Duration::from_secs(90),
        "the long task to finish",
        || async { executions_by_id(ns).remove(&long_id) },
    )
    .await;
    assert_eq!(long_run[0]["hostname"], format!("celery@{runner_name}"));

    // Idle: back to zero.
    eventually(Duration::from_secs(90), "the pool back at zero", || async {
        (replicas(&client, ns).await == Some(0)
            && worker_pods(&client, ns, "pool").await.is_empty())
        .then_some(())
    })
    .await;

    // Nothing lost, nothing twice.
    let by_id = executions_by_id(ns);
    let lost: Vec<&String> = pushed
        .iter()
        .filter(|id| !by_id.contains_key(*id))
        .collect();
    let twice: Vec<&String> = by_id
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    eprintln!(
        "autoscaling on real pods: first message from zero executed after {from_zero:.1?}; \
         burst of {BURST} x 1 s: first new worker consuming after {first_new_worker:.1?}, \
         drained in {drained:.1?} at up to {peak} replicas; scale-in to 1 took {:.1?} after \
         the long task started; {} lost, {} twice",
        shrunk_after,
        lost.len(),
        twice.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(twice.is_empty(), "executed twice: {twice:?}");
    assert_eq!(by_id.len(), pushed.len());
}

/// The same burst on a fixed pool of the autoscaler's maximum: the baseline its drain time is
/// compared with, and the same exactly-once count.
pub(crate) async fn a_fixed_pool_of_the_same_size_drains_the_same_burst_once() {
    let (client, ns) = setup("ic-fixed").await;
    let ns = &ns.name;
    apply(ns, &redis_cache("broker", "broker", ""));
    wait_ready(ns, &["rediscache/broker"]);
    apply(
        ns,
        &worker_pool(
            "pool",
            &format!("  concurrency: 4\n  prefetchMultiplier: 1\n  replicas: {MAX_REPLICAS}\n"),
        ),
    );
    eventually(WAIT, "the fixed pool's pods ready", || async {
        (worker_pods(&client, ns, "pool").await.len() == MAX_REPLICAS as usize).then_some(())
    })
    .await;
    let pushed_at = Instant::now();
    let burst = push_tasks(&client, ns, "push-burst", &push_script(BURST, 1, "burst")).await;
    assert_eq!(burst.len(), BURST);
    let by_id = eventually(Duration::from_secs(300), "the burst drained", || async {
        let done = executions_by_id(ns);
        burst.iter().all(|id| done.contains_key(id)).then_some(done)
    })
    .await;
    let drained = pushed_at.elapsed();
    let twice = by_id.values().filter(|v| v.len() > 1).count();
    let hosts: std::collections::BTreeSet<&str> = by_id
        .values()
        .flatten()
        .filter_map(|e| e["hostname"].as_str())
        .collect();
    eprintln!(
        "fixed pool of {MAX_REPLICAS} on real pods: burst of {BURST} x 1 s drained in \
         {drained:.1?} (from the producer pod's start); {twice} twice"
    );
    assert_eq!(twice, 0);
    assert_eq!(by_id.len(), BURST);
    assert_eq!(hosts.len(), MAX_REPLICAS as usize, "ran on {hosts:?}");
}
