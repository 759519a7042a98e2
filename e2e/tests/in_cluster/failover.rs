//! Losing the leader pod for real: `kubectl delete --grace-period=0 --force` of the replica
//! that holds the Lease while 20 PeriodicTasks fire every second under `RunAll`; the standby
//! takes over within the lease duration and every slot is pushed, and run, exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use celery_operator::api::periodic_task::PeriodicTask;
use celery_operator_e2e::{eventually, every_second_slot_ids, kubectl, ok};
use chrono::DateTime;
use kube::Api;

use super::support::{WAIT, apply, executed, redis_cache, release, setup, wait_ready, worker_pool};

const TASKS: usize = 20;
/// The chart's default `leaderElection.leaseDurationSeconds`.
const LEASE_SECONDS: u64 = 15;

fn task_name(i: usize) -> String {
    format!("ha-{i:02}")
}

/// Executions per task id.
fn runs(ns: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in executed(ns) {
        *n.entry(e["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    n
}

pub(crate) async fn leader_pod_killed_standby_takes_over_every_slot_once() {
    let (client, ns) = setup("ic-failover").await;
    let ns = &ns.name;
    apply(ns, &redis_cache("broker", "broker", ""));
    // Workers started while their broker still refuses connections sometimes never consume
    // (seen twice in full runs); started after it answers, they always do (issue 11's note).
    wait_ready(ns, &["rediscache/broker"]);
    apply(
        ns,
        &worker_pool("pool", "  replicas: 2\n  concurrency: 4\n"),
    );
    let tasks: String = (0..TASKS)
        .map(|i| {
            format!(
                "---\napiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {{name: {}}}\nspec:\n  task: tasks.record\n  args: [{i}]\n  schedule: {{every: 1s}}\n  missedRunPolicy: RunAll\n  broker: {{redisCache: broker}}\n",
                task_name(i)
            )
        })
        .collect();
    apply(ns, &tasks);
    wait_ready(ns, &["rediscache/broker", "workerpool/pool"]);
    eventually(
        WAIT,
        "every task running under the first leader",
        || async { (runs(ns).len() >= TASKS * 3).then_some(()) },
    )
    .await;

    let release = release();
    let leader = release.wait_leader(WAIT).await;
    ok(kubectl(&[
        "delete",
        "pod",
        &leader,
        "-n",
        &release.namespace,
        "--grace-period=0",
        "--force",
    ]));
    let killed = Instant::now();
    let next = eventually(WAIT, "the standby to take the Lease", || async {
        let now = release.leader();
        (!now.is_empty() && now != leader).then_some(now)
    })
    .await;
    let takeover = killed.elapsed();
    let before = runs(ns).len();
    eventually(WAIT, "runs to continue under the new leader", || async {
        (runs(ns).len() >= before + TASKS * 3).then_some(())
    })
    .await;

    // Stop every task, then compare what ran with every slot since its creation.
    let api: Api<PeriodicTask> = Api::namespaced(client.clone(), ns);
    for i in 0..TASKS {
        ok(kubectl(&[
            "patch",
            "ptask",
            &task_name(i),
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ]));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ran = runs(ns);
    let twice: Vec<&String> = ran
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    let mut missing = Vec::new();
    let mut expected_all = BTreeSet::new();
    for i in 0..TASKS {
        let pt = api.get(&task_name(i)).await.expect("task");
        let last = pt
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .expect("lastScheduleTime");
        let last = DateTime::from_timestamp_micros(last.0.as_microsecond()).expect("ts");
        for id in every_second_slot_ids(&pt, last) {
            if !ran.contains_key(&id) {
                missing.push(format!("{}: {id}", task_name(i)));
            }
            expected_all.insert(id);
        }
    }
    let foreign: Vec<&String> = ran
        .keys()
        .filter(|id| !expected_all.contains(*id))
        .collect();
    eprintln!(
        "leader failover on real pods: {leader} killed, {next} took the Lease after \
         {takeover:.1?}; {} slots ran, {} missing, {} twice",
        ran.len(),
        missing.len(),
        twice.len()
    );
    assert!(
        takeover < Duration::from_secs(LEASE_SECONDS + 3),
        "took over after {takeover:?}"
    );
    assert!(twice.is_empty(), "slots run twice: {twice:?}");
    assert!(foreign.is_empty(), "not slot ids: {foreign:?}");
    assert!(missing.is_empty(), "slots never run: {missing:?}");
}
