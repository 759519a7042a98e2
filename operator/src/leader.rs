//! Leader election on a coordination.k8s.io Lease: only the holder reconciles and fires
//! schedules; the others wait and take over within the lease duration when it dies.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Where the Lease lives and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process (the pod name in a cluster).
    pub identity: String,
    pub duration_seconds: u64,
    /// Renew this long before expiry; also the clock skew tolerated between replicas.
    pub grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("leader election stopped")]
    Stopped,
}

/// Leadership of this process: wait for it, then watch for its loss.
pub struct Leadership {
    state: watch::Receiver<bool>,
}

/// Starts competing for the Lease in the background.
pub async fn campaign(client: Client, cfg: &LeaseConfig) -> Result<Leadership, LeaderError> {
    let manager = LeaseManagerBuilder::new(client, cfg.name.clone())
        .with_namespace(cfg.namespace.clone())
        .with_identity(cfg.identity.clone())
        .with_duration(cfg.duration_seconds)
        .with_grace(cfg.grace_seconds)
        .with_field_manager(format!("celery-operator-{}", cfg.identity))
        .build()
        .await?;
    let (state, _task) = manager.watch().await;
    Ok(Leadership { state })
}

impl Leadership {
    /// Returns once this process holds the Lease.
    pub async fn acquired(&mut self) -> Result<(), LeaderError> {
        self.state
            .wait_for(|leader| *leader)
            .await
            .map(|_| ())
            .map_err(|_| LeaderError::Stopped)
    }

    /// Returns when this process no longer holds the Lease.
    pub async fn lost(&mut self) -> LeaderError {
        match self.state.wait_for(|leader| !*leader).await {
            Ok(_) => LeaderError::Stopped,
            Err(_) => LeaderError::Stopped,
        }
    }
}
