//! The Helm chart, installed as users install it: helm (the one `make tools` built) against the
//! test cluster.

use std::process::{Command, Output};
use std::time::Duration;

use crate::{image, kubeconfig_path, kubectl, ok, repo_root};

/// Runs helm with the test kubeconfig.
pub fn helm(args: &[&str]) -> Output {
    let bin = std::env::var("E2E_KUBECTL")
        .map(|k| k.replace("kubectl", "helm"))
        .unwrap_or_else(|_| "helm".into());
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .output()
        .expect("helm")
}

/// Path of the chart in the repository.
pub fn chart() -> String {
    repo_root()
        .join("charts/celery-operator")
        .display()
        .to_string()
}

/// The operator installed in the cluster by `helm install` with the chart's defaults (two
/// replicas, leader election, cluster-wide RBAC), only the image set to the locally built
/// one. Uninstalled, and its namespace deleted, when dropped.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Release {
    /// `helm install --wait` of the chart; `extra` are further `--set k=v` values.
    pub fn install(name: &str, namespace: &str, extra: &[&str]) -> Self {
        let operator = image("operator");
        let (repository, tag) = operator
            .rsplit_once(':')
            .expect("E2E_IMAGE_OPERATOR is repository:tag");
        let repository = format!("image.repository={repository}");
        let tag = format!("image.tag={tag}");
        let chart = chart();
        let mut args = vec![
            "install",
            name,
            chart.as_str(),
            "--namespace",
            namespace,
            "--create-namespace",
            "--set",
            &repository,
            "--set",
            &tag,
            "--wait",
            "--timeout",
            "180s",
        ];
        for v in extra {
            args.extend(["--set", v]);
        }
        let release = Self {
            name: name.into(),
            namespace: namespace.into(),
        };
        ok(helm(&args));
        release
    }

    /// The label selector of the operator's pods.
    pub fn selector(&self) -> String {
        format!("app.kubernetes.io/instance={}", self.name)
    }

    /// The holder of the leader Lease (a pod name), empty while none holds it.
    pub fn leader(&self) -> String {
        let out = kubectl(&[
            "get",
            "lease",
            &self.name,
            "-n",
            &self.namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            String::new()
        }
    }

    /// The operator pods' logs (every container that ran, the previous one included).
    pub fn logs(&self) -> String {
        let out = kubectl(&[
            "logs",
            "-n",
            &self.namespace,
            "-l",
            &self.selector(),
            "--tail=-1",
            "--prefix",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to `timeout`) until some pod holds the Lease, and returns it.
    pub fn wait_leader(&self, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let leader = self.leader();
            if !leader.is_empty() {
                return leader;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no operator pod took the Lease {} in {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let out = helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--wait",
        ]);
        if !out.status.success() {
            eprintln!(
                "helm uninstall {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Gone before the next test binary runs (one may install into the same namespace).
        let _ = kubectl(&["delete", "namespace", &self.namespace, "--timeout=180s"]);
    }
}
