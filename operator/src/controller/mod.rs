//! Controllers, one module per kind. Reconcile functions are thin: read, build desired
//! objects with pure functions, apply them with server-side apply, write status.

pub(crate) mod apply;
pub mod broker_ref;
pub(crate) mod conditions;
pub(crate) mod events;
pub(crate) mod labels;
pub(crate) mod read_cache;
pub use labels::OwnedBy;
pub mod periodic_task;
pub mod redis_cache;
pub(crate) mod time;
pub mod worker_pool;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};

use crate::api::RedisCache;
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;
use read_cache::ReadCache;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "celery-operator";

/// Errors of the controllers; `metric_label` gives a short, stable label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A read through a read cache, whose error every waiting caller shares.
    #[error("kubernetes API: {0}")]
    KubeRead(std::sync::Arc<kube::Error>),
    #[error("CRD {0} is not installed; run `celery-operator crds | kubectl apply -f -`")]
    CrdMissing(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error(transparent)]
    Broker(#[from] broker_ref::ResolveError),
    #[error("{0}")]
    MissingSecret(String),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("serializing {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    #[error("lost leadership; exiting so a fresh process competes again")]
    LostLeadership,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) | Error::KubeRead(_) => "kube",
            Error::CrdMissing(_) => "crd_missing",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Broker(broker_ref::ResolveError::NotFound(_)) => "broker_unresolved",
            Error::Broker(broker_ref::ResolveError::Pending(_)) => "broker_pending",
            Error::Broker(broker_ref::ResolveError::Unavailable { .. }) => "broker_unavailable",
            Error::MissingField(_) => "missing_field",
            Error::MissingSecret(_) => "missing_secret",
            Error::Serialize(..) => "serialize",
            Error::Leader(_) => "leader",
            Error::LostLeadership => "lost_leadership",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared state handed to every reconcile.
pub struct Context {
    pub client: Client,
    /// Only this namespace is watched when set; otherwise the whole cluster.
    pub namespace: Option<String>,
    /// Where every event of the process goes out, through its one Recorder.
    pub(crate) events: events::EventQueue,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff,
    /// What broker references name, read once per version.
    pub(crate) secrets: Arc<ReadCache<Secret>>,
    pub(crate) redis_caches: Arc<ReadCache<RedisCache>>,
    pub status_writes_per_second: f64,
}

impl Context {
    /// Starts the read caches' watches: call it within a tokio runtime.
    pub fn new(client: Client, namespace: Option<String>, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            events: events::EventQueue::start(
                Recorder::new(client.clone(), reporter),
                metrics.events_dropped.clone(),
            ),
            secrets: ReadCache::start(client.clone(), namespace.as_deref()),
            redis_caches: ReadCache::start(client.clone(), namespace.as_deref()),
            client,
            namespace,
            metrics,
            backoff: Backoff::default(),
            status_writes_per_second: periodic_task::status_writer::STATUS_WRITES_PER_SECOND,
        }
    }

    /// The API the controllers watch `K` through: one namespace or all of them.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

impl Context {
    /// Queues an event on `obj`; failing to record an event never fails a reconcile.
    /// Events of one object are grouped by (reason, action), so `action` tells apart what
    /// happened to different owned objects.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish_on(obj, None, type_, reason, action, note);
    }

    /// Queues an event on one part of `obj` (a `fieldPath` such as
    /// `status.recentRuns{<task id>}`, as the kubelet names a container): events on different
    /// parts are recorded apart instead of counted into one series.
    pub fn publish_on<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        field_path: Option<String>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let mut regarding = obj.object_ref(&());
        regarding.field_path = field_path;
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        self.events.push(event, regarding);
    }
}

/// The error policy of every controller: log the failure and retry after its backoff.
pub fn requeue_failed<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    err: &Error,
) -> Action {
    let retry = ctx.backoff.failed(Backoff::key(obj), err);
    let meta = obj.meta();
    tracing::warn!(
        kind = %K::kind(&()),
        name = meta.name.as_deref().unwrap_or_default(),
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        error = %err,
        label = err.metric_label(),
        retry_in_s = retry.as_secs(),
        "reconcile failed"
    );
    Action::requeue(retry)
}

/// The longest wait before retrying a failed reconcile.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// First retry delay of a failed reconcile: short for transient API errors, longer for bad
/// specs that only a user can fix (a spec change triggers a reconcile at once anyway).
pub fn requeue_after(err: &Error) -> Duration {
    match err {
        Error::InvalidSpec(_) => MAX_BACKOFF,
        Error::Broker(broker_ref::ResolveError::NotFound(_)) | Error::MissingSecret(_) => {
            Duration::from_secs(15)
        }
        _ => Duration::from_secs(5),
    }
}

/// The delay after `failures` earlier consecutive failures: `first`, doubled each time,
/// capped at `max`.
pub fn backoff_delay(first: Duration, failures: u32, max: Duration) -> Duration {
    first.saturating_mul(1 << failures.min(16)).min(max)
}

/// Consecutive reconcile failures per object, so retries back off exponentially instead of
/// hammering the API server or a broker; a successful reconcile resets the count.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The kind, namespace and name of an object: its key here.
    pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
        let meta = obj.meta();
        format!(
            "{}/{}/{}",
            K::kind(&()),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    }

    /// Records one more failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: String, err: &Error) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(key).or_default();
        let delay = backoff_delay(requeue_after(err), *n, MAX_BACKOFF);
        *n = n.saturating_add(1);
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// How `run` runs.
pub struct RunOptions {
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// Compete for this Lease and reconcile only while holding it.
    pub leader_election: Option<LeaseConfig>,
    pub metrics: Arc<Metrics>,
    /// PeriodicTask status writes per second over all tasks.
    pub status_writes_per_second: f64,
}

/// Starts one controller per kind (once leader, with leader election) and runs until a
/// shutdown signal, or until leadership is lost.
pub async fn run(client: Client, opts: RunOptions) -> Result<()> {
    ensure_crds_installed(&client).await?;
    let mut ctx = Context::new(client.clone(), opts.namespace, opts.metrics);
    ctx.status_writes_per_second = opts.status_writes_per_second;
    let ctx = Arc::new(ctx);
    // A standby replica is healthy and ready: it is waiting for the Lease.
    ctx.metrics.set_ready(true);
    let mut leadership = match &opts.leader_election {
        Some(cfg) => {
            let mut l = leader::campaign(client, cfg).await?;
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "waiting for leadership");
            l.acquired().await?;
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "acquired leadership");
            Some(l)
        }
        None => None,
    };
    ctx.metrics.leader.set(1);
    tracing::info!(
        namespace = ctx.namespace.as_deref().unwrap_or("<all>"),
        "starting controllers"
    );
    let controllers = async {
        tokio::join!(
            redis_cache::run(ctx.clone()),
            worker_pool::run(ctx.clone()),
            periodic_task::run(ctx.clone())
        );
    };
    match &mut leadership {
        None => controllers.await,
        Some(l) => tokio::select! {
            _ = controllers => {}
            _ = l.lost() => {
                ctx.metrics.leader.set(0);
                tracing::error!("lost leadership");
                return Err(Error::LostLeadership);
            }
        },
    }
    Ok(())
}

async fn ensure_crds_installed(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::all_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        if crds.get_opt(&name).await?.is_none() {
            return Err(Error::CrdMissing(name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let backoff = Backoff::default();
        let err = || Error::MissingField("metadata.namespace");
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.failed("WorkerPool/ns/a".into(), &err()).as_secs())
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            backoff.failed("WorkerPool/ns/b".into(), &err()).as_secs(),
            5,
            "each object has its own count"
        );
        backoff.succeeded("WorkerPool/ns/a");
        assert_eq!(
            backoff.failed("WorkerPool/ns/a".into(), &err()).as_secs(),
            5
        );
        let broker = Error::Broker(broker_ref::ResolveError::NotFound(
            "spec.broker: RedisCache b not found".into(),
        ));
        assert_eq!(backoff.failed("x".into(), &broker).as_secs(), 15);
        assert_eq!(backoff.failed("x".into(), &broker).as_secs(), 30);
        assert_eq!(
            backoff_delay(Duration::from_secs(5), u32::MAX, MAX_BACKOFF),
            MAX_BACKOFF,
            "no overflow"
        );
    }
}
