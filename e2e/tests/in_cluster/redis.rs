//! RedisCache on real pods: clients that know only the connection Secret, authentication, a
//! broker's data across the pod's replacement, a config change rolling the pod, and a cache
//! evicting at its memory limit.

use celery_operator_e2e::pods::{is_ready, ready_pod};
use celery_operator_e2e::{eventually, kubectl, ok};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::support::{
    WAIT, apply, client_pod, marked, redis_cache, redis_cli, redis_pod, setup, wait_ready,
};

fn line<'a>(logs: &'a str, marker: &str) -> &'a str {
    marked(logs, marker)
        .unwrap_or_else(|| panic!("no line {marker:?} in:\n{logs}"))
        .trim()
}

pub(crate) async fn broker_serves_clients_of_its_connection_secret_keeps_data_and_rolls_on_config()
{
    let (client, ns) = setup("ic-broker").await;
    apply(&ns.name, &redis_cache("broker", "broker", ""));
    wait_ready(&ns.name, &["rediscache/broker"]);

    // A client pod that knows only the connection Secret: the URL, and host/port/password.
    // Ready follows the pod's readiness; kube-proxy routes the Service a moment later, so
    // the client waits for it as any client's reconnect would.
    let script = r#"
i=0; until [ "$(redis-cli -u "$URL" ping 2>/dev/null)" = PONG ] || [ $i -ge 50 ]; do sleep 0.2; i=$((i+1)); done
echo "url-ping: $(redis-cli -u "$URL" ping)"
echo "set: $(redis-cli -h "$HOST" -p "$PORT" -a "$PASSWORD" --no-auth-warning set greeting hello)"
echo "get: $(redis-cli -u "$URL" get greeting)"
echo "wrong: $(redis-cli -h "$HOST" -p "$PORT" -a not-the-password --no-auth-warning ping 2>&1)"
echo "anonymous: $(redis-cli -h "$HOST" -p "$PORT" ping 2>&1)"
"#;
    let logs = client_pod(&client, &ns.name, "client", "redis", "broker", script).await;
    assert_eq!(line(&logs, "url-ping:"), "PONG", "{logs}");
    assert_eq!(line(&logs, "set:"), "OK");
    assert_eq!(line(&logs, "get:"), "hello");
    let wrong = line(&logs, "wrong:");
    assert!(
        wrong.contains("WRONGPASS") && !wrong.contains("PONG"),
        "{wrong}"
    );
    assert!(line(&logs, "anonymous:").contains("NOAUTH"), "{logs}");
    assert!(
        !logs.contains(&secret_password(&ns.name)),
        "the password leaked into output"
    );

    // The broker's AOF on its claimed volume outlives the pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = redis_pod("broker");
    let first = ready_pod(&pods, &pod).await;
    assert_eq!(
        redis_cli(&ns.name, "broker", &["config", "get", "appendonly"]),
        "appendonly\nyes"
    );
    ok(kubectl(&[
        "delete",
        "pod",
        "-n",
        &ns.name,
        &pod,
        "--wait=true",
    ]));
    // `--wait` returned once the old pod was gone: this is its replacement.
    let second = ready_pod(&pods, &pod).await;
    assert_ne!(second.metadata.uid, first.metadata.uid);
    assert_eq!(redis_cli(&ns.name, "broker", &["get", "greeting"]), "hello");

    // A config change rolls the pod, which then runs with the new value.
    let patch = r#"{"spec":{"config":{"timeout":"300","tcp-keepalive":"45"}}}"#;
    ok(kubectl(&[
        "patch",
        "rediscache",
        "broker",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        patch,
    ]));
    let third = eventually(WAIT, "the pod rolled for the new config", || async {
        let p = pods.get_opt(&pod).await.ok().flatten()?;
        (p.metadata.uid != second.metadata.uid && is_ready(&p)).then_some(p)
    })
    .await;
    assert_ne!(third.metadata.uid, second.metadata.uid);
    assert_eq!(
        redis_cli(&ns.name, "broker", &["config", "get", "timeout"]),
        "timeout\n300"
    );
    assert_eq!(
        redis_cli(&ns.name, "broker", &["config", "get", "tcp-keepalive"]),
        "tcp-keepalive\n45"
    );
    assert_eq!(redis_cli(&ns.name, "broker", &["get", "greeting"]), "hello");
    wait_ready(&ns.name, &["rediscache/broker"]);
}

/// The generated password (to prove it appears in no output).
fn secret_password(ns: &str) -> String {
    let b64 = ok(kubectl(&[
        "get",
        "secret",
        "broker-password",
        "-n",
        ns,
        "-o",
        "jsonpath={.data.password}",
    ]));
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .expect("base64"),
    )
    .expect("utf-8")
}

pub(crate) async fn cache_evicts_least_recently_used_keys_at_max_memory() {
    let (client, ns) = setup("ic-cache").await;
    apply(
        &ns.name,
        &redis_cache("cache", "cache", "  maxMemory: 4Mi\n"),
    );
    wait_ready(&ns.name, &["rediscache/cache"]);
    assert_eq!(
        redis_cli(&ns.name, "cache", &["config", "get", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru"
    );
    // 20 MB of 10 kB values into 4 MiB: every write answers OK, old keys make room.
    let script = r#"
i=0; until [ "$(redis-cli -u "$URL" ping 2>/dev/null)" = PONG ] || [ $i -ge 50 ]; do sleep 0.2; i=$((i+1)); done
v=$(head -c 10000 /dev/zero | tr '\0' x)
i=0
while [ $i -lt 2000 ]; do echo "SET key:$i $v"; i=$((i+1)); done | redis-cli -u "$URL" --pipe
echo "newest: $(redis-cli -u "$URL" strlen key:1999)"
echo "oldest: $(redis-cli -u "$URL" exists key:0)"
# One INFO: keys and evictions of the same instant (a client's buffers may evict more later).
redis-cli -u "$URL" info | tr -d '\r' | sed -n -e 's/^db0:keys=\([0-9]*\).*/dbsize: \1/p' \
  -e 's/^evicted_keys:/evicted: /p' -e 's/^used_memory:/used: /p'
"#;
    let logs = client_pod(&client, &ns.name, "fill", "redis", "cache", script).await;
    assert!(logs.contains("errors: 0, replies: 2000"), "{logs}");
    let dbsize: u64 = line(&logs, "dbsize:").parse().expect("dbsize");
    assert!(dbsize > 0 && dbsize < 2000, "{logs}");
    assert_eq!(line(&logs, "newest:"), "10000");
    assert_eq!(line(&logs, "oldest:"), "0", "the oldest key was evicted");
    let evicted: u64 = line(&logs, "evicted:").parse().expect("evicted_keys");
    assert_eq!(evicted + dbsize, 2000, "{logs}");
    let used: u64 = line(&logs, "used:").parse().expect("used_memory");
    // 20 MB written; memory stays at the limit (Redis evicts before each command, so the
    // INFO reply's own buffers may sit a few kB above it).
    assert!(
        used <= 4 * 1024 * 1024 + 256 * 1024,
        "used {used}, far over maxmemory"
    );
    // No persistence for a cache: nothing claimed.
    let claims = ok(kubectl(&["get", "pvc", "-n", &ns.name, "-o", "name"]));
    assert!(claims.trim().is_empty(), "{claims}");
}
