//! Real Celery workers of the e2e test app (e2e/app/tasks.py), from the venv run-e2e.sh made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use crate::repo_root;

pub fn venv_bin(name: &str) -> PathBuf {
    std::env::var_os("E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("e2e/.venv"))
        .join("bin")
        .join(name)
}

pub fn app_dir() -> PathBuf {
    repo_root().join("e2e/app")
}

/// A `celery` process; SIGTERM (warm shutdown) then SIGKILL when dropped.
pub struct CeleryWorker {
    child: Child,
    pub log: PathBuf,
}

impl CeleryWorker {
    /// A worker of the test app on `queues` (comma-separated) of the broker at `url`:
    /// threads pool, no gossip, mingle or heartbeats, so it starts fast; a unique name.
    pub fn on_queues(url: &str, queues: &str) -> Self {
        Self::with_env(
            queues,
            BTreeMap::from([("CELERY_BROKER_URL".to_string(), url.to_string())]),
        )
    }

    /// Like [`Self::on_queues`], writing results to `results` (`CELERY_RESULT_BACKEND`).
    pub fn with_result_backend(url: &str, results: &str, queues: &str) -> Self {
        Self::with_env(
            queues,
            BTreeMap::from([
                ("CELERY_BROKER_URL".to_string(), url.to_string()),
                ("CELERY_RESULT_BACKEND".to_string(), results.to_string()),
            ]),
        )
    }

    /// Like [`Self::with_result_backend`] with one thread that prefetches one message: a
    /// run waits in the queue while another runs.
    pub fn single_with_result_backend(url: &str, results: &str, queues: &str) -> Self {
        Self::with_env_pool(
            queues,
            &["-c", "1", "--prefetch-multiplier", "1"],
            BTreeMap::from([
                ("CELERY_BROKER_URL".to_string(), url.to_string()),
                ("CELERY_RESULT_BACKEND".to_string(), results.to_string()),
            ]),
        )
    }

    fn with_env(queues: &str, env: BTreeMap<String, String>) -> Self {
        Self::with_env_pool(queues, &["-c", "4"], env)
    }

    fn with_env_pool(queues: &str, pool: &[&str], env: BTreeMap<String, String>) -> Self {
        let name = format!("e2e-{}@%h", uuid::Uuid::new_v4().simple());
        let args: Vec<String> = [
            "-A",
            "tasks",
            "worker",
            "-Q",
            queues,
            "--pool",
            "threads",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            &name,
        ]
        .iter()
        .chain(pool)
        .map(|s| s.to_string())
        .collect();
        Self::start(&args, &env)
    }

    /// Runs `celery <args>` in the test app's directory with `env`.
    pub fn start(args: &[String], env: &BTreeMap<String, String>) -> Self {
        let log =
            std::env::temp_dir().join(format!("e2e-celery-{}.log", uuid::Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(venv_bin("celery"))
            .args(args)
            .current_dir(app_dir())
            .env("PYTHONPATH", app_dir())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("celery (installed by e2e/venv.sh)");
        Self { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let stopped = (0..50).any(|_| {
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            exited
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failed test's worker log stays for the diagnosis; a passing one's goes.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Runs a Python snippet with the test app importable and `env` set.
pub fn python(code: &str, env: &BTreeMap<String, String>) -> Output {
    Command::new(venv_bin("python"))
        .args(["-c", code])
        .current_dir(app_dir())
        .env("PYTHONPATH", app_dir())
        .envs(env)
        .output()
        .expect("python from the venv")
}

/// Expands Kubernetes `$(VAR)` references in container env values, in order, like the kubelet.
pub fn expand_env(vars: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in vars {
        let mut v = value.clone();
        for (k, known) in &out {
            v = v.replace(&format!("$({k})"), known);
        }
        out.insert(name.clone(), v);
    }
    out
}

/// The executions the test app's `record` task appended to `e2e:executed` in `redis`, in
/// order.
pub fn recorded(redis: &crate::redis::RedisServer) -> Vec<serde_json::Value> {
    let out = redis.cli(&["LRANGE", "e2e:executed", "0", "-1"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("record entry is JSON"))
        .collect()
}
