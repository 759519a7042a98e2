use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use celery_operator::{api, controller, schedule};

/// celery-operator: Redis, Celery workers and periodic tasks as Kubernetes resources.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster config).
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
    },
    /// Schedule tools.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Print every CRD of the project as multi-document YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Print upcoming fire instants (RFC 3339, with the schedule's UTC offset), one per line.
    Next(schedule::cli::NextArgs),
}

fn init_logging(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn print_crds(out_dir: Option<std::path::PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let crds = api::all_crds();
    match out_dir {
        None => print!("{}", api::render_yaml(&crds)?),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for crd in &crds {
                let path = dir.join(api::crd_file_name(crd));
                std::fs::write(&path, api::render_yaml(std::slice::from_ref(crd))?)?;
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Schedule {
        command: ScheduleCommand::Next(args),
    } = &cli.command
    {
        // A usage error exits 2, like clap's own errors.
        return match schedule::cli::run_next(args, chrono::Utc::now()) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("celery-operator: {err}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(cli.log_json);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Schedule { .. } => Ok(()),
        Command::Run { namespace } => match kube::Client::try_default().await {
            Ok(client) => controller::run(client, namespace.filter(|n| !n.is_empty()))
                .await
                .map_err(Into::into),
            Err(err) => Err(err.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("celery-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
