//! `celery-operator import` on a real Django + Celery project (e2e/app/beatproj): every
//! beat_schedule entry and django-celery-beat row either becomes a PeriodicTask that the API
//! server accepts and that fires exactly when Celery's own schedule objects say, or is
//! reported by name with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use celery_operator::api::PeriodicTask;
use celery_operator_e2e::celery::{app_dir, venv_bin};
use celery_operator_e2e::operator::binary;
use celery_operator_e2e::{TestNamespace, apply_yaml, client, ok};
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Not on any slot of the test schedules, so "strictly after" means the same on both sides.
const AFTER: &str = "2030-01-06T23:07:11+00:00";
const FIRES: usize = 20;

/// The project's environment: the app importable, Django settings, a fresh SQLite database.
fn project_env(db: &std::path::Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("PYTHONPATH".into(), app_dir().display().to_string()),
        ("DJANGO_SETTINGS_MODULE".into(), "beatproj.settings".into()),
        ("BEAT_DB".into(), db.display().to_string()),
    ])
}

fn python_module(module: &str, args: &[&str], env: &BTreeMap<String, String>) -> String {
    ok(Command::new(venv_bin("python"))
        .args(["-m", module])
        .args(args)
        .current_dir(app_dir())
        .envs(env)
        .output()
        .expect("python from the venv"))
}

fn import(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    Command::new(binary())
        .args([
            "import",
            "-A",
            "beatproj",
            "--django-celery-beat",
            "--python",
        ])
        .arg(venv_bin("python"))
        .args(args)
        .current_dir(app_dir())
        .envs(env)
        .output()
        .expect("run celery-operator import")
}

fn instants(lines: impl IntoIterator<Item = String>) -> Vec<DateTime<Utc>> {
    lines
        .into_iter()
        .map(|l| {
            DateTime::parse_from_rfc3339(l.trim())
                .unwrap_or_else(|e| panic!("{l:?}: {e}"))
                .with_timezone(&Utc)
        })
        .collect()
}

#[tokio::test]
async fn a_beat_schedule_moves_over_with_the_same_fire_times_and_every_refusal_named() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "beat-import").await;
    let dir = std::env::temp_dir().join(format!("beat-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let env = project_env(&dir.join("beat.sqlite3"));
    python_module("beatproj.seed", &[], &env);

    let out = import(&["--redis-cache", "broker", "-n", &ns.name], &env);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // Some entries cannot be imported: the exit status says so, the manifests still print.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    let tasks: Vec<PeriodicTask> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| PeriodicTask::deserialize(d).expect("a PeriodicTask"))
        .collect();
    let original = |pt: &PeriodicTask| {
        pt.metadata.annotations.as_ref().expect("annotations")["celeryoperator.io/beat-entry"]
            .clone()
    };
    let imported: BTreeSet<String> = tasks.iter().map(original).collect();
    let expected: BTreeSet<String> = [
        "add every 10 seconds",
        "hourly cache refresh",
        "every 90 minutes",
        "three-hourly and office hours",
        "weekday mornings",
        "first of the month",
        "first monday of each quarter",
        "noon and half past",
        "sunday nights",
        "saturday night ping",
        "half-minute add",
        "db every five minutes",
        "db new york morning",
        "db fortnightly",
        "db every two days, disabled",
        "db clocked",
        "at sunset",
        "tromso dusk",
        "db sydney sunrise",
    ]
    .map(String::from)
    .into();
    // Enabled rows only by default: the disabled one comes with --include-disabled.
    let enabled: BTreeSet<String> = expected
        .iter()
        .filter(|n| !n.contains("disabled"))
        .cloned()
        .collect();
    assert_eq!(imported, enabled, "{stderr}");
    for (entry, reason) in [
        ("twice a second", "every 0.5s is shorter than 1s"),
        ("object argument", "args: [<object object at"),
        ("db one off", "one_off: a PeriodicTask has no one-off mode"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("entry {entry:?}")) && l.contains(reason)),
            "{entry}: {reason} not reported in\n{stderr}"
        );
    }

    // What the import prints is what the API server takes, CEL rules included.
    ok(apply_yaml(&ns.name, &yaml));

    // Options and rows kept their meaning.
    let by_name: BTreeMap<String, &PeriodicTask> =
        tasks.iter().map(|pt| (original(pt), pt)).collect();
    let refresh = &by_name["hourly cache refresh"].spec;
    assert_eq!(
        (refresh.queue.as_deref(), refresh.expires.as_deref()),
        (Some("cache"), Some("5m"))
    );
    let row = &by_name["db every five minutes"].spec;
    assert_eq!(
        (row.queue.as_deref(), row.priority, row.expires.as_deref()),
        (Some("db"), Some(3), Some("1m"))
    );
    assert_eq!(row.headers["h"], "v");
    assert_eq!(
        by_name["db new york morning"].spec.time_zone.as_deref(),
        Some("America/New_York")
    );
    assert!(by_name["db fortnightly"].spec.end_time.is_some());
    assert_eq!(
        by_name["sunday nights"].spec.queue.as_deref(),
        Some("reports")
    );

    // The next fires of every imported task equal Celery's own, entry by entry.
    let celery: BTreeMap<String, Vec<String>> = serde_json::from_str(&python_module(
        "beatproj.fires",
        &[AFTER, &FIRES.to_string()],
        &env,
    ))
    .expect("fires JSON");
    for pt in &tasks {
        let name = original(pt);
        let file = dir.join(format!(
            "{}.yaml",
            pt.metadata.name.as_deref().expect("name")
        ));
        std::fs::write(&file, serde_yaml::to_string(pt).expect("yaml")).expect("write");
        let ours = ok(Command::new(binary())
            .args([
                "schedule",
                "next",
                "-n",
                &FIRES.to_string(),
                "--after",
                AFTER,
            ])
            .args(["--start", AFTER, "-f"])
            .arg(&file)
            .output()
            .expect("schedule next"));
        let theirs = celery
            .get(&name)
            .unwrap_or_else(|| panic!("Celery computed no fires for {name}"));
        let (ours, theirs) = (
            instants(ours.lines().map(String::from)),
            instants(theirs.iter().cloned()),
        );
        if pt.spec.schedule.solar.is_some() {
            // Celery's are PyEphem's instants (within 0.1 s of the event, microseconds);
            // ours are the converged event's whole second: the same fire within 1.5 s.
            assert_eq!(ours.len(), theirs.len(), "{name}");
            for (o, t) in ours.iter().zip(&theirs) {
                let off = (*o - *t).num_milliseconds().abs();
                assert!(off < 1_500, "{name}: {o} is {off} ms from Celery's {t}");
            }
        } else {
            assert_eq!(ours, theirs, "{name}");
        }
    }

    // --check prints no manifests and fails while something cannot be imported;
    // --include-disabled brings the disabled row, suspended.
    let check = import(&["--redis-cache", "broker", "--check"], &env);
    assert_eq!(check.status.code(), Some(1));
    assert!(check.stdout.is_empty());
    let all = import(&["--redis-cache", "broker", "--include-disabled"], &env);
    let all_yaml = String::from_utf8(all.stdout).expect("utf-8");
    let disabled: Vec<PeriodicTask> = serde_yaml::Deserializer::from_str(&all_yaml)
        .map(|d| PeriodicTask::deserialize(d).expect("a PeriodicTask"))
        .filter(|pt| original(pt).contains("disabled"))
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].spec.suspend, Some(true));
    assert_eq!(disabled[0].spec.schedule.every.as_deref(), Some("2d"));

    std::fs::remove_dir_all(&dir).ok();
}
