//! The Helm chart, installed as users install it: helm (the one `make tools` built) against the
//! test cluster.

use std::process::{Command, Output};
use std::time::Duration;

use crate::{eventually, image, kubeconfig_path, kubectl, ok, repo_root};

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

/// A release of the chart: its name and namespace.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

/// A release `helm install` made; uninstalled, and its namespace deleted, when dropped.
pub struct Installed(pub Release);

impl std::ops::Deref for Installed {
    type Target = Release;
    fn deref(&self) -> &Release {
        &self.0
    }
}

impl Release {
    /// `helm install --wait` of the chart with its defaults (two replicas, leader election,
    /// cluster-wide RBAC, the webhook), only the image set to the locally built one.
    pub fn install(self) -> Installed {
        let operator = image("operator");
        let (repository, tag) = operator
            .rsplit_once(':')
            .expect("E2E_IMAGE_OPERATOR is repository:tag");
        let repository = format!("image.repository={repository}");
        let tag = format!("image.tag={tag}");
        let chart = chart();
        ok(helm(&[
            "install",
            &self.name,
            chart.as_str(),
            "--namespace",
            &self.namespace,
            "--create-namespace",
            "--set",
            &repository,
            "--set",
            &tag,
            "--wait",
            "--timeout",
            "180s",
        ]));
        // Ready pods are not yet a routed Service: until kube-proxy has the webhook's
        // endpoints, every apply is refused (failurePolicy Fail, "connection refused").
        let probe = "apiVersion: celeryoperator.io/v1alpha1\nkind: RedisCache\nmetadata: {name: webhook-probe}\nspec: {}\n";
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = crate::kubectl_with_input(
                &[
                    "create",
                    "--dry-run=server",
                    "-n",
                    &self.namespace,
                    "-f",
                    "-",
                ],
                Some(probe),
            );
            if out.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the admission webhook never answered: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        Installed(self)
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

    /// What the operator pods running now have logged (empty when there are none).
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
    pub async fn wait_leader(&self, timeout: Duration) -> String {
        let what = format!("an operator pod to hold the Lease {}", self.name);
        eventually(timeout, &what, || async {
            Some(self.leader()).filter(|l| !l.is_empty())
        })
        .await
    }
}

impl Drop for Installed {
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
