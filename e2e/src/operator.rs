//! The operator binary, run on the host against the test cluster, scoped to one namespace so
//! tests running in parallel do not see each other's objects.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{kubeconfig_path, repo_root};

/// A running `celery-operator run`; killed (SIGKILL, like a crash) when dropped.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
    namespace: String,
}

fn binary() -> PathBuf {
    std::env::var_os("E2E_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/celery-operator"))
}

impl Operator {
    /// Starts the operator watching `namespace`. Its log goes to `.e2e/test/logs/`.
    pub fn start(namespace: &str) -> Self {
        Self::start_with(namespace, &[])
    }

    /// Like [`Operator::start`], with extra environment variables.
    pub fn start_with(namespace: &str, env: &[(&str, &str)]) -> Self {
        let dir = kubeconfig_path()
            .parent()
            .map(|p| p.join("logs"))
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("operator-{namespace}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(binary())
            .args(["run", "--namespace", namespace])
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
        }
    }

    /// Kills the process like a crash would (SIGKILL) and starts a new one.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start(&self.namespace.clone());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
