//! Controllers, one module per kind. Reconcile functions are thin: read, build desired
//! objects with pure functions, apply them, write status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{PeriodicTask, RedisCache, WorkerPool};

/// Errors of the controllers; `metric_label` gives a short, stable label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("CRD {0} is not installed; run `celery-operator crds | kubectl apply -f -`")]
    CrdMissing(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::CrdMissing(_) => "crd_missing",
        }
    }
}

/// Shared state handed to every reconcile.
pub struct Context {
    pub client: Client,
}

/// Starts one controller per kind and runs until a shutdown signal.
pub async fn run(client: Client) -> Result<(), Error> {
    ensure_crds_installed(&client).await?;
    let ctx = Arc::new(Context {
        client: client.clone(),
    });
    tokio::join!(
        watch_kind::<RedisCache>(client.clone(), ctx.clone()),
        watch_kind::<WorkerPool>(client.clone(), ctx.clone()),
        watch_kind::<PeriodicTask>(client, ctx),
    );
    Ok(())
}

async fn ensure_crds_installed(client: &Client) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::all_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        if crds.get_opt(&name).await?.is_none() {
            return Err(Error::CrdMissing(name));
        }
    }
    Ok(())
}

// Until each kind has its own reconciler, the controller only observes its objects.
async fn watch_kind<K>(client: Client, ctx: Arc<Context>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client);
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(observe::<K>, error_policy::<K>, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::warn!(error = %err, "reconcile failed");
            }
        })
        .await;
}

async fn observe<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    _ctx: Arc<Context>,
) -> Result<Action, Error> {
    tracing::info!(kind = %K::kind(&()), namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), "observed");
    Ok(Action::await_change())
}

fn error_policy<K>(_obj: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, label = err.metric_label(), "requeue after error");
    Action::requeue(Duration::from_secs(5))
}
