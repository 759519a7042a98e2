use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use std::sync::Arc;

use celery_operator::leader::LeaseConfig;
use celery_operator::metrics::Metrics;
use celery_operator::{api, controller, http, import, schedule};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Run(RunArgs),
    /// Schedule tools.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Print a Celery app's beat schedule (and django-celery-beat's rows) as PeriodicTask
    /// manifests for `kubectl apply -f -`; what cannot be mapped is reported on stderr.
    Import(import::ImportArgs),
    /// Print every CRD of the project as multi-document YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Reconcile only while holding a Lease, so several replicas can run.
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "celery-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a leader keeps the Lease without renewing; a standby takes over after this.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Serve the validating admission webhook (HTTPS) on this address.
    #[arg(long, env = "WEBHOOK_ADDR", requires = "webhook_cert_dir")]
    webhook_addr: Option<std::net::SocketAddr>,
    /// Directory of the webhook's `tls.crt` and `tls.key` (re-read when they change).
    #[arg(long, env = "WEBHOOK_CERT_DIR", requires = "webhook_addr")]
    webhook_cert_dir: Option<std::path::PathBuf>,
    /// Without cert-manager: keep a CA and serving certificate in this Secret (of the
    /// Lease namespace), write them to the cert dir, renew them, and keep the caBundle of
    /// --webhook-configuration current.
    #[arg(long, env = "WEBHOOK_SECRET", requires_all = ["webhook_cert_dir", "webhook_configuration"])]
    webhook_secret: Option<String>,
    /// The ValidatingWebhookConfiguration whose caBundle the operator keeps.
    #[arg(long, env = "WEBHOOK_CONFIGURATION", requires = "webhook_secret")]
    webhook_configuration: Option<String>,
    /// Names the self-signed serving certificate is for (comma-separated).
    #[arg(
        long,
        env = "WEBHOOK_HOSTS",
        value_delimiter = ',',
        requires = "webhook_secret"
    )]
    webhook_hosts: Vec<String>,
    /// PeriodicTask status writes per second, over all tasks. A first status and a changed
    /// condition go ahead of routine run bookkeeping, which is coalesced under this rate.
    #[arg(
        long,
        env = "STATUS_WRITES_PER_SECOND",
        default_value_t = celery_operator::controller::periodic_task::status_writer::STATUS_WRITES_PER_SECOND,
        value_parser = positive_rate
    )]
    status_writes_per_second: f64,
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{value} is not a positive number")),
    }
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

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Arc::new(Metrics::default());
    let addr = http::serve(args.metrics_addr, metrics.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let client = kube::Client::try_default().await?;
    let lease_namespace = args
        .lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    // Every replica serves admission, leader or not.
    if let (Some(addr), Some(dir)) = (args.webhook_addr, args.webhook_cert_dir) {
        if let (Some(secret), Some(configuration)) =
            (args.webhook_secret, args.webhook_configuration)
        {
            let certs = celery_operator::webhook::certs::SelfSigned {
                client: client.clone(),
                namespace: lease_namespace.clone(),
                secret,
                hosts: args.webhook_hosts,
                configuration,
                dir: dir.clone(),
            };
            certs.prepare().await?;
            tokio::spawn(certs.maintain());
        }
        let addr = celery_operator::webhook::serve(addr, dir).await?;
        tracing::info!(%addr, path = celery_operator::webhook::PATH, "serving the admission webhook");
    }
    let leader_election = args.leader_election.then(|| LeaseConfig {
        name: args.lease_name,
        namespace: lease_namespace,
        identity: std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("celery-operator-{}", uuid::Uuid::new_v4().simple())),
        duration_seconds: args.lease_duration_seconds,
        grace_seconds: (args.lease_duration_seconds / 3).max(1),
    });
    let opts = controller::RunOptions {
        namespace: args.namespace.filter(|n| !n.is_empty()),
        leader_election,
        metrics,
        status_writes_per_second: args.status_writes_per_second,
    };
    controller::run(client, opts).await?;
    Ok(())
}

/// Exit 0 when every entry was imported, 1 when some could not be (each reported), 2 when
/// the import could not run at all.
fn run_import(args: &import::ImportArgs) -> ExitCode {
    if args.print_exporter {
        print!("{}", import::EXPORTER);
        return ExitCode::SUCCESS;
    }
    match import::run(args, chrono::Utc::now()) {
        Ok(outcome) => {
            if !args.check {
                print!("{}", outcome.yaml);
            }
            for problem in &outcome.problems {
                eprintln!("celery-operator import: {problem}");
            }
            eprintln!(
                "celery-operator import: {} entries imported, {} not",
                outcome.imported, outcome.refused
            );
            if outcome.refused == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("celery-operator import: {err}");
            ExitCode::from(2)
        }
    }
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
    if let Command::Import(args) = &cli.command {
        return run_import(args);
    }
    init_logging(cli.log_json);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Schedule { .. } | Command::Import(_) => Ok(()),
        Command::Run(args) => run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("celery-operator: {err}");
            ExitCode::FAILURE
        }
    }
}
