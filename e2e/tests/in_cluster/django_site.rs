//! The example Django site (`examples/django-site`) on real pods, applied from its own
//! manifest with the locally built `django-site` and `redis` images: its cache and broker
//! RedisCaches, its WorkerPool, its two PeriodicTasks, gunicorn and the SMTP sink. What a
//! visitor sees: the cached ranking appears and is refreshed on schedule; a signup page
//! answers at once while the mail task runs in a worker; the mail reaches the SMTP server
//! after its first attempt is refused and retried.

use std::time::Duration;

use celery_operator_e2e::pods::{from_json, run_script};
use celery_operator_e2e::{eventually, image, kubectl, ok, repo_root};
use chrono::{DateTime, FixedOffset};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde_json::{Value, json};

use super::support::{WAIT, apply, marked, redis_cli, setup, wait_ready, worker_pods};

/// The example's manifest, applied as its README says (images substituted).
const MANIFEST: &str = "examples/django-site/k8s/site.yaml";
const EMAIL: &str = "a@example.com";
const SUBJECT: &str = "Welcome to the shop";

/// An HTTP client of the site, in a pod of the site's image (Python's urllib, nothing else):
/// `ranking OLD SECONDS` polls /ranking/ until a ranking computed at another time than OLD
/// (`-`: any) is cached, then prints `RANKING <json>` (or `TIMEOUT <last answer>`);
/// `signup EMAIL` prints `SIGNUP <status> <milliseconds> <json>` of /signup/ and at once
/// `STATE <json>` of the task's /tasks/<id>/.
const CLIENT: &str = r#"
import json, sys, time, urllib.error, urllib.parse, urllib.request

BASE = "http://web:8000"

def get(path):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(BASE + path, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    return status, (time.monotonic() - start) * 1000, body

mode = sys.argv[1]
if mode == "ranking":
    old, deadline = sys.argv[2], time.monotonic() + float(sys.argv[3])
    last = None
    while True:
        try:
            last = json.loads(get("/ranking/")[2])
        except (OSError, ValueError) as e:
            last = {"error": repr(e)}
        at = last.get("computed_at")
        if at and at != old:
            print("RANKING " + json.dumps(last))
            break
        if time.monotonic() > deadline:
            print("TIMEOUT " + json.dumps(last))
            break
        time.sleep(1)
elif mode == "signup":
    get("/healthz")  # name lookup and first connection, outside the timed request
    status, ms, body = get("/signup/?email=" + urllib.parse.quote(sys.argv[2]))
    print("SIGNUP %d %.0f %s" % (status, ms, body.decode()))
    task = json.loads(body)["task_id"]
    print("STATE " + get("/tasks/%s/" % task)[2].decode())
"#;

fn manifest() -> String {
    let path = repo_root().join(MANIFEST);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .replace("@SITE_IMAGE@", &image("django-site"))
        .replace("@REDIS_IMAGE@", &image("redis"))
}

/// `kubectl wait --for=condition=Available` on Deployments, with the real pods' patience.
fn wait_available(ns: &str, deployments: &[&str]) {
    let timeout = format!("--timeout={}s", WAIT.as_secs());
    let mut args = vec![
        "wait",
        "-n",
        ns,
        "--for=condition=Available",
        timeout.as_str(),
    ];
    args.extend_from_slice(deployments);
    ok(kubectl(&args));
}

/// Runs the site's HTTP client once with `args`; returns its log.
async fn site_client(client: &Client, ns: &str, name: &str, args: &[&str]) -> String {
    let mut command = vec!["python3", "-c", CLIENT];
    command.extend_from_slice(args);
    let pod: Pod = from_json(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": image("django-site"), "imagePullPolicy": "IfNotPresent",
            "command": command,
        }]}
    }));
    run_script(client, ns, pod, "Succeeded").await
}

fn logs_of(ns: &str, object: &str) -> String {
    String::from_utf8_lossy(&kubectl(&["logs", "-n", ns, object]).stdout).into_owned()
}

/// The logs of the worker pods `workers`, one after the other.
fn workers_log(ns: &str, workers: &[String]) -> String {
    workers
        .iter()
        .map(|w| logs_of(ns, &format!("pod/{w}")))
        .collect()
}

/// The logs of the site's pods, for a failure's message.
async fn site_logs(client: &Client, ns: &str) -> String {
    let mut all = String::new();
    for pod in worker_pods(client, ns, "site-workers").await {
        let name = pod.metadata.name.unwrap_or_default();
        all += &format!("--- worker {name}\n{}", logs_of(ns, &format!("pod/{name}")));
    }
    for d in ["web", "smtp"] {
        all += &format!("--- {d}\n{}", logs_of(ns, &format!("deployment/{d}")));
    }
    all
}

/// The cached ranking as the page serves it, once one computed at another time than `old`
/// is there.
async fn ranking_after(client: &Client, ns: &str, name: &str, old: Option<&str>) -> Value {
    let logs = site_client(client, ns, name, &["ranking", old.unwrap_or("-"), "60"]).await;
    match marked(&logs, "RANKING ") {
        Some(body) => serde_json::from_str(body).expect("the ranking is JSON"),
        None => {
            let site = site_logs(client, ns).await;
            let what = if old.is_some() { "refreshed" } else { "cached" };
            panic!("no {what} ranking in 60 s: {logs}\n{site}")
        }
    }
}

fn computed_at(ranking: &Value) -> DateTime<FixedOffset> {
    let at = ranking["computed_at"].as_str().expect("computed_at");
    DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("computed_at {at}: {e}"))
}

pub(crate) async fn django_site_serves_its_cached_ranking_refreshed_on_schedule_and_mails_after_a_retry()
 {
    let (client, test_ns) = setup("ic-django").await;
    let ns = test_ns.name.as_str();
    apply(ns, &manifest());
    wait_ready(
        ns,
        &[
            "rediscache/cache",
            "rediscache/broker",
            "workerpool/site-workers",
            "periodictask/refresh-ranking",
            "periodictask/refresh-ranking-demo",
        ],
    );
    wait_available(ns, &["deployment/web", "deployment/smtp"]);
    let workers: Vec<String> = eventually(WAIT, "the site's worker pod ready", || async {
        let pods = worker_pods(&client, ns, "site-workers").await;
        (!pods.is_empty()).then_some(pods)
    })
    .await
    .into_iter()
    .filter_map(|p| p.metadata.name)
    .collect();

    // The ranking appears: computed by a worker from its database, cached in the cache
    // RedisCache, served by the page.
    let first = ranking_after(&client, ns, "ranking-first", None).await;
    let top: Vec<(&str, u64)> = first["ranking"]
        .as_array()
        .expect("a ranking")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default(),
                r["sales"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(top.len(), 5, "{first}");
    assert_eq!(top[0], ("Paper filters, 100", 630), "{first}");
    assert_eq!(top[1], ("Espresso beans, 1 kg", 412), "{first}");
    let by = first["computed_by"].as_str().unwrap_or_default();
    assert!(
        workers.iter().any(|w| w == by),
        "computed by {by}, not a worker pod of {workers:?}"
    );
    let cached = redis_cli(ns, "cache", &["get", ":1:ranking"]);
    let cached: Value = serde_json::from_str(&cached)
        .unwrap_or_else(|e| panic!("the cache's :1:ranking is not JSON ({e}): {cached}"));
    assert_eq!(cached["ranking"], first["ranking"], "{cached}");

    // Refreshed on schedule: nothing in the namespace but the operator sends refresh_ranking,
    // and a newer ranking replaces the first, computed by a worker pod.
    let old = first["computed_at"]
        .as_str()
        .expect("computed_at")
        .to_owned();
    let second = ranking_after(&client, ns, "ranking-second", Some(&old)).await;
    let gap = (computed_at(&second) - computed_at(&first))
        .to_std()
        .unwrap_or_default();
    // Slots 30 s apart; a message runs at most its `expires: 25s` late (the first one may
    // have waited for the worker to start), so two refreshes are at least 5 s apart.
    assert!(
        gap >= Duration::from_secs(5),
        "refreshed {gap:?} after the first: {first} then {second}"
    );
    let worker_log = workers_log(ns, &workers);
    for ranking in [&first, &second] {
        let id = ranking["task_id"].as_str().expect("task_id");
        let line = format!("Task shop.tasks.refresh_ranking[{id}] succeeded");
        assert!(worker_log.contains(&line), "no {line:?} in:\n{worker_log}");
    }
    let runs = |ptask: &str| {
        ok(kubectl(&[
            "get",
            "ptask",
            ptask,
            "-n",
            ns,
            "-o",
            "jsonpath={.status.totalRuns}",
        ]))
        .trim()
        .parse::<u64>()
        .unwrap_or(0)
    };
    // Run bookkeeping lands in status a moment after a run.
    eventually(WAIT, "2 refreshes pushed by the PeriodicTasks", || async {
        (runs("refresh-ranking-demo") + runs("refresh-ranking") >= 2).then_some(())
    })
    .await;

    // A signup answers at once, with the task's id, while the mail is still pending.
    let logs = site_client(&client, ns, "signup", &["signup", EMAIL]).await;
    let signup = marked(&logs, "SIGNUP ").unwrap_or_else(|| panic!("no signup: {logs}"));
    let mut parts = signup.splitn(3, ' ');
    let status = parts.next().unwrap_or_default();
    let millis: f64 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .expect("milliseconds");
    let body: Value = serde_json::from_str(parts.next().unwrap_or_default()).expect("JSON");
    assert_eq!(status, "202", "{logs}");
    assert!(millis < 2000.0, "the signup page took {millis} ms: {logs}");
    let id = body["task_id"].as_str().expect("task_id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "task id {id}");
    let state: Value = serde_json::from_str(marked(&logs, "STATE ").expect("STATE")).expect("JSON");
    assert_ne!(
        state["state"], "SUCCESS",
        "mailed before the page answered: {logs}"
    );
    let sink = logs_of(ns, "deployment/smtp");
    let delivered = format!("DELIVERED to={EMAIL} subject={SUBJECT}");
    assert!(
        !sink.contains(&delivered),
        "delivered while the first attempt should be waiting for its retry:\n{sink}"
    );

    // The SMTP server refused the first attempt; the retry 10 s later is delivered.
    let sink = eventually(WAIT, "the welcome mail delivered", || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sink = logs_of(ns, "deployment/smtp");
        sink.contains(&delivered).then_some(sink)
    })
    .await;
    let refused = sink
        .find(&format!("REFUSED to={EMAIL} attempt=1"))
        .unwrap_or_else(|| panic!("the first attempt was not refused:\n{sink}"));
    assert!(
        refused < sink.find(&delivered).expect("delivered"),
        "{sink}"
    );
    let worker_log = workers_log(ns, &workers);
    for line in [
        format!("Task shop.tasks.send_welcome_mail[{id}] retry: Retry in 10s"),
        format!("Task shop.tasks.send_welcome_mail[{id}] succeeded"),
    ] {
        assert!(worker_log.contains(&line), "no {line:?} in:\n{worker_log}");
    }
    // Its result, in the broker's database 1 (the result backend).
    let meta = redis_cli(
        ns,
        "broker",
        &["-n", "1", "get", &format!("celery-task-meta-{id}")],
    );
    let meta: Value = serde_json::from_str(&meta).expect("result meta is JSON");
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"]["to"], EMAIL, "{meta}");
    assert_eq!(meta["result"]["attempts"], 2, "{meta}");
}
