//! What the operator holds on a broker: connections close when the last object using them
//! goes (or its password changes), and the password never reaches the operator's log.

use std::time::Duration;

use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{
    TestNamespace, client, eventually, jsonpath, kubectl, kubectl_with_input, ok,
};

const WAIT: Duration = Duration::from_secs(60);

/// Clients connected to `redis` besides the redis-cli that asks.
fn operator_clients(redis: &RedisServer) -> usize {
    let out = redis.cli(&["CLIENT", "LIST"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .count()
}

#[tokio::test]
async fn broker_connections_close_with_their_objects_and_the_password_is_never_logged() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "conns").await;
    let password = format!("c0nn-{}", uuid::Uuid::new_v4().simple());
    let redis = RedisServer::start(None, Some(&password), &["--save", ""]);
    let operator = Operator::start(&ns.name);
    let manifests = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "broker"},
         "stringData": {"url": redis.url(0)}},
        {"apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
         "metadata": {"name": "tick"},
         "spec": {"task": "tasks.record", "schedule": {"every": "1s"},
                  "broker": {"secretKeyRef": {"name": "broker", "key": "url"}}}},
        {"apiVersion": "celeryoperator.io/v1alpha1", "kind": "WorkerPool",
         "metadata": {"name": "pool"},
         "spec": {"image": "proj:1", "app": "tasks",
                  "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
                  "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}},
    ]});
    ok(kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&manifests.to_string()),
    ));
    eventually(WAIT, "the beat pushes and the autoscaler reads", || async {
        let runs: i64 = jsonpath(&ns.name, "ptask/tick", "{.status.totalRuns}")
            .parse()
            .unwrap_or(0);
        let active = jsonpath(
            &ns.name,
            "wpool/pool",
            "{.status.conditions[?(@.type==\"ScalingActive\")].status}",
        );
        (runs >= 2 && active == "True").then_some(())
    })
    .await;
    // The push thread's and the probe's connection, the autoscaler's, its heartbeat
    // subscription.
    let held = operator_clients(&redis);
    assert!(held >= 3, "{held} operator connections");
    let statuses = ok(kubectl(&[
        "get",
        "ptask,wpool",
        "-n",
        &ns.name,
        "-o",
        "yaml",
    ]));
    assert!(
        !statuses.contains(&password),
        "the password reached a status"
    );

    ok(kubectl(&[
        "delete",
        "-n",
        &ns.name,
        "ptask/tick",
        "wpool/pool",
    ]));
    let deadline = std::time::Instant::now() + WAIT;
    while operator_clients(&redis) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = redis.cli(&["CLIENT", "LIST"]);
    assert_eq!(
        operator_clients(&redis),
        0,
        "connections of the deleted objects still open after {WAIT:?}: {}",
        String::from_utf8_lossy(&left.stdout)
    );

    let log = operator.log_text();
    assert!(
        log.contains("starting controllers"),
        "the operator's log: {log}"
    );
    assert!(!log.contains(&password), "the password reached the log");
    let events = ok(kubectl(&["get", "events", "-n", &ns.name, "-o", "yaml"]));
    assert!(!events.contains(&password), "the password reached an event");
}
