//! A replicated broker on real pods: a primary, two replicas and three Sentinels. The client
//! Service follows the primary; killing the primary's pod promotes a replica within seconds,
//! a write a replica confirmed survives, and the old primary comes back as a replica.

use std::time::{Duration, Instant};

use celery_operator_e2e::{eventually, jsonpath, kubectl, ok};

use super::support::{WAIT, apply, redis_cache, setup, wait_ready};

const CACHE: &str = "ha";

/// stdout of `sh -c script` in `pod`, or None when kubectl or the script fails.
fn sh(ns: &str, pod: &str, script: &str) -> Option<String> {
    let out = kubectl(&["exec", "-n", ns, pod, "--", "sh", "-c", script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The primary's address as the first Sentinel tells it (its REDISCLI_AUTH is the password).
fn sentinel_primary(ns: &str) -> Option<String> {
    sh(
        ns,
        "ha-sentinel-0",
        "redis-cli -p 26379 --raw SENTINEL get-master-addr-by-name ha | head -n 1",
    )
    .filter(|a| !a.is_empty())
}

fn role(ns: &str, pod: &str) -> Option<String> {
    sh(ns, pod, "redis-cli --raw ROLE | head -n 1")
}

fn labelled_primary(ns: &str) -> String {
    ok(kubectl(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        "celeryoperator.io/role=primary",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]))
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
    // Settled: each Sentinel knows both replicas and the two other Sentinels (it learns
    // them from the primary's INFO and its hello channel, within seconds of the start).
    for n in 0..3 {
        let pod = format!("ha-sentinel-{n}");
        eventually(WAIT, "the Sentinels to know the whole set", || async {
            let replicas = sh(ns, &pod, "redis-cli -p 26379 --raw SENTINEL REPLICAS ha")?;
            let peers = sh(ns, &pod, "redis-cli -p 26379 --raw SENTINEL SENTINELS ha")?;
            let linked = replicas.matches("master-link-status\nok").count();
            let known = peers.lines().filter(|l| *l == "runid").count();
            (linked == 2 && known == 2).then_some(())
        })
        .await;
    }
    let secret = |key: &str| jsonpath(ns, "secret/ha-connection", &format!("{{.data.{key}}}"));
    assert!(!secret("sentinelUrl").is_empty() && !secret("masterName").is_empty());

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

    let killed = Instant::now();
    ok(kubectl(&[
        "delete",
        "pod",
        "-n",
        ns,
        "ha-0",
        "--grace-period=0",
        "--force",
    ]));
    let promoted = eventually(WAIT, "the Sentinels to name another primary", || async {
        sentinel_primary(ns).filter(|a| !a.starts_with("ha-0."))
    })
    .await;
    let new = promoted.split('.').next().expect("pod").to_string();
    eventually(WAIT, "the new primary to take writes", || async {
        sh(ns, &new, "redis-cli SET after-kill 1")
            .filter(|r| r == "OK")
            .map(|_| ())
    })
    .await;
    let without_primary = killed.elapsed();
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
