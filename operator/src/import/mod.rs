//! `celery-operator import`: a Celery app's beat schedule as PeriodicTask manifests.
//!
//! The schedule is read where it lives, in the user's Python environment: the embedded
//! `beat_export.py` loads the app as `celery beat` does and prints its entries as JSON
//! (`--json` reads such a file instead). Each entry is mapped and checked by the code the
//! controller runs, so what is printed is what the operator schedules; what cannot be mapped
//! is reported by entry name and field, never dropped in silence.

mod export;
mod mapping;

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use chrono::{DateTime, Utc};
use clap::Args;
use thiserror::Error;

use crate::api::shared::{BrokerRef, SecretKeyRef};
use export::{Export, FORMAT};
use mapping::{Target, map_entry, object_names};

/// The exporter, run with the user's Python (`--print-exporter` writes it out).
pub const EXPORTER: &str = include_str!("beat_export.py");

/// Arguments of `import`.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The Celery app, as `celery -A` takes it (e.g. `proj` or `proj.celery:app`).
    #[arg(short = 'A', long, required_unless_present_any = ["json", "print_exporter"])]
    pub app: Option<String>,
    /// Python of the project's environment, where the app imports.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Also import django-celery-beat's PeriodicTask rows (needs DJANGO_SETTINGS_MODULE).
    #[arg(long)]
    pub django_celery_beat: bool,
    /// Import disabled django-celery-beat rows too, as suspended PeriodicTasks.
    #[arg(long)]
    pub include_disabled: bool,
    /// Read the exporter's JSON from this file (`-` for stdin) instead of running it.
    #[arg(long, value_name = "FILE", conflicts_with = "app")]
    pub json: Option<PathBuf>,
    /// Print the exporter script and exit, to run it elsewhere with `--json` afterwards.
    #[arg(long)]
    pub print_exporter: bool,
    /// Namespace of the PeriodicTasks.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Broker: a RedisCache in that namespace.
    #[arg(long, value_name = "NAME", required_unless_present_any = ["broker_secret", "print_exporter"])]
    pub redis_cache: Option<String>,
    /// Redis database of the RedisCache broker.
    #[arg(long, requires = "redis_cache")]
    pub database: Option<i32>,
    /// Broker: a Secret holding a redis:// URL.
    #[arg(long, value_name = "NAME", conflicts_with = "redis_cache")]
    pub broker_secret: Option<String>,
    /// Key of the URL in that Secret.
    #[arg(long, default_value = "url", requires = "broker_secret")]
    pub broker_secret_key: String,
    /// Print no manifests; report what cannot be imported and exit 1 if anything.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot run {python}: {source}")]
    Spawn {
        python: String,
        source: std::io::Error,
    },
    #[error("the exporter failed ({status}):\n{stderr}")]
    Exporter { status: String, stderr: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the exporter's output is not {FORMAT} JSON: {0}")]
    Format(String),
    #[error("cannot render YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// What an import produced: manifests to print, and per-entry problems to report.
#[derive(Debug, Default)]
pub struct Outcome {
    pub yaml: String,
    pub imported: usize,
    /// Entries not imported; each has at least one line in `problems`.
    pub refused: usize,
    pub problems: Vec<String>,
}

/// Runs the import (the exporter too, unless `--json`).
pub fn run(args: &ImportArgs, now: DateTime<Utc>) -> Result<Outcome, ImportError> {
    let json = match &args.json {
        Some(path) => read_json(path)?,
        None => run_exporter(args)?,
    };
    let export: Export =
        serde_json::from_str(&json).map_err(|e| ImportError::Format(e.to_string()))?;
    if export.format != FORMAT {
        return Err(ImportError::Format(format!("format is {}", export.format)));
    }
    let target = Target {
        namespace: args.namespace.clone(),
        broker: match &args.broker_secret {
            Some(name) => BrokerRef {
                secret_key_ref: Some(SecretKeyRef {
                    name: name.clone(),
                    key: args.broker_secret_key.clone(),
                }),
                ..Default::default()
            },
            None => BrokerRef {
                redis_cache: args.redis_cache.clone(),
                database: args.database,
                ..Default::default()
            },
        },
    };
    let names = object_names(export.entries.iter().map(|e| e.name.as_str()));
    let mut outcome = Outcome::default();
    for (entry, name) in export.entries.iter().zip(&names) {
        match map_entry(entry, name, &export.timezone, &target, now) {
            Ok(pt) => {
                outcome.imported += 1;
                outcome.yaml.push_str("---\n");
                outcome.yaml.push_str(&serde_yaml::to_string(&pt)?);
            }
            Err(problems) => {
                outcome.refused += 1;
                outcome.problems.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("{} entry {:?}: {p}", entry.source, entry.name)),
                );
            }
        }
    }
    Ok(outcome)
}

fn read_json(path: &PathBuf) -> Result<String, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(read_err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(read_err)
    }
}

fn run_exporter(args: &ImportArgs) -> Result<String, ImportError> {
    let mut cmd = Command::new(&args.python);
    cmd.arg("-c").arg(EXPORTER);
    if let Some(app) = &args.app {
        cmd.args(["-A", app]);
    }
    if args.django_celery_beat {
        cmd.arg("--django-celery-beat");
    }
    if args.include_disabled {
        cmd.arg("--include-disabled");
    }
    let out = cmd.output().map_err(|source| ImportError::Spawn {
        python: args.python.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(ImportError::Exporter {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| ImportError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        import: ImportArgs,
    }

    fn run_json(json: &str) -> Result<Outcome, ImportError> {
        let path = std::env::temp_dir().join(format!("import-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, json).expect("write");
        let cli = Cli::parse_from([
            "import".as_ref(),
            "--json".as_ref(),
            path.as_os_str(),
            "--redis-cache".as_ref(),
            "broker".as_ref(),
        ]);
        let outcome = run(&cli.import, Utc::now());
        std::fs::remove_file(&path).ok();
        outcome
    }

    #[test]
    fn an_export_becomes_manifests_and_reported_refusals() {
        let outcome = run_json(&format!(
            r#"{{"format": "{FORMAT}", "timezone": "UTC", "entries": [
                {{"name": "ok", "source": "beat_schedule", "task": "t", "schedule": {{"every_seconds": 10}}}},
                {{"name": "bad", "source": "beat_schedule", "task": "t", "schedule": {{"every_seconds": 0.1}}}}
            ]}}"#
        ))
        .expect("import");
        assert_eq!((outcome.imported, outcome.refused), (1, 1));
        assert!(outcome.yaml.contains("name: ok") && outcome.yaml.contains("every: 10s"));
        assert!(outcome.problems[0].starts_with(r#"beat_schedule entry "bad": schedule:"#));
    }

    #[test]
    fn another_format_is_refused_rather_than_misread() {
        let err =
            run_json(r#"{"format": "v0", "timezone": "UTC", "entries": []}"#).expect_err("refused");
        assert!(err.to_string().contains("format is v0"), "{err}");
    }

    #[test]
    fn a_broker_is_required_unless_printing_the_exporter() {
        assert!(Cli::try_parse_from(["import", "-A", "proj"]).is_err());
        assert!(Cli::try_parse_from(["import", "--print-exporter"]).is_ok());
    }
}
