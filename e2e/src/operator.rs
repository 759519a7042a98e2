//! The operator binary, run on the host against the test cluster, scoped to one namespace so
//! tests running in parallel do not see each other's objects.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{kubeconfig_path, logs_dir, repo_root};

/// A running `celery-operator run`; killed (SIGKILL, like a crash) when dropped.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    namespace: String,
    /// Port of its /metrics, /healthz and /readyz on 127.0.0.1.
    pub metrics_port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The operator binary run-e2e.sh built: `E2E_OPERATOR_BIN`, else cargo's target directory.
pub fn binary() -> PathBuf {
    std::env::var_os("E2E_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"))
                .join("debug/celery-operator")
        })
}

impl Operator {
    /// Starts the operator watching `namespace`. Its log goes to `.e2e/test/logs/`.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[], &[])
    }

    /// Like [`Operator::start`], with extra arguments to `run` and environment variables.
    pub fn start_with(namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = logs_dir().join(format!("operator-{namespace}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let metrics_port = crate::redis::free_port();
        let child = Command::new(binary())
            .args([
                "run",
                "--namespace",
                namespace,
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(args)
            .env("KUBECONFIG", kubeconfig_path())
            .env("RUST_LOG", "info,celery_operator=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start celery-operator (built by run-e2e.sh)");
        Self {
            child,
            log,
            namespace: namespace.into(),
            metrics_port,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Kills the process like a crash would (SIGKILL) and starts a new one.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        *self = Self::start_with(&self.namespace.clone(), &args, &env);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of one series of its /metrics, such as
    /// `celery_operator_reconciles_total{kind="RedisCache"}`; None until it is served.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (status, body) = http_get(self.metrics_port, "/metrics")?;
        if status != 200 {
            return None;
        }
        body.lines().find_map(|l| {
            l.strip_prefix(series)
                .filter(|v| v.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// The operator's log so far (to assert nothing secret was logged).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (the operator's metrics endpoint): (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
