//! PeriodicTask end to end: the operator (the beat) against the real control plane pushes
//! into a real redis-server that a real Celery worker of the test app consumes.
//! Each test has its own namespace, redis-server, operator and worker.

use std::collections::BTreeSet;
use std::time::Duration;

use celery_operator::api::periodic_task::{
    PeriodicTask, PeriodicTaskRun, PeriodicTaskStatus, TaskState,
};
use celery_operator::controller::periodic_task::plan::run_now_task_id;
use celery_operator_e2e::celery::{CeleryWorker, recorded};
use celery_operator_e2e::operator::Operator;
use celery_operator_e2e::redis::RedisServer;
use celery_operator_e2e::{
    TestNamespace, client, eventually, every_second_slot_ids, kubectl, kubectl_with_input, ok,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "pt-s3cret-Zq9";

struct Harness {
    ns: TestNamespace,
    redis: RedisServer,
    operator: Operator,
    api: Api<PeriodicTask>,
    client: kube::Client,
}

impl Harness {
    /// Namespace, a password-protected redis-server, a Secret `broker` holding its URL and
    /// the operator watching the namespace.
    async fn new(prefix: &str) -> Self {
        Self::with_operator_args(prefix, &[]).await
    }

    /// Like [`Harness::new`], the operator started with extra `run` arguments.
    async fn with_operator_args(prefix: &str, args: &[&str]) -> Self {
        let client = client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let redis = RedisServer::start(None, Some(PASSWORD), &["--save", ""]);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "broker"},
            "stringData": {"url": redis.url(0)},
        }))
        .expect("secret");
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
        let operator = Operator::start_with(&ns.name, args, &[]);
        let api = Api::namespaced(client.clone(), &ns.name);
        Self {
            ns,
            redis,
            operator,
            api,
            client,
        }
    }

    fn apply(&self, name: &str, spec: Value) {
        let manifest = json!({
            "apiVersion": "celeryoperator.io/v1alpha1",
            "kind": "PeriodicTask",
            "metadata": {"name": name},
            "spec": spec,
        });
        ok(kubectl_with_input(
            &["apply", "-n", &self.ns.name, "-f", "-"],
            Some(&manifest.to_string()),
        ));
    }

    fn patch(&self, name: &str, patch: Value) {
        ok(kubectl(&[
            "patch",
            "-n",
            &self.ns.name,
            "periodictask",
            name,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]));
    }

    async fn get(&self, name: &str) -> PeriodicTask {
        self.api.get(name).await.expect("get periodictask")
    }

    /// The object once its status held still for longer than routine run bookkeeping may
    /// wait to be written (1 s), and a late report's.
    async fn settled(&self, name: &str) -> PeriodicTask {
        eventually(WAIT, "a settled status", || async {
            let before = self.get(name).await.status;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let pt = self.get(name).await;
            (pt.status == before).then_some(pt)
        })
        .await
    }

    async fn status(&self, name: &str) -> PeriodicTaskStatus {
        self.get(name).await.status.unwrap_or_default()
    }

    /// Each `lastRun` the object's status shows from now on, in the order written; returns
    /// once the watch is open, so nothing written after the call is missed.
    async fn watch_last_runs(&self, name: &str) -> mpsc::UnboundedReceiver<PeriodicTaskRun> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (open_tx, open) = tokio::sync::oneshot::channel();
        let events = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut open_tx = Some(open_tx);
            let mut last = None;
            while let Some(Ok(event)) = events.next().await {
                let task = match event {
                    watcher::Event::InitDone => {
                        open_tx.take().map(|o| o.send(()));
                        continue;
                    }
                    watcher::Event::Apply(task) | watcher::Event::InitApply(task) => task,
                    _ => continue,
                };
                let run = task.status.and_then(|s| s.last_run);
                if run.is_some() && run != last {
                    last.clone_from(&run);
                    if run.is_some_and(|r| tx.send(r).is_err()) {
                        return;
                    }
                }
            }
        });
        open.await.expect("the watch opens");
        rx
    }

    async fn condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        self.status(name)
            .await
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason))
    }

    async fn runs(&self, name: &str) -> i64 {
        self.status(name).await.total_runs.unwrap_or(0)
    }

    /// A Celery worker of the test app consuming `queues` from this Redis.
    fn worker(&self, queues: &str) -> CeleryWorker {
        CeleryWorker::on_queues(&self.redis.url(0), queues)
    }

    /// The executions the `record` task appended, in order.
    fn executed(&self) -> Vec<Value> {
        recorded(&self.redis)
    }

    fn executed_ids(&self, task: &str) -> Vec<String> {
        self.executed()
            .iter()
            .filter(|e| e["kwargs"]["tag"] == task)
            .map(|e| e["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    fn assert_no_secret_leaked(&self) {
        let log = self.operator.log_text();
        assert!(
            !log.contains(PASSWORD),
            "the operator logged the broker password"
        );
        let all = ok(kubectl(&[
            "get",
            "events,periodictasks",
            "-n",
            &self.ns.name,
            "-o",
            "yaml",
        ]));
        assert!(
            !all.contains(PASSWORD),
            "the password leaked into events or status"
        );
    }
}

fn every(tag: &str, every: &str) -> Value {
    json!({
        "task": "tasks.record",
        "kwargs": {"tag": tag},
        "schedule": {"every": every},
        "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
    })
}

fn assert_unique(ids: &[String]) {
    let set: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "duplicate task ids among {ids:?}");
}

fn last_schedule(s: &PeriodicTaskStatus) -> DateTime<Utc> {
    let t = s.last_schedule_time.as_ref().expect("lastScheduleTime");
    DateTime::from_timestamp_micros(t.0.as_microsecond()).expect("ts")
}

#[tokio::test]
async fn every_second_runs_with_args_and_unicode_kwargs_and_kubectl_shows_it_moving() {
    let h = Harness::new("pt-every").await;
    let _worker = h.worker("celery");
    let kwargs = json!({"tag": "tick", "name": "Zoë ✓ 日本語", "n": {"deep": [1, 2.5, null]}});
    h.apply(
        "tick",
        json!({
            "task": "tasks.record",
            "args": [1, "two", {"three": 3}],
            "kwargs": kwargs,
            "schedule": {"every": "1s"},
            "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
        }),
    );
    let entries = eventually(WAIT, "5 executions of tick", || async {
        let e: Vec<Value> = h
            .executed()
            .into_iter()
            .filter(|e| e["kwargs"]["tag"] == "tick")
            .collect();
        (e.len() >= 5).then_some(e)
    })
    .await;
    for e in &entries {
        assert_eq!(e["task"], "tasks.record");
        assert_eq!(e["args"], json!([1, "two", {"three": 3}]));
        assert_eq!(e["kwargs"], kwargs);
        assert_eq!(e["queue"], "celery");
    }
    // One per second: consecutive executions about a second apart, never a burst.
    let times: Vec<f64> = entries.iter().filter_map(|e| e["time"].as_f64()).collect();
    for w in times.windows(2).skip(1) {
        let gap = w[1] - w[0];
        assert!(
            (0.5..1.6).contains(&gap),
            "executions {gap:.3}s apart: {times:?}"
        );
    }
    let ids: Vec<String> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().into())
        .collect();
    assert_unique(&ids);
    // The ids are the slot ids: derived from (uid, slot), up to the last slot in status
    // (run bookkeeping reaches status a moment after the run).
    let pt = h.get("tick").await;
    let expected = eventually(WAIT, "status up to the executed slots", || async {
        let status = h.status("tick").await;
        status.last_schedule_time.as_ref()?;
        let expected = every_second_slot_ids(&pt, last_schedule(&status));
        ids.iter()
            .all(|id| expected.contains(id))
            .then_some(expected)
    })
    .await;
    for id in &ids {
        assert!(expected.contains(id), "{id} is not a slot id");
    }

    // kubectl get shows Last/Next/Runs moving.
    let row = |out: String| out.lines().nth(1).unwrap_or_default().to_string();
    let first = row(ok(kubectl(&["get", "periodictasks", "-n", &h.ns.name])));
    let header = ok(kubectl(&["get", "ptask", "-n", &h.ns.name]));
    for col in ["TASK", "SCHEDULE", "SUSPEND", "LAST", "NEXT", "RUNS", "AGE"] {
        assert!(header.contains(col), "{col} missing in\n{header}");
    }
    assert!(first.contains("every 1s"), "{first}");
    let runs_before = h.runs("tick").await;
    let next_before = h.status("tick").await.next_schedule_time;
    eventually(WAIT, "Runs and Next to move", || async {
        let s = h.status("tick").await;
        (s.total_runs.unwrap_or(0) >= runs_before + 2 && s.next_schedule_time != next_before)
            .then_some(())
    })
    .await;
    let second = row(ok(kubectl(&["get", "periodictasks", "-n", &h.ns.name])));
    assert_ne!(first, second, "kubectl get output did not move");
    for c in ["Ready", "BrokerReachable", "ScheduleValid"] {
        assert_eq!(
            h.condition("tick", c).await.map(|c| c.0).as_deref(),
            Some("True"),
            "{c}"
        );
    }

    // Run now: a new annotation value pushes one extra run, recorded in status.
    ok(kubectl(&[
        "annotate",
        "-n",
        &h.ns.name,
        "periodictask",
        "tick",
        "celeryoperator.io/run-now=first",
        "--overwrite",
    ]));
    let run_now_id = run_now_task_id(&pt.uid().expect("uid"), "first").to_string();
    eventually(WAIT, "the run-now execution", || async {
        h.executed()
            .iter()
            .any(|e| e["id"] == run_now_id.as_str())
            .then_some(())
    })
    .await;
    eventually(WAIT, "status.lastRunNow", || async {
        (h.status("tick").await.last_run_now.as_deref() == Some("first")).then_some(())
    })
    .await;
    assert_eq!(
        h.executed()
            .iter()
            .filter(|e| e["id"] == run_now_id.as_str())
            .count(),
        1,
        "run-now pushed once"
    );
    h.assert_no_secret_leaked();
}

#[tokio::test]
async fn priority_lands_on_its_step_key_and_expired_messages_are_discarded_unrun() {
    let h = Harness::new("pt-prio").await;
    let mut spec = every("prio", "1s");
    spec["queue"] = json!("prio");
    spec["priority"] = json!(7);
    spec["expires"] = json!("2s");
    h.apply("prio", spec);
    // No worker yet: the messages wait in the list of step 6 (kombu's steps 0,3,6,9).
    let key = "prio\x06\x166";
    let raw = eventually(WAIT, "3 messages on the step-6 key", || async {
        let out = h.redis.cli(&["LRANGE", key, "0", "-1"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().count() >= 3).then_some(text)
    })
    .await;
    assert_eq!(
        String::from_utf8_lossy(&h.redis.cli(&["LLEN", "prio"]).stdout).trim(),
        "0",
        "nothing on the bare queue key"
    );
    let msg = celery_operator::celery::decode_envelope(raw.lines().next().expect("one"))
        .expect("decodes");
    assert_eq!((msg.priority, msg.routing_key.as_str()), (7, "prio"));
    assert!(msg.expires.is_some(), "expires header is set");
    // Stop sending, let them expire, then start a worker: it discards them unrun.
    h.patch("prio", json!({"spec": {"suspend": true}}));
    eventually(WAIT, "suspend observed", || async {
        h.status("prio")
            .await
            .next_schedule_time
            .is_none()
            .then_some(())
    })
    .await;
    let pending = String::from_utf8_lossy(&h.redis.cli(&["LLEN", key]).stdout)
        .trim()
        .parse::<usize>()
        .expect("llen");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let worker = h.worker("prio");
    eventually(WAIT, "the worker to drain the step key", || async {
        (String::from_utf8_lossy(&h.redis.cli(&["LLEN", key]).stdout).trim() == "0").then_some(())
    })
    .await;
    // Nothing revoked these tasks but their `expires` header: the worker reports them as
    // revoked (SPEC.md: an expired message is discarded as revoked, acked, never run).
    eventually(
        WAIT,
        "the worker to discard the expired messages",
        || async {
            let log = worker.log_text();
            (log.matches("Discarding revoked task: tasks.record").count() >= pending).then_some(())
        },
    )
    .await;
    assert!(h.executed_ids("prio").is_empty(), "an expired message ran");
}

#[tokio::test]
async fn suspend_stops_resume_continues_delete_stops() {
    let h = Harness::new("pt-suspend").await;
    let _worker = h.worker("celery");
    h.apply("s", every("s", "1s"));
    eventually(WAIT, "2 executions", || async {
        (h.executed_ids("s").len() >= 2).then_some(())
    })
    .await;

    h.patch("s", json!({"spec": {"suspend": true}}));
    eventually(WAIT, "Next cleared by suspend", || async {
        h.status("s")
            .await
            .next_schedule_time
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let suspended_at = h.executed_ids("s").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.executed_ids("s").len(),
        suspended_at,
        "ran while suspended"
    );
    let out = ok(kubectl(&["get", "ptask", "s", "-n", &h.ns.name]));
    assert!(out.contains("true"), "Suspend column shows true:\n{out}");

    h.patch("s", json!({"spec": {"suspend": false}}));
    eventually(WAIT, "runs after resume", || async {
        (h.executed_ids("s").len() >= suspended_at + 2).then_some(())
    })
    .await;
    // Slots that fell while suspended were skipped, not caught up in a burst.
    let resumed = h.executed_ids("s").len();
    assert!(
        resumed <= suspended_at + 3,
        "caught up suspended slots: {resumed} vs {suspended_at}"
    );

    h.api
        .delete("s", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(WAIT, "deleted", || async {
        h.api
            .get_opt("s")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_delete = h.executed_ids("s").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.executed_ids("s").len(), after_delete, "ran after delete");
}

#[tokio::test]
async fn sigkill_during_a_run_never_duplicates_and_catches_up_per_policy() {
    let mut h = Harness::new("pt-kill").await;
    let _worker = h.worker("celery");
    let mut all = every("all", "1s");
    all["missedRunPolicy"] = json!("RunAll");
    h.apply("all", all);
    h.apply("once", every("once", "1s"));
    eventually(WAIT, "both running", || async {
        (h.executed_ids("all").len() >= 2 && h.executed_ids("once").len() >= 2).then_some(())
    })
    .await;
    // Kill at varying points of a second, stay down a few slots, come back.
    for (up_ms, down_ms) in [(1300, 3200), (700, 2500), (2100, 3600)] {
        tokio::time::sleep(Duration::from_millis(up_ms)).await;
        h.operator.kill();
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        h.operator.restart();
    }
    // Let it settle and catch up, then stop sending and let the worker drain.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["all", "once"] {
        h.patch(name, json!({"spec": {"suspend": true}}));
    }
    eventually(WAIT, "both suspended", || async {
        (h.status("all").await.next_schedule_time.is_none()
            && h.status("once").await.next_schedule_time.is_none())
        .then_some(())
    })
    .await;
    // A firing already under way when the suspend arrived still lands; wait until the
    // status holds still, then take one snapshot of it.
    let pt = h.settled("all").await;

    // RunAll: every slot from creation to the last one ran exactly once.
    let expected =
        every_second_slot_ids(&pt, last_schedule(&pt.status.clone().unwrap_or_default()));
    let ran = eventually(WAIT, "RunAll executions to cover every slot", || async {
        let ran = h.executed_ids("all");
        let set: BTreeSet<&String> = ran.iter().collect();
        expected.iter().all(|id| set.contains(id)).then_some(ran)
    })
    .await;
    assert_unique(&ran);
    assert_eq!(ran.len(), expected.len(), "RunAll ran exactly the slots");
    // totalRuns is exactly the number of messages pushed, crashes between a push and its
    // status write included (the broker counts them).
    let total = pt.status.as_ref().and_then(|s| s.total_runs);
    assert_eq!(total, Some(ran.len() as i64), "RunAll totalRuns");

    // RunOnce: no duplicates, only slot ids, and downtime collapsed (fewer runs than slots).
    let pt = h.settled("once").await;
    let expected =
        every_second_slot_ids(&pt, last_schedule(&pt.status.clone().unwrap_or_default()));
    let ran = h.executed_ids("once");
    assert_unique(&ran);
    for id in &ran {
        assert!(expected.contains(id), "{id} is not a slot id of once");
    }
    let missing = expected.len() - ran.len();
    assert!(
        (3..expected.len()).contains(&missing),
        "RunOnce collapses each outage into one run: ran {} of {} slots",
        ran.len(),
        expected.len()
    );
    let total = pt.status.as_ref().and_then(|s| s.total_runs);
    assert_eq!(total, Some(ran.len() as i64), "RunOnce totalRuns");
}

#[tokio::test]
async fn at_runs_once_also_when_the_operator_dies_around_the_instant_then_is_completed() {
    let mut h = Harness::new("pt-at").await;
    let _worker = h.worker("celery");
    // Whole seconds a little ahead: one runs undisturbed, one falls just before a SIGKILL,
    // one while the operator is down.
    let t0 = Utc::now().timestamp() + 6;
    let instants: Vec<(&str, DateTime<Utc>)> = [("calm", 0), ("killed", 1), ("down", 2)]
        .into_iter()
        .map(|(name, k)| (name, DateTime::from_timestamp(t0 + k, 0).expect("ts")))
        .collect();
    for (name, at) in &instants {
        let mut spec = every(name, "1s");
        spec["schedule"] = json!({"at": at.to_rfc3339()});
        h.apply(name, spec);
    }
    eventually(WAIT, "all three scheduled", || async {
        let mut next = Vec::new();
        for (name, _) in &instants {
            next.push(h.status(name).await.next_schedule_time);
        }
        next.iter().all(Option::is_some).then_some(())
    })
    .await;
    // Dies right after "killed" is due (its push or its status write cut off), stays down
    // over "down".
    let kill_at = instants[1].1 + chrono::TimeDelta::milliseconds(30);
    tokio::time::sleep((kill_at - Utc::now()).to_std().unwrap_or_default()).await;
    h.operator.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.operator.restart();

    for (name, at) in &instants {
        let pt = eventually(WAIT, "Ready=False Completed", || async {
            let pt = h.get(name).await;
            let done = pt.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Completed")
            });
            done.then_some(pt)
        })
        .await;
        let status = pt.status.clone().unwrap_or_default();
        assert_eq!(status.next_schedule_time, None, "{name}: no next run");
        assert_eq!(last_schedule(&status), *at, "{name}");
        assert_eq!(status.total_runs, Some(1), "{name}");
        let id = celery_operator::celery::task_id_for_slot(&pt.uid().expect("uid"), at)
            .expect("id")
            .to_string();
        eventually(WAIT, "its one execution", || async {
            (h.executed_ids(name) == [id.clone()]).then_some(())
        })
        .await;
    }
    // Nothing more comes: a few seconds later each still ran once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, _) in &instants {
        assert_eq!(h.executed_ids(name).len(), 1, "{name} ran once");
    }
    let table = ok(kubectl(&["get", "ptask", "calm", "-n", &h.ns.name]));
    assert!(
        table.contains("at 20"),
        "the schedule column shows the instant: {table}"
    );
}

/// A longitude on the equator where the next solar noon after `target - 12h` falls in
/// `target`'s second (noon moves 4 minutes per degree west), and that noon.
fn longitude_with_noon_at(target: DateTime<Utc>) -> (f64, DateTime<Utc>) {
    use celery_operator::schedule::{Solar, SolarEvent};
    let noon_at = |longitude: f64| {
        Solar::new(SolarEvent::SolarNoon, 0.0, longitude)
            .expect("valid place")
            .next_after(target - chrono::TimeDelta::hours(12))
            .expect("a noon every day")
    };
    let mut longitude = 0.0;
    for _ in 0..8 {
        let late = (noon_at(longitude) - target).num_milliseconds() as f64 / 1000.0;
        longitude = (longitude + late / 240.0 + 180.0).rem_euclid(360.0) - 180.0;
    }
    (longitude, noon_at(longitude))
}

/// What Celery's own `solar` computes: the next event after `after` (beat's last run).
fn celery_solar_next(
    event: &str,
    latitude: f64,
    longitude: f64,
    after: DateTime<Utc>,
) -> DateTime<Utc> {
    let script = format!(
        "import datetime\nfrom celery import Celery\nfrom celery.schedules import solar\n\
         last = datetime.datetime.fromisoformat('{}')\n\
         s = solar('{event}', {latitude}, {longitude}, app=Celery(), nowfun=lambda: last)\n\
         print((last + s.remaining_estimate(last)).isoformat())",
        after.to_rfc3339()
    );
    let out = ok(
        std::process::Command::new(celery_operator_e2e::celery::venv_bin("python"))
            .args(["-c", &script])
            .output()
            .expect("python"),
    );
    DateTime::parse_from_rfc3339(out.trim())
        .expect("an instant")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn solar_noon_fires_in_the_second_celery_computes_for_the_place() {
    let h = Harness::new("pt-solar").await;
    let _worker = h.worker("celery");
    let target = Utc::now() + chrono::TimeDelta::seconds(10);
    let (longitude, noon) = longitude_with_noon_at(target);
    let celery = celery_solar_next(
        "solar_noon",
        0.0,
        longitude,
        target - chrono::TimeDelta::hours(12),
    );
    let off = (noon - celery).num_milliseconds().abs();
    assert!(off < 1_000, "ours {noon}, Celery's {celery}");
    let mut spec = every("noon", "1s");
    spec["schedule"] =
        json!({"solar": {"event": "solar_noon", "latitude": 0, "longitude": longitude}});
    h.apply("noon", spec);
    let scheduled = eventually(WAIT, "the noon scheduled", || async {
        h.status("noon").await.next_schedule_time
    })
    .await;
    assert_eq!(
        scheduled.0.as_second(),
        noon.timestamp(),
        "nextScheduleTime"
    );
    let pt = eventually(WAIT, "the noon run", || async {
        let pt = h.get("noon").await;
        (pt.status.as_ref().and_then(|s| s.total_runs) == Some(1)).then_some(pt)
    })
    .await;
    let status = pt.status.clone().unwrap_or_default();
    assert_eq!(last_schedule(&status), noon);
    let next = status.next_schedule_time.expect("tomorrow's noon");
    let day = next.0.as_second() - noon.timestamp();
    assert!(
        (86_300..86_500).contains(&day),
        "the next noon is a day later: {day} s"
    );
    let id = celery_operator::celery::task_id_for_slot(&pt.uid().expect("uid"), &noon)
        .expect("id")
        .to_string();
    eventually(WAIT, "its execution", || async {
        (h.executed_ids("noon") == [id.clone()]).then_some(())
    })
    .await;
    let table = ok(kubectl(&["get", "ptask", "noon", "-n", &h.ns.name]));
    assert!(table.contains("solar solar_noon 0,"), "{table}");
    // Bad places are refused at apply, naming the field.
    let bad = kubectl_with_input(
        &["apply", "-n", &h.ns.name, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
                "metadata": {"name": "bad-solar"},
                "spec": {"task": "tasks.record",
                         "schedule": {"solar": {"event": "sundown", "latitude": 91, "longitude": 0}},
                         "broker": {"secretKeyRef": {"name": "broker", "key": "url"}}}
            })
            .to_string(),
        ),
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("spec.schedule.solar.event: Unsupported value: \"sundown\"")
            && stderr.contains("spec.schedule.solar.latitude: Invalid value: 91"),
        "{stderr}"
    );
}

/// A spec that pushes `task(args)` on `every`, its outcomes read from the Secret `results`.
fn with_results(task: &str, args: Value, every: &str) -> Value {
    json!({
        "task": task,
        "args": args,
        "schedule": {"every": every},
        "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
        "resultBackend": {"secretKeyRef": {"name": "results", "key": "url"}},
    })
}

#[tokio::test]
async fn how_each_run_ended_is_in_status_the_result_column_events_and_metrics() {
    let h = Harness::new("pt-outcome").await;
    // Results in db 1 of the same server, as a worker is usually configured.
    results_secret(&h).await;
    let _worker = CeleryWorker::with_result_backend(&h.redis.url(0), &h.redis.url(1), "celery");
    let mut ok_spec = with_results("tasks.add", json!([2, 3]), "2s");
    ok_spec["historyLimit"] = json!(3);
    h.apply("ok", ok_spec);
    // Refused twice, then accepted, as the mail task: hourly, run now.
    h.apply("flaky", with_results("tasks.flaky", json!([2]), "1h"));
    // Without a result backend nothing is read, and the condition says so.
    h.apply("blind", every("blind", "1h"));

    let succeeded = eventually(
        Duration::from_secs(60),
        "3 succeeded runs of ok",
        || async {
            let s = h.status("ok").await;
            (s.recent_runs.len() == 3
                && s.recent_runs
                    .iter()
                    .skip(1)
                    .all(|r| r.state == TaskState::Success))
            .then_some(s)
        },
    )
    .await;
    let newest = succeeded
        .recent_runs
        .iter()
        .find(|r| r.state == TaskState::Success)
        .expect("a success");
    assert!(
        newest.finish_time.is_some() && newest.duration.is_some(),
        "{newest:?}"
    );
    let times: Vec<_> = succeeded
        .recent_runs
        .iter()
        .map(|r| r.schedule_time.0)
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first: {times:?}"
    );
    assert_eq!(
        h.condition("ok", "LastRunSucceeded").await,
        Some(("True".into(), "Succeeded".into()))
    );
    // The ids in status are the runs the worker executed (read from the result keys).
    let task_ids: Vec<String> = succeeded
        .recent_runs
        .iter()
        .map(|r| r.task_id.clone())
        .collect();
    assert_unique(&task_ids);
    let table = ok_kubectl_get(&h.ns.name);
    assert!(
        table.lines().next().unwrap_or_default().contains("RESULT"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("ok "))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("SUCCESS") || row.contains("PENDING"), "{row}");
    eventually(
        WAIT,
        "the column to show a success with its duration",
        || async {
            let table = ok_kubectl_get(&h.ns.name);
            table
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains("SUCCESS ") && l.contains('s'))
                .then_some(())
        },
    )
    .await;

    h.apply("boom", with_results("tasks.fail", json!(["x=1"]), "3s"));
    let boom = eventually(WAIT, "a failed run of boom", || async {
        let s = h.status("boom").await;
        s.recent_runs
            .iter()
            .any(|r| r.state == TaskState::Failure)
            .then_some(s)
    })
    .await;
    let failed = boom
        .recent_runs
        .iter()
        .find(|r| r.state == TaskState::Failure)
        .expect("failure");
    assert_eq!(
        failed.exception.as_deref(),
        Some("ValueError: bad input 'x=1'")
    );
    assert_eq!(
        h.condition("boom", "LastRunSucceeded").await,
        Some(("False".into(), "Failed".into()))
    );
    eventually(WAIT, "FAILURE ValueError in the column", || async {
        ok_kubectl_get(&h.ns.name)
            .lines()
            .any(|l| l.starts_with("boom ") && l.contains("FAILURE ValueError"))
            .then_some(())
    })
    .await;
    // One Warning per failed run, naming it (each its own event, not one series).
    for failed in boom
        .recent_runs
        .iter()
        .filter(|r| r.state == TaskState::Failure)
    {
        let events = eventually(WAIT, "the RunFailed event of each failed run", || async {
            let e: Vec<Event> = h
                .events("RunFailed")
                .await
                .into_iter()
                .filter(|e| {
                    e.message
                        .as_deref()
                        .unwrap_or_default()
                        .contains(&failed.task_id)
                })
                .collect();
            (!e.is_empty()).then_some(e)
        })
        .await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        assert_eq!(events[0].count.unwrap_or(1), 1, "recorded once");
    }

    // Every status written from here on, as a `kubectl get -w` user sees it: the RETRY lasts
    // about a second, which polling misses when the test is descheduled under load.
    let mut flaky_runs = h.watch_last_runs("flaky").await;
    let flaky_id = run_now_task_id(&h.get("flaky").await.uid().expect("uid"), "1").to_string();
    ok(kubectl(&[
        "annotate",
        "-n",
        &h.ns.name,
        "periodictask",
        "flaky",
        "celeryoperator.io/run-now=1",
    ]));
    // RETRY is seen while the run waits for its next attempt, then its final state.
    let mut states = Vec::new();
    let run = tokio::time::timeout(WAIT, async {
        while let Some(run) = flaky_runs.recv().await {
            if run.task_id != flaky_id {
                continue;
            }
            states.push((run.state, run.exception.clone()));
            if run.state == TaskState::Success {
                return Some(run);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("flaky never succeeded; its runs went {states:?}"));
    assert!(
        states.contains(&(
            TaskState::Retry,
            Some("ConnectionError: smtp refused".into())
        )),
        "RETRY with its exception before the success: {states:?}"
    );
    assert_eq!(run.retries, Some(2), "{run:?}");
    assert_eq!(
        h.status("flaky")
            .await
            .last_result
            .as_deref()
            .map(|r| r.starts_with("SUCCESS ")),
        Some(true)
    );

    assert_eq!(
        h.condition("blind", "LastRunSucceeded").await,
        Some(("Unknown".into(), "NoResultBackend".into()))
    );
    assert!(h.status("blind").await.recent_runs.is_empty());
    let metric = |state: &str| {
        h.operator
            .metric(&format!(
                "celery_operator_periodic_task_run_outcomes_total{{state=\"{state}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert!(
        metric("SUCCESS") >= 4.0 && metric("FAILURE") >= 1.0,
        "{} {}",
        metric("SUCCESS"),
        metric("FAILURE")
    );
    h.assert_no_secret_leaked();
}

/// A Secret `results` with the URL of db 1 of the harness's Redis.
async fn results_secret(h: &Harness) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "results"},
        "stringData": {"url": h.redis.url(1)},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(h.client.clone(), &h.ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

#[tokio::test]
async fn forbid_skips_slots_while_the_previous_run_works_and_resumes_after() {
    let h = Harness::new("pt-forbid").await;
    results_secret(&h).await;
    let _worker = CeleryWorker::with_result_backend(&h.redis.url(0), &h.redis.url(1), "celery");
    // Works 4 s, every 2 s: without the policy runs would overlap.
    let mut spec = with_results("tasks.work", json!([4, "forbid"]), "2s");
    spec["concurrencyPolicy"] = json!("Forbid");
    spec["historyLimit"] = json!(10);
    h.apply("forbid", spec);
    let executed = || {
        h.executed()
            .into_iter()
            .filter(|e| e["args"][1] == "forbid")
            .collect::<Vec<Value>>()
    };
    eventually(Duration::from_secs(60), "three runs of forbid", || async {
        (executed().len() >= 3).then_some(())
    })
    .await;
    let runs = executed();
    let ids: Vec<String> = runs
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_unique(&ids);
    // Each run recorded when it ended, 4 s after it began: one never began before the
    // previous ended.
    let ends: Vec<f64> = runs
        .iter()
        .map(|e| e["time"].as_f64().expect("time"))
        .collect();
    for w in ends.windows(2) {
        assert!(w[1] - w[0] >= 3.9, "overlapping runs: {ends:?}");
    }
    let status = h.status("forbid").await;
    let skipped = status.skipped_runs.unwrap_or(0);
    assert!(skipped >= 2, "slots skipped while it ran: {status:?}");
    let skipped_run = status
        .recent_runs
        .iter()
        .find(|r| r.state == TaskState::Skipped)
        .expect("a SKIPPED run in recentRuns");
    let reason = skipped_run.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("is STARTED (concurrencyPolicy Forbid)"),
        "{reason}"
    );
    assert!(
        !ids.contains(&skipped_run.task_id),
        "a skipped slot never ran"
    );
    assert!(!h.events("RunSkipped").await.is_empty());
    // Refused at apply without a result backend to tell.
    let mut blind = every("blind", "1m");
    blind["concurrencyPolicy"] = json!("Forbid");
    let manifest = json!({
        "apiVersion": "celeryoperator.io/v1alpha1",
        "kind": "PeriodicTask",
        "metadata": {"name": "blind"},
        "spec": blind,
    });
    let out = kubectl_with_input(
        &["apply", "-n", &h.ns.name, "-f", "-"],
        Some(&manifest.to_string()),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("need resultBackend"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn replace_revokes_the_waiting_previous_run_and_a_real_worker_discards_it() {
    let h = Harness::new("pt-replace").await;
    results_secret(&h).await;
    // One worker thread, busy for 10 s with a blocker: runs of `replace` wait behind it.
    let worker =
        CeleryWorker::single_with_result_backend(&h.redis.url(0), &h.redis.url(1), "celery");
    let blocker = with_results("tasks.sleep", json!([10]), "1h");
    h.apply("blocker", blocker);
    eventually(WAIT, "the worker up", || async {
        worker.log_text().contains("ready.").then_some(())
    })
    .await;
    ok(kubectl(&[
        "annotate",
        "-n",
        &h.ns.name,
        "periodictask",
        "blocker",
        "celeryoperator.io/run-now=1",
    ]));
    eventually(WAIT, "the blocker running", || async {
        h.status("blocker")
            .await
            .last_run
            .filter(|r| r.state == TaskState::Started)
    })
    .await;
    let mut spec = every("replace", "2s");
    spec["resultBackend"] = json!({"secretKeyRef": {"name": "results", "key": "url"}});
    spec["concurrencyPolicy"] = json!("Replace");
    spec["historyLimit"] = json!(10);
    h.apply("replace", spec);
    // While the blocker runs, each slot revokes the run still waiting before it.
    eventually(WAIT, "two revoked runs", || async {
        let s = h.status("replace").await;
        (s.recent_runs
            .iter()
            .filter(|r| r.state == TaskState::Revoked)
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    // After the blocker, the newest run executes; the revoked ones were discarded unrun.
    eventually(
        Duration::from_secs(40),
        "a run of replace executed",
        || async { (!h.executed_ids("replace").is_empty()).then_some(()) },
    )
    .await;
    h.patch("replace", json!({"spec": {"suspend": true}}));
    let ran = h.executed_ids("replace");
    // The one message the worker had already taken when its revoke came runs anyway
    // (the threads pool holds it) and its status follows what the worker wrote last.
    let pt = eventually(WAIT, "every run's final state", || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pt = h.settled("replace").await;
        let runs = &pt.status.as_ref()?.recent_runs;
        runs.iter()
            .all(|r| {
                r.state
                    == if ran.contains(&r.task_id) {
                        TaskState::Success
                    } else {
                        TaskState::Revoked
                    }
            })
            .then_some(pt)
    })
    .await;
    let ran = h.executed_ids("replace");
    assert_unique(&ran);
    let revoked: Vec<String> = pt
        .status
        .unwrap_or_default()
        .recent_runs
        .iter()
        .filter(|r| r.state == TaskState::Revoked)
        .map(|r| r.task_id.clone())
        .collect();
    assert!(!revoked.is_empty());
    let log = worker.log_text();
    for id in &revoked {
        assert!(!ran.contains(id), "revoked run {id} was executed: {ran:?}");
        assert!(
            log.contains(&format!("Discarding revoked task: tasks.record[{id}]")),
            "the worker discarded {id}:\n{log}"
        );
    }
    let events = h.events("RunReplaced").await;
    assert!(!events.is_empty());
    let note = events[0].message.as_deref().unwrap_or_default();
    assert!(note.contains("worker(s) received the revoke"), "{note}");
}

fn ok_kubectl_get(ns: &str) -> String {
    ok(kubectl(&["get", "ptask", "-n", ns]))
}

#[tokio::test]
async fn a_redis_outage_shows_broker_unreachable_and_recovers() {
    let mut h = Harness::new("pt-outage").await;
    h.apply("o", every("o", "1s"));
    eventually(WAIT, "BrokerReachable=True", || async {
        (h.condition("o", "BrokerReachable")
            .await
            .map(|c| c.0)
            .as_deref()
            == Some("True"))
        .then_some(())
    })
    .await;
    h.redis.stop();
    eventually(WAIT, "BrokerReachable=False", || async {
        (h.condition("o", "BrokerReachable").await == Some(("False".into(), "Unreachable".into())))
            .then_some(())
    })
    .await;
    assert_eq!(
        h.condition("o", "Ready").await.map(|c| c.0).as_deref(),
        Some("False")
    );
    eventually(WAIT, "a BrokerUnreachable warning event", || async {
        (!h.events("BrokerUnreachable").await.is_empty()).then_some(())
    })
    .await;
    h.redis.restart();
    let runs = h.runs("o").await;
    eventually(WAIT, "recovery", || async {
        (h.condition("o", "BrokerReachable")
            .await
            .map(|c| c.0)
            .as_deref()
            == Some("True")
            && h.runs("o").await >= runs + 2)
            .then_some(())
    })
    .await;
    h.assert_no_secret_leaked();
}

/// The broker's return is noticed at once, not at the end of each task's push backoff
/// (1 s doubling to 30 s): under Skip every second of that delay is a lost slot. The outage
/// lasts E2E_OUTAGE_SECONDS (default 50); the delays are printed for the record.
#[tokio::test]
async fn pushing_and_broker_reachable_come_back_within_two_seconds_of_the_broker() {
    let outage: u64 = std::env::var("E2E_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut h = Harness::new("pt-return").await;
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for name in &names {
        let mut spec = every(name, "1s");
        spec["missedRunPolicy"] = json!("Skip");
        h.apply(name, spec);
    }
    let all_reachable = |h: &Harness| {
        let api = h.api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            (list.items.len() == 20
                && list.items.iter().all(|pt| {
                    pt.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "BrokerReachable" && c.status == "True")
                    })
                }))
            .then_some(())
        }
    };
    eventually(WAIT, "every task BrokerReachable=True", || {
        all_reachable(&h)
    })
    .await;
    h.redis.stop();
    tokio::time::sleep(Duration::from_secs(outage)).await;
    h.redis.restart();
    let back = tokio::time::Instant::now();
    let (mut pushed, mut reachable) = (None, None);
    while (pushed.is_none() || reachable.is_none()) && back.elapsed() < WAIT {
        if pushed.is_none()
            && String::from_utf8_lossy(&h.redis.cli(&["LLEN", "celery"]).stdout).trim() != "0"
        {
            pushed = Some(back.elapsed());
        }
        if reachable.is_none() && all_reachable(&h).await.is_some() {
            reachable = Some(back.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("after a {outage}s outage: first push {pushed:?}, all BrokerReachable {reachable:?}");
    let limit = Duration::from_secs(2);
    assert!(pushed.is_some_and(|d| d <= limit), "first push {pushed:?}");
    assert!(
        reachable.is_some_and(|d| d <= limit),
        "BrokerReachable {reachable:?}"
    );
}

#[tokio::test]
async fn an_invalid_schedule_value_is_reported_with_the_parser_message() {
    let h = Harness::new("pt-invalid").await;
    h.apply(
        "bad",
        json!({
            "task": "tasks.record",
            "schedule": {"crontab": {"minute": "0", "hour": "25"}},
            "broker": {"secretKeyRef": {"name": "broker", "key": "url"}},
        }),
    );
    let msg = eventually(WAIT, "ScheduleValid=False", || async {
        let s = h.status("bad").await;
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "ScheduleValid" && c.status == "False")
            .map(|c| c.message)
    })
    .await;
    assert!(msg.contains("hour") && msg.contains("25"), "{msg}");
    // CEL refuses two schedule sources at admission.
    let out = kubectl_with_input(
        &["apply", "-n", &h.ns.name, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
                "metadata": {"name": "two"},
                "spec": {"task": "tasks.record", "schedule": {"every": "1s", "cron": "@hourly"},
                         "broker": {"secretKeyRef": {"name": "broker", "key": "url"}}}
            })
            .to_string(),
        ),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("exactly one of every, crontab, cron, at or solar")
    );
    // An interval Celery would take as a float is refused at admission, naming the field.
    let out = kubectl_with_input(
        &["apply", "-n", &h.ns.name, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
                "metadata": {"name": "fraction"},
                "spec": {"task": "tasks.record", "schedule": {"every": "1.5s"},
                         "broker": {"secretKeyRef": {"name": "broker", "key": "url"}}}
            })
            .to_string(),
        ),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.schedule.every"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What CEL can tell without the operator is refused at apply, naming the field.
    let broker = json!({"secretKeyRef": {"name": "broker", "key": "url"}});
    for (i, (spec, field, message)) in [
        (
            json!({"schedule": {"every": "0s"}}),
            "spec.schedule.every",
            "every must be at least 1s",
        ),
        (
            json!({"schedule": {"every": "1m"}, "expires": "0s"}),
            "spec.expires",
            "expires must be at least 1s",
        ),
        (
            json!({"schedule": {"cron": "@every 5s"}}),
            "spec.schedule.cron",
            "@every is not a CronJob macro",
        ),
        (
            json!({"schedule": {"every": "1m"},
                   "startTime": "2030-01-02T00:00:00Z", "endTime": "2030-01-01T00:00:00Z"}),
            "spec.endTime",
            "startTime must be before endTime",
        ),
        (
            json!({"schedule": {"every": "1m"}, "headers": {"big": "x".repeat(2048)}}),
            "spec.headers.big",
            "1024",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut spec = spec;
        spec["task"] = json!("tasks.record");
        spec["broker"] = broker.clone();
        let manifest = json!({
            "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
            "metadata": {"name": format!("cel-{i}")}, "spec": spec,
        });
        let out = kubectl_with_input(
            &["apply", "-n", &h.ns.name, "-f", "-"],
            Some(&manifest.to_string()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field}: accepted");
        assert!(
            stderr.contains(field) && stderr.contains(message),
            "{field}: {stderr}"
        );
    }
}

#[tokio::test]
async fn two_operators_at_once_push_each_slot_once() {
    // No leader election: both engines fire every slot; the dedupe key lets one push win.
    let h = Harness::new("pt-two").await;
    let _second = Operator::start(&h.ns.name);
    let _worker = h.worker("celery");
    let mut spec = every("two", "1s");
    spec["missedRunPolicy"] = json!("RunAll");
    h.apply("two", spec);
    eventually(WAIT, "6 executions", || async {
        (h.executed_ids("two").len() >= 6).then_some(())
    })
    .await;
    h.patch("two", json!({"spec": {"suspend": true}}));
    eventually(WAIT, "suspended", || async {
        h.status("two")
            .await
            .next_schedule_time
            .is_none()
            .then_some(())
    })
    .await;
    let pt = h.settled("two").await;
    let expected =
        every_second_slot_ids(&pt, last_schedule(&pt.status.clone().unwrap_or_default()));
    let ran = h.executed_ids("two");
    assert_unique(&ran);
    for id in &ran {
        assert!(expected.contains(id), "{id} is not a slot id");
    }
    assert!(
        ran.len() + 1 >= expected.len(),
        "ran {} of {} slots",
        ran.len(),
        expected.len()
    );
}

#[tokio::test]
async fn leader_failover_takes_over_within_the_lease_and_never_runs_a_task_id_twice() {
    let mut h = Harness::new("pt-leader").await;
    h.operator.kill();
    let ns = h.ns.name.clone();
    let lease = [
        "--leader-election",
        "--lease-name",
        "pt-leader",
        "--lease-namespace",
        ns.as_str(),
        "--lease-duration-seconds",
        "4",
    ];
    let mut replicas = [
        Operator::start_with(&ns, &lease, &[("POD_NAME", "replica-0")]),
        Operator::start_with(&ns, &lease, &[("POD_NAME", "replica-1")]),
    ];
    let _worker = h.worker("celery");
    let mut spec = every("ha", "1s");
    spec["missedRunPolicy"] = json!("RunAll");
    h.apply("ha", spec);
    let holder = || {
        ok(kubectl(&[
            "get",
            "lease",
            "pt-leader",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]))
    };
    eventually(WAIT, "3 executions under the first leader", || async {
        (h.executed_ids("ha").len() >= 3).then_some(())
    })
    .await;
    for _ in 0..3 {
        let leader = holder();
        let index = if leader == "replica-0" { 0 } else { 1 };
        replicas[index].kill();
        let killed = std::time::Instant::now();
        let before = h.executed_ids("ha").len();
        eventually(WAIT, "the standby to take the Lease", || async {
            let now = holder();
            (!now.is_empty() && now != leader).then_some(())
        })
        .await;
        assert!(
            killed.elapsed() < Duration::from_secs(4 + 3),
            "took over after {:?}",
            killed.elapsed()
        );
        eventually(WAIT, "runs to continue under the new leader", || async {
            (h.executed_ids("ha").len() >= before + 2).then_some(())
        })
        .await;
        // The killed replica comes back as the standby.
        replicas[index].restart();
    }
    h.patch("ha", json!({"spec": {"suspend": true}}));
    let pt = h.settled("ha").await;
    let expected =
        every_second_slot_ids(&pt, last_schedule(&pt.status.clone().unwrap_or_default()));
    let ran = h.executed_ids("ha");
    assert_unique(&ran);
    for id in &ran {
        assert!(expected.contains(id), "{id} is not a slot id");
    }
}

#[tokio::test]
async fn kubectl_explain_describes_the_run_outcome_and_schedule_fields() {
    // (field path, words its description must hold)
    let fields = [
        ("periodictask.spec.resultBackend", "outcomes"),
        ("periodictask.spec.historyLimit", "recentRuns"),
        ("periodictask.spec.concurrencyPolicy", "skip the slot"),
        ("periodictask.spec.missedRunPolicy", "RunAll"),
        ("periodictask.spec.schedule.at", "clocked"),
        ("periodictask.spec.schedule.solar", "Celery"),
        (
            "periodictask.spec.schedule.solar.event",
            "dusk_astronomical",
        ),
        ("periodictask.spec.schedule.solar.latitude", "north"),
        ("periodictask.status.lastRun", "newest run"),
        ("periodictask.status.recentRuns", "newest first"),
        ("periodictask.status.lastResult", "FAILURE ValueError"),
        ("periodictask.status.skippedRuns", "concurrencyPolicy"),
    ];
    for (path, words) in fields {
        let out = ok(kubectl(&["explain", path]));
        let description = out
            .split_once("DESCRIPTION:")
            .map(|(_, d)| d.trim())
            .unwrap_or_default();
        assert!(
            description.contains(words),
            "`kubectl explain {path}` should describe the field ({words}):\n{out}"
        );
    }
}

#[tokio::test]
async fn a_new_task_gets_its_first_status_ahead_of_routine_rewrites_which_still_move() {
    // One status write a second for 20 tasks firing every second: routine bookkeeping alone
    // would take 20 s to go round once.
    let h = Harness::with_operator_args("pt-prio", &["--status-writes-per-second", "1"]).await;
    let busy: Vec<String> = (0..20).map(|i| format!("busy-{i}")).collect();
    let manifests: String = busy
        .iter()
        .map(|name| {
            json!({
                "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
                "metadata": {"name": name}, "spec": every(name, "1s"),
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    ok(kubectl_with_input(
        &["apply", "-n", &h.ns.name, "-f", "-"],
        Some(&manifests),
    ));
    let ready = |pt: &PeriodicTask| {
        pt.status.as_ref().is_some_and(|s| {
            s.next_schedule_time.is_some()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    let list = || async {
        h.api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
    };
    eventually(Duration::from_secs(90), "every busy task Ready", || async {
        let items = list().await;
        (items.len() == busy.len() && items.iter().all(ready)).then_some(())
    })
    .await;
    let runs_of = |items: Vec<PeriodicTask>| -> std::collections::BTreeMap<String, i64> {
        items
            .into_iter()
            .map(|pt| {
                (
                    pt.name_any(),
                    pt.status.and_then(|s| s.total_runs).unwrap_or(0),
                )
            })
            .collect()
    };
    let before = runs_of(list().await);
    // A first status (and the condition change once the broker answers) goes ahead of all
    // of that: far sooner than the 20 s a turn of routine writes takes.
    h.apply("new", every("new", "1h"));
    eventually(Duration::from_secs(8), "the new task Ready", || async {
        ready(&h.get("new").await).then_some(())
    })
    .await;
    // Routine bookkeeping is coalesced, not starved: within a turn and its coalescing every
    // busy task's run count moved.
    eventually(
        Duration::from_secs(40),
        "every busy task's totalRuns moved",
        || async {
            let now = runs_of(list().await);
            busy.iter()
                .all(|name| now.get(name) > before.get(name))
                .then_some(())
        },
    )
    .await;
}

/// A changed broker Secret (a new password, another host) reaches the push path in
/// seconds, not at the next resync a minute later, and the old broker's connection closes.
#[tokio::test]
async fn a_changed_broker_secret_is_used_within_seconds_and_the_old_connection_closes() {
    let h = Harness::new("pt-secret").await;
    h.apply("s", every("s", "1s"));
    eventually(WAIT, "pushes to the first broker", || async {
        (h.runs("s").await >= 2).then_some(())
    })
    .await;
    let moved = RedisServer::start(None, Some("an0ther-pw"), &["--save", ""]);
    let secret = json!({"stringData": {"url": moved.url(0)}});
    ok(kubectl(&[
        "patch",
        "secret",
        "broker",
        "-n",
        &h.ns.name,
        "-p",
        &secret.to_string(),
    ]));
    let changed = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "a push on the new broker",
        || async {
            let queued = String::from_utf8_lossy(&moved.cli(&["LLEN", "celery"]).stdout)
                .trim()
                .parse::<i64>()
                .unwrap_or(0);
            (queued > 0).then_some(())
        },
    )
    .await;
    eprintln!(
        "pushing to the new broker {:?} after the change",
        changed.elapsed()
    );
    eventually(WAIT, "the old broker's connections closed", || async {
        let list = h.redis.cli(&["CLIENT", "LIST"]);
        let others = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| !l.contains("cmd=client"))
            .count();
        (others == 0).then_some(())
    })
    .await;
    h.assert_no_secret_leaked();
}

/// Sockets the process `pid` holds open now (API server and Redis connections, listeners).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// An operator restarting with hundreds of tasks whose broker Secret is missing reconciles
/// them all at once: each task still gets its own BrokerNotFound event and Ready False, but
/// the shared Secret is read once per burst and events queue, so the API server sees a
/// bounded number of connections, not two per task.
#[tokio::test]
async fn a_burst_of_reconciles_keeps_api_connections_bounded_and_every_task_told() {
    const TASKS: usize = 400;
    let mut h = Harness::new("pt-burst").await;
    let manifests: String = (0..TASKS)
        .map(|i| {
            let mut spec = every(&format!("t{i}"), "1h");
            spec["broker"] = json!({"secretKeyRef": {"name": "nosuch", "key": "url"}});
            json!({
                "apiVersion": "celeryoperator.io/v1alpha1", "kind": "PeriodicTask",
                "metadata": {"name": format!("t{i}")}, "spec": spec,
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    ok(kubectl_with_input(
        &["apply", "-n", &h.ns.name, "-f", "-"],
        Some(&manifests),
    ));
    let told = || async {
        let mut names: Vec<String> = h
            .events("BrokerNotFound")
            .await
            .into_iter()
            .filter_map(|e| e.involved_object.name)
            .collect();
        names.sort();
        names.dedup();
        names.len()
    };
    eventually(
        Duration::from_secs(60),
        "a BrokerNotFound event per task",
        || async { (told().await == TASKS).then_some(()) },
    )
    .await;

    // A restart sees every task at once in its first list.
    h.operator.restart();
    let pid = h.operator.pid();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(open_sockets(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    eventually(
        Duration::from_secs(60),
        "the restarted operator's reconciles of every task",
        || async {
            let done = h
                .operator
                .metric("celery_operator_reconciles_total{kind=\"PeriodicTask\"}")
                .unwrap_or(0.0);
            (done >= TASKS as f64).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    // Watches, the status writer's writes in flight, the event queue's posts and a read of
    // the Secret: tens, whatever the number of tasks.
    assert!(
        peak <= 80,
        "the operator held {peak} sockets at once reconciling {TASKS} tasks"
    );
    let not_ready = h
        .api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|pt| {
            pt.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Ready" && c.status == "False" && c.reason == "BrokerNotFound"
                })
            })
        })
        .count();
    assert_eq!(not_ready, TASKS, "every task says its broker is not found");
}
