//! WorkerPool on real pods: `celery -A tasks worker` from the test app's image, its broker and
//! result backend from the connection Secret, executing what the in-cluster beat pushes.

use celery_operator_e2e::{eventually, jsonpath, kubectl, ok};
use serde_json::Value;

use super::support::{
    WAIT, apply, executed, redis_cache, redis_cli, setup, wait_ready, worker_pods, worker_pool,
};

pub(crate) async fn worker_pods_execute_the_periodic_tasks_and_store_results() {
    let (client, ns) = setup("ic-workers").await;
    apply(&ns.name, &redis_cache("broker", "broker", ""));
    // Workers started while their broker still refuses connections sometimes never consume
    // (seen twice in full runs); started after it answers, they always do (issue 11's note).
    wait_ready(&ns.name, &["rediscache/broker"]);
    apply(
        &ns.name,
        &worker_pool("pool", "  replicas: 2\n  concurrency: 2\n"),
    );
    apply(
        &ns.name,
        "apiVersion: celeryoperator.io/v1alpha1\nkind: PeriodicTask\nmetadata: {name: tick}\nspec:\n  task: tasks.record\n  args: [\"in-cluster\"]\n  kwargs: {greeting: \"héllo ✓\"}\n  schedule: {every: 2s}\n  broker: {redisCache: broker}\n",
    );
    wait_ready(
        &ns.name,
        &["rediscache/broker", "workerpool/pool", "periodictask/tick"],
    );
    let workers = eventually(WAIT, "two worker pods ready", || async {
        let pods = worker_pods(&client, &ns.name, "pool").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let names: Vec<String> = workers
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();

    let runs: Vec<Value> = eventually(WAIT, "three executions by the worker pods", || async {
        let e = executed(&ns.name);
        (e.len() >= 3).then_some(e)
    })
    .await;
    for run in &runs {
        assert_eq!(run["task"], "tasks.record");
        assert_eq!(run["args"], serde_json::json!(["in-cluster"]));
        assert_eq!(run["kwargs"]["greeting"], "héllo ✓");
        let host = run["hostname"].as_str().expect("hostname");
        assert!(
            names.iter().any(|n| host == format!("celery@{n}")),
            "executed by {host}, not a pod of {names:?}"
        );
    }

    // `kubectl logs` of the worker shows the execution; its result is in the result backend.
    let id = runs[0]["id"].as_str().expect("task id").to_owned();
    let host = runs[0]["hostname"].as_str().expect("hostname");
    let pod = host.trim_start_matches("celery@");
    let log = ok(kubectl(&["logs", "-n", &ns.name, pod]));
    assert!(
        log.contains(&format!("Task tasks.record[{id}] succeeded")),
        "{log}"
    );
    let meta = redis_cli(
        &ns.name,
        "broker",
        &["-n", "1", "get", &format!("celery-task-meta-{id}")],
    );
    let meta: Value = serde_json::from_str(&meta).expect("result meta is JSON");
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"]["id"], id.as_str());
    // The operator's status shows the pushes (run bookkeeping lands a moment after a run).
    eventually(WAIT, "totalRuns of at least 3", || async {
        let total = jsonpath(&ns.name, "ptask/tick", "{.status.totalRuns}");
        total
            .trim()
            .parse::<u64>()
            .is_ok_and(|n| n >= 3)
            .then_some(())
    })
    .await;
}
