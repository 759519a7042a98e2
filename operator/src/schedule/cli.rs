//! `celery-operator schedule next`: print the next fire times of a schedule, one RFC 3339
//! instant per line, with the schedule's UTC offset.
//!
//! Defaults, chosen to show what the operator would do:
//! - `--after` defaults to now; fires are strictly after it.
//! - `--tz` overrides the manifest's `spec.timeZone`; without either, UTC. For `every` the
//!   zone only changes how instants are printed.
//! - The anchor of `every` slots is `--start`, else the manifest's `spec.startTime`, else its
//!   `metadata.creationTimestamp` (as the operator anchors at creation), else `--after`
//!   itself (as if the task were created at that instant: first fire one interval later).
//!   `--start` is ignored by crontab and cron schedules.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::{ArgGroup, Args};
use serde::{Deserialize, Deserializer};
use thiserror::Error;

use super::{
    Cron, Crontab, CrontabFields, Schedule, ScheduleError, ScheduleKind, ScheduleSpec, Solar,
    SolarEvent, SolarSpec, parse_tz,
};

/// Arguments of `schedule next`.
#[derive(Clone, Debug, PartialEq, Args)]
#[command(group(
    ArgGroup::new("source")
        .required(true)
        .multiple(false)
        .args(["file", "every", "crontab", "cron", "solar"])
))]
pub struct NextArgs {
    /// Read spec.schedule, spec.timeZone and spec.startTime from a PeriodicTask manifest (YAML).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A fixed interval such as 10s, 90m or 1h15m40s (units d, h, m, s).
    #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
    pub every: Option<String>,
    /// A Celery crontab: five fields separated by single spaces.
    #[arg(long, value_name = "M H DOM MON DOW", allow_hyphen_values = true)]
    pub crontab: Option<String>,
    /// A standard cron expression or macro (@hourly ...), read as a Kubernetes CronJob does.
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    pub cron: Option<String>,
    /// A Celery solar event (sunrise, sunset, solar_noon, dawn_civil, dusk_nautical, ...),
    /// with --lat and --lon.
    #[arg(long, value_name = "EVENT", requires_all = ["lat", "lon"])]
    pub solar: Option<String>,
    /// Latitude of --solar, degrees north (negative south).
    #[arg(
        long,
        value_name = "DEG",
        allow_hyphen_values = true,
        requires = "solar"
    )]
    pub lat: Option<f64>,
    /// Longitude of --solar, degrees east (negative west).
    #[arg(
        long,
        value_name = "DEG",
        allow_hyphen_values = true,
        requires = "solar"
    )]
    pub lon: Option<f64>,
    /// IANA time zone, e.g. Europe/Berlin [default: the manifest's spec.timeZone, else UTC].
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Print fires strictly after this RFC 3339 instant [default: now].
    #[arg(long, value_name = "RFC3339")]
    pub after: Option<String>,
    /// First slot of an every schedule [default: spec.startTime, else
    /// metadata.creationTimestamp, else --after].
    #[arg(long, value_name = "RFC3339")]
    pub start: Option<String>,
    /// How many fires to print.
    #[arg(
        short = 'n',
        long = "count",
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub count: u32,
}

/// Why `schedule next` failed. Display is one line naming the bad flag or field.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("{path}: {error}")]
    InManifest { path: String, error: ScheduleError },
    #[error("give exactly one of -f, --every, --crontab, --cron or --solar")]
    Source,
    #[error(
        "invalid {flag} \"{value}\": expected an RFC 3339 instant such as 2024-03-31T02:30:00+02:00"
    )]
    Instant { flag: &'static str, value: String },
    #[error("cannot read {path}: {reason}")]
    Read {
        path: String,
        reason: std::io::Error,
    },
    #[error("invalid manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
}

/// Compute the lines `schedule next` prints: up to `args.count` RFC 3339 instants. Fewer
/// only if the schedule ends (beyond the 400-year search or chrono's date range).
pub fn run_next(args: &NextArgs, now: DateTime<Utc>) -> Result<Vec<String>, CliError> {
    let after = match &args.after {
        Some(value) => parse_instant("--after", value)?,
        None => now,
    };
    let start = args
        .start
        .as_deref()
        .map(|value| parse_instant("--start", value))
        .transpose()?;
    let tz_flag = args.tz.as_deref();
    let schedule = match (
        &args.file,
        &args.every,
        &args.crontab,
        &args.cron,
        &args.solar,
    ) {
        (Some(path), None, None, None, None) => from_manifest(path, tz_flag, start, after)?,
        (None, Some(every), None, None, None) => {
            let spec = ScheduleSpec {
                every: Some(every),
                ..ScheduleSpec::default()
            };
            Schedule::from_spec(&spec, tz_flag, start.unwrap_or(after))?
        }
        (None, None, Some(crontab), None, None) => {
            let kind =
                ScheduleKind::Crontab(Crontab::from_string(crontab).map_err(ScheduleError::from)?);
            Schedule::new(kind, zone(tz_flag)?)
        }
        (None, None, None, Some(cron), None) => {
            let kind = ScheduleKind::Cron(Cron::parse(cron).map_err(ScheduleError::from)?);
            Schedule::new(kind, zone(tz_flag)?)
        }
        (None, None, None, None, Some(event)) => {
            let event = SolarEvent::parse(event).map_err(ScheduleError::from)?;
            let spec = SolarSpec {
                event,
                latitude: args.lat.unwrap_or_default(),
                longitude: args.lon.unwrap_or_default(),
            };
            let kind = ScheduleKind::Solar(Solar::from_spec(&spec).map_err(ScheduleError::from)?);
            Schedule::new(kind, zone(tz_flag)?)
        }
        _ => return Err(CliError::Source),
    };
    let count = usize::try_from(args.count).unwrap_or(usize::MAX);
    Ok(schedule
        .upcoming(after)
        .take(count)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, false))
        .collect())
}

fn zone(name: Option<&str>) -> Result<Tz, ScheduleError> {
    Ok(name.map(parse_tz).transpose()?.unwrap_or(Tz::UTC))
}

fn parse_instant(flag: &'static str, value: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| CliError::Instant {
            flag,
            value: value.to_string(),
        })
}

// The parts of a PeriodicTask manifest `schedule next` reads. Other fields are ignored, but
// inside `schedule` unknown keys are errors: a misspelt `dayofweek` must not become `*`.

#[derive(Deserialize)]
struct Manifest {
    kind: Option<String>,
    metadata: Option<ManifestMetadata>,
    spec: Option<ManifestSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestMetadata {
    creation_timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestSpec {
    schedule: Option<ManifestSchedule>,
    time_zone: Option<String>,
    start_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestSchedule {
    #[serde(default, deserialize_with = "text_or_number")]
    every: Option<String>,
    crontab: Option<ManifestCrontab>,
    cron: Option<String>,
    at: Option<String>,
    solar: Option<SolarSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManifestCrontab {
    #[serde(default, deserialize_with = "text_or_number")]
    minute: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    hour: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    day_of_week: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    day_of_month: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    month_of_year: Option<String>,
}

/// YAML reads `minute: 0` as a number; take it as the text `0`.
fn text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(i64),
    }
    Ok(
        Option::<Raw>::deserialize(deserializer)?.map(|raw| match raw {
            Raw::Text(text) => text,
            Raw::Number(n) => n.to_string(),
        }),
    )
}

fn from_manifest(
    path: &Path,
    tz_flag: Option<&str>,
    start_flag: Option<DateTime<Utc>>,
    after: DateTime<Utc>,
) -> Result<Schedule, CliError> {
    let shown = path.display().to_string();
    let invalid = |reason: String| CliError::Manifest {
        path: shown.clone(),
        reason: reason.replace('\n', " "),
    };
    let text = std::fs::read_to_string(path).map_err(|reason| CliError::Read {
        path: shown.clone(),
        reason,
    })?;
    let manifest: Manifest = serde_yaml::from_str(&text).map_err(|err| invalid(err.to_string()))?;
    if let Some(kind) = &manifest.kind
        && kind != "PeriodicTask"
    {
        return Err(invalid(format!("kind is {kind}, expected PeriodicTask")));
    }
    let spec = manifest
        .spec
        .ok_or_else(|| invalid("spec is missing".to_string()))?;
    let schedule = spec
        .schedule
        .ok_or_else(|| invalid("spec.schedule is missing".to_string()))?;
    let manifest_instant = |field: &str, value: &str| {
        DateTime::parse_from_rfc3339(value)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| invalid(format!("{field} \"{value}\" is not an RFC 3339 instant")))
    };
    let created = manifest.metadata.and_then(|m| m.creation_timestamp);
    let anchor = match (start_flag, &spec.start_time, &created) {
        (Some(start), _, _) => start,
        (None, Some(start), _) => manifest_instant("spec.startTime", start)?,
        (None, None, Some(created)) => manifest_instant("metadata.creationTimestamp", created)?,
        (None, None, None) => after,
    };
    let crontab = schedule.crontab.as_ref().map(|c| CrontabFields {
        minute: c.minute.as_deref(),
        hour: c.hour.as_deref(),
        day_of_week: c.day_of_week.as_deref(),
        day_of_month: c.day_of_month.as_deref(),
        month_of_year: c.month_of_year.as_deref(),
    });
    let at = schedule
        .at
        .as_deref()
        .map(|at| manifest_instant("spec.schedule.at", at))
        .transpose()?;
    let source = ScheduleSpec {
        every: schedule.every.as_deref(),
        crontab,
        cron: schedule.cron.as_deref(),
        at,
        solar: schedule.solar,
    };
    let time_zone = tz_flag.or(spec.time_zone.as_deref());
    Schedule::from_spec(&source, time_zone, anchor).map_err(|error| CliError::InManifest {
        path: shown.clone(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        next: NextArgs,
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-15T10:20:30Z")
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn parse(args: &[&str]) -> Result<NextArgs, clap::Error> {
        TestCli::try_parse_from(std::iter::once("next").chain(args.iter().copied()))
            .map(|cli| cli.next)
    }

    fn run(args: &[&str]) -> Result<Vec<String>, String> {
        let args = parse(args).map_err(|e| format!("clap: {e}"))?;
        run_next(&args, now()).map_err(|e| e.to_string())
    }

    /// A manifest file unique to one test, removed when dropped.
    struct TempManifest(PathBuf);

    impl TempManifest {
        fn new(name: &str, yaml: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "celery-operator-schedule-{}-{name}.yaml",
                std::process::id()
            ));
            std::fs::write(&path, yaml).expect("write temp manifest");
            TempManifest(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("utf-8 temp path")
        }
    }

    impl Drop for TempManifest {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn exactly_one_source_is_required() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--every", "10s", "--cron", "* * * * *"]).is_err());
        assert!(parse(&["-f", "x.yaml", "--crontab", "* * * * *"]).is_err());
        assert!(parse(&["--every", "10s", "-n", "0"]).is_err());
        let args = parse(&["--every", "10s"]).expect("valid");
        assert_eq!(args.count, 5);
        assert_eq!(args.after, None);
        // Built by hand without clap, the same rule holds.
        let none = NextArgs {
            every: None,
            ..args.clone()
        };
        assert_eq!(
            run_next(&none, now()).map_err(|e| e.to_string()),
            Err("give exactly one of -f, --every, --crontab, --cron or --solar".into())
        );
        let two = NextArgs {
            cron: Some("* * * * *".into()),
            ..args
        };
        assert!(matches!(run_next(&two, now()), Err(CliError::Source)));
    }

    #[test]
    fn every_defaults_to_now_and_anchors_there() {
        assert_eq!(
            run(&["--every", "10s", "-n", "3"]),
            Ok(vec![
                "2024-05-15T10:20:40+00:00".into(),
                "2024-05-15T10:20:50+00:00".into(),
                "2024-05-15T10:21:00+00:00".into()
            ])
        );
        assert_eq!(run(&["--every", "1h"]).map(|lines| lines.len()), Ok(5));
    }

    #[test]
    fn every_with_start_and_zone() {
        assert_eq!(
            run(&[
                "--every",
                "1h15m40s",
                "--start",
                "2024-01-01T00:00:00Z",
                "--after",
                "2024-01-01T02:00:00Z",
                "--tz",
                "Asia/Kolkata",
                "-n",
                "2"
            ]),
            Ok(vec![
                "2024-01-01T08:01:20+05:30".into(),
                "2024-01-01T09:17:00+05:30".into()
            ])
        );
    }

    #[test]
    fn crontab_in_berlin_across_spring_forward() {
        assert_eq!(
            run(&[
                "--crontab",
                "30 2 * * *",
                "--tz",
                "Europe/Berlin",
                "--after",
                "2024-03-30T12:00:00Z",
                "-n",
                "2"
            ]),
            Ok(vec![
                "2024-03-31T03:30:00+02:00".into(),
                "2024-04-01T02:30:00+02:00".into()
            ])
        );
    }

    #[test]
    fn cron_in_new_york_across_fall_back() {
        assert_eq!(
            run(&[
                "--cron",
                "0 1 * * *",
                "--tz",
                "America/New_York",
                "--after",
                "2024-11-02T12:00:00-04:00",
                "--count",
                "3"
            ]),
            Ok(vec![
                "2024-11-03T01:00:00-04:00".into(),
                "2024-11-03T01:00:00-05:00".into(),
                "2024-11-04T01:00:00-05:00".into()
            ])
        );
        assert_eq!(
            run(&["--cron", "@hourly", "-n", "1"]),
            Ok(vec!["2024-05-15T11:00:00+00:00".into()])
        );
    }

    #[test]
    fn errors_are_one_line_and_name_the_field() {
        let cases = [
            (
                vec!["--crontab", "0 25 * * *"],
                "invalid crontab hour \"25\": 25 is out of range 0-23",
            ),
            (
                vec!["--crontab", "-20 * * * *"],
                "invalid crontab minute \"-20\": negative numbers are not supported",
            ),
            (
                vec!["--cron", "0 0 * * 8"],
                "invalid cron day-of-week \"8\": 8 is out of range 0-6",
            ),
            (
                vec!["--every", "-5s"],
                "invalid every \"-5s\": unexpected character '-'",
            ),
            (
                vec!["--every", "10s", "--tz", "Europe/Berln"],
                "invalid time zone \"Europe/Berln\": not an IANA time zone name (e.g. Europe/Berlin or UTC)",
            ),
            (
                vec!["--cron", "* * * * *", "--after", "tomorrow"],
                "invalid --after \"tomorrow\": expected an RFC 3339 instant such as 2024-03-31T02:30:00+02:00",
            ),
            (
                vec!["--every", "1m", "--start", "2024-01-01"],
                "invalid --start \"2024-01-01\": expected an RFC 3339 instant such as 2024-03-31T02:30:00+02:00",
            ),
        ];
        for (args, expected) in cases {
            let got = run(&args);
            assert_eq!(got, Err(expected.to_string()), "{args:?}");
            assert!(!expected.contains('\n'));
        }
    }

    #[test]
    fn manifest_with_crontab() {
        let file = TempManifest::new(
            "crontab",
            r#"
apiVersion: celeryoperator.io/v1alpha1
kind: PeriodicTask
metadata:
  name: refresh
spec:
  task: myapp.tasks.refresh_cache
  broker: {name: cache}
  timeZone: Europe/Berlin
  schedule:
    crontab:
      minute: 0
      hour: "*/3,8-12"
      dayOfWeek: mon-fri
"#,
        );
        assert_eq!(
            run(&[
                "-f",
                file.path(),
                "--after",
                "2024-05-17T18:30:00Z",
                "-n",
                "3"
            ]),
            Ok(vec![
                "2024-05-17T21:00:00+02:00".into(),
                "2024-05-20T00:00:00+02:00".into(),
                "2024-05-20T03:00:00+02:00".into()
            ])
        );
        // --tz overrides spec.timeZone.
        assert_eq!(
            run(&[
                "-f",
                file.path(),
                "--after",
                "2024-05-17T18:30:00Z",
                "-n",
                "1",
                "--tz",
                "UTC"
            ]),
            Ok(vec!["2024-05-17T21:00:00+00:00".into()])
        );
    }

    #[test]
    fn manifest_every_anchors() {
        let with_start = TempManifest::new(
            "every-start",
            "kind: PeriodicTask\nmetadata:\n  creationTimestamp: \"2024-05-15T10:00:07Z\"\nspec:\n  startTime: \"2024-05-15T10:00:03Z\"\n  schedule:\n    every: 10s\n",
        );
        assert_eq!(
            run(&["-f", with_start.path(), "-n", "2"]),
            Ok(vec![
                "2024-05-15T10:20:33+00:00".into(),
                "2024-05-15T10:20:43+00:00".into()
            ])
        );
        assert_eq!(
            run(&[
                "-f",
                with_start.path(),
                "-n",
                "1",
                "--start",
                "2024-05-15T10:00:05Z"
            ]),
            Ok(vec!["2024-05-15T10:20:35+00:00".into()])
        );
        let created = TempManifest::new(
            "every-created",
            "kind: PeriodicTask\nmetadata:\n  creationTimestamp: \"2024-05-15T10:00:07Z\"\nspec:\n  schedule:\n    every: 10s\n",
        );
        assert_eq!(
            run(&["-f", created.path(), "-n", "1"]),
            Ok(vec!["2024-05-15T10:20:37+00:00".into()])
        );
        let bare = TempManifest::new("every-bare", "spec:\n  schedule:\n    every: 1m\n");
        assert_eq!(
            run(&["-f", bare.path(), "-n", "1"]),
            Ok(vec!["2024-05-15T10:21:30+00:00".into()])
        );
    }

    #[test]
    fn manifest_with_cron() {
        let file = TempManifest::new(
            "cron",
            "kind: PeriodicTask\nspec:\n  timeZone: America/New_York\n  schedule:\n    cron: \"0 0 13 * 5\"\n",
        );
        assert_eq!(
            run(&[
                "-f",
                file.path(),
                "--after",
                "2024-09-01T00:00:00Z",
                "-n",
                "2"
            ]),
            Ok(vec![
                "2024-09-06T00:00:00-04:00".into(),
                "2024-09-13T00:00:00-04:00".into()
            ])
        );
    }

    #[test]
    fn solar_prints_the_seconds_celery_fires_at_in_the_zone_asked() {
        // Celery 5.7's fires (tests/data/solar): Berlin sunsets 15:02:53.559, 15:03:59.955
        // and 15:05:09.135 UTC on 1-3 January 2026. PyEphem stops within 0.1 s of the
        // event; this module converges, and its second sunset is just past 15:04:00.
        assert_eq!(
            run(&[
                "--solar",
                "sunset",
                "--lat",
                "52.52",
                "--lon",
                "13.405",
                "--after",
                "2026-01-01T00:00:00Z",
                "--tz",
                "Europe/Berlin",
                "-n",
                "3"
            ]),
            Ok(vec![
                "2026-01-01T16:02:53+01:00".into(),
                "2026-01-02T16:04:00+01:00".into(),
                "2026-01-03T16:05:09+01:00".into()
            ])
        );
        // Negative coordinates are numbers, not flags; polar night skips to the first sunset.
        assert_eq!(
            run(&[
                "--solar",
                "sunset",
                "--lat",
                "-77.85",
                "--lon",
                "166.67",
                "--after",
                "2026-01-01T00:00:00Z",
                "-n",
                "1"
            ]),
            Ok(vec!["2026-02-19T12:30:27+00:00".into()])
        );
        assert!(
            parse(&["--solar", "sunset", "--lat", "1"]).is_err(),
            "--lon missing"
        );
        assert!(
            parse(&["--every", "1s", "--lat", "1"]).is_err(),
            "--lat without --solar"
        );
        assert_eq!(
            run(&["--solar", "sundown", "--lat", "1", "--lon", "1"]).map_err(|e| e
                .starts_with("invalid solar event \"sundown\": must be one of dawn_astronomical")),
            Err(true)
        );
        assert_eq!(
            run(&["--solar", "sunrise", "--lat", "91", "--lon", "1"]),
            Err("invalid solar latitude 91: must be between -90 and 90".into())
        );
        let file = TempManifest::new(
            "solar",
            "spec:\n  schedule:\n    solar: {event: solar_noon, latitude: 0, longitude: 0}\n",
        );
        assert_eq!(
            run(&[
                "-f",
                file.path(),
                "--after",
                "2026-01-01T00:00:00Z",
                "-n",
                "1"
            ]),
            run(&[
                "--solar",
                "solar_noon",
                "--lat",
                "0",
                "--lon",
                "0",
                "--after",
                "2026-01-01T00:00:00Z",
                "-n",
                "1"
            ])
        );
    }

    #[test]
    fn manifest_with_at_prints_its_one_instant_then_nothing() {
        let file = TempManifest::new(
            "at",
            "spec:\n  timeZone: Europe/Berlin\n  schedule:\n    at: \"2024-12-24T17:00:00Z\"\n",
        );
        assert_eq!(
            run(&["-f", file.path(), "-n", "3"]),
            Ok(vec!["2024-12-24T18:00:00+01:00".into()])
        );
        assert_eq!(
            run(&["-f", file.path(), "--after", "2024-12-24T17:00:00Z"]),
            Ok(vec![])
        );
        let bad = TempManifest::new("at-bad", "spec:\n  schedule:\n    at: tomorrow\n");
        assert!(
            run(&["-f", bad.path()])
                .unwrap_err()
                .contains("spec.schedule.at \"tomorrow\" is not an RFC 3339 instant")
        );
    }

    #[test]
    fn manifest_errors_are_one_line() {
        let check = |name: &str, yaml: &str, expected: &str| {
            let file = TempManifest::new(name, yaml);
            let got = run(&["-f", file.path()]).expect_err("should fail");
            let expected = expected.replace("PATH", file.path());
            assert_eq!(got, expected, "{name}");
            assert!(!got.contains('\n'), "{name}: {got}");
        };
        check(
            "bad-hour",
            "spec:\n  schedule:\n    crontab:\n      hour: 25\n",
            "PATH: invalid crontab hour \"25\": 25 is out of range 0-23",
        );
        check(
            "bad-zone",
            "spec:\n  timeZone: Mars/Base\n  schedule:\n    cron: \"* * * * *\"\n",
            "PATH: invalid time zone \"Mars/Base\": not an IANA time zone name (e.g. Europe/Berlin or UTC)",
        );
        check(
            "two-sources",
            "spec:\n  schedule:\n    every: 10s\n    cron: \"* * * * *\"\n",
            "PATH: invalid schedule: set exactly one of every, crontab, cron, at or solar (found every and cron)",
        );
        check(
            "no-schedule",
            "kind: PeriodicTask\nspec:\n  task: x\n",
            "invalid manifest PATH: spec.schedule is missing",
        );
        check(
            "wrong-kind",
            "kind: WorkerPool\nspec:\n  schedule:\n    every: 1s\n",
            "invalid manifest PATH: kind is WorkerPool, expected PeriodicTask",
        );
        check(
            "bad-start",
            "spec:\n  startTime: yesterday\n  schedule:\n    every: 1s\n",
            "invalid manifest PATH: spec.startTime \"yesterday\" is not an RFC 3339 instant",
        );
        let file = TempManifest::new(
            "typo",
            "spec:\n  schedule:\n    crontab:\n      dayofweek: mon\n",
        );
        let got = run(&["-f", file.path()]).expect_err("unknown field");
        assert!(
            got.starts_with(&format!("invalid manifest {}: ", file.path())),
            "{got}"
        );
        assert!(got.contains("dayofweek"), "{got}");
        assert!(!got.contains('\n'), "{got}");
        let file = TempManifest::new("not-yaml", "spec: [\n  - {\n");
        let got = run(&["-f", file.path()]).expect_err("bad yaml");
        assert!(got.starts_with("invalid manifest "), "{got}");
        assert!(!got.contains('\n'), "{got}");
    }

    #[test]
    fn missing_file() {
        let got = run(&["-f", "/nonexistent/celery-operator/task.yaml"]).expect_err("no file");
        assert!(
            got.starts_with("cannot read /nonexistent/celery-operator/task.yaml: "),
            "{got}"
        );
        assert!(!got.contains('\n'));
    }
}
