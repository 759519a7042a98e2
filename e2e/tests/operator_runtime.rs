//! How the operator runs as users run it: leader election between replicas, metrics, probes.

use std::time::{Duration, Instant};

use celery_operator_e2e::operator::{Operator, http_get};
use celery_operator_e2e::{TestNamespace, client, eventually, kubectl, ok, repo_root};

const WAIT: Duration = Duration::from_secs(60);

fn leader_args(ns: &str) -> Vec<String> {
    [
        "--leader-election",
        "--lease-name",
        "e2e-operator",
        "--lease-namespace",
        ns,
        "--lease-duration-seconds",
        "6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn one_replica_leads_and_a_standby_takes_over_within_the_lease_duration() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "leader").await;
    let args = leader_args(&ns.name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Operator::start_with(&ns.name, &args, &[("POD_NAME", "replica-a")]);
    let mut b = Operator::start_with(&ns.name, &args, &[("POD_NAME", "replica-b")]);

    let leader = eventually(
        WAIT,
        "both replicas ready and exactly one leader",
        || async {
            for port in [a.metrics_port, b.metrics_port] {
                if http_get(port, "/readyz")?.0 != 200 {
                    return None;
                }
            }
            let la = a.metric("celery_operator_leader")?;
            let lb = b.metric("celery_operator_leader")?;
            match (la as i64, lb as i64) {
                (1, 0) => Some('a'),
                (0, 1) => Some('b'),
                _ => None,
            }
        },
    )
    .await;
    // The standby is healthy and ready too: it is waiting for the Lease.
    for port in [a.metrics_port, b.metrics_port] {
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    }
    let holder = ok(kubectl(&[
        "get",
        "lease",
        "e2e-operator",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(holder, format!("replica-{leader}"));

    // The standby reconciles nothing while it waits.
    let (killed, standby) = if leader == 'a' {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    ok(celery_operator_e2e::kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            &std::fs::read_to_string(repo_root().join("deploy/samples/rediscache.yaml"))
                .expect("sample"),
        ),
    ));
    ok(kubectl(&[
        "wait",
        "-n",
        &ns.name,
        "--for=condition=Ready",
        "--timeout=60s",
        "rediscache/broker",
    ]));
    assert!(
        !standby.log_text().contains("Created StatefulSet"),
        "the standby must not reconcile"
    );

    killed.kill();
    let killed_at = Instant::now();
    eventually(WAIT, "the standby to take over", || async {
        (standby.metric("celery_operator_leader")? == 1.0).then_some(())
    })
    .await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(6 + 3),
        "took over after {took:?}, lease duration is 6 s"
    );
    let holder = ok(kubectl(&[
        "get",
        "lease",
        "e2e-operator",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_ne!(holder, format!("replica-{leader}"));
    assert!(standby.log_text().contains("acquired leadership"));
}

#[tokio::test]
async fn metrics_are_scraped_with_every_series() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "metrics").await;
    let operator = Operator::start(&ns.name);
    ok(celery_operator_e2e::kubectl_with_input(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            "apiVersion: celeryoperator.io/v1alpha1\nkind: WorkerPool\nmetadata: {name: orphan}\nspec: {image: x, app: proj, broker: {redisCache: missing}}\n",
        ),
    ));
    // The error is counted during the reconcile and its duration when it ends: wait for both.
    let text = eventually(WAIT, "reconcile series for WorkerPool", || async {
        let (status, body) = http_get(operator.metrics_port, "/metrics")?;
        let done = body.contains("celery_operator_reconcile_errors_total{kind=\"WorkerPool\",error=\"broker_unresolved\"}")
            && body.contains("celery_operator_reconcile_duration_seconds_count{kind=\"WorkerPool\"}");
        (status == 200 && done).then_some(body)
    })
    .await;
    for series in [
        "celery_operator_reconciles_total{kind=\"WorkerPool\"}",
        "celery_operator_reconcile_duration_seconds_bucket{",
        "celery_operator_leader 1",
        "# TYPE celery_operator_schedule_lateness_seconds histogram",
        "# TYPE celery_operator_periodic_task_pushes counter",
    ] {
        assert!(text.contains(series), "{series} missing in\n{text}");
    }
}
