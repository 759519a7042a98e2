//! WorkerPool controller: resolves the broker, applies the worker Deployment, reports status.

pub mod broker;
pub mod deployment;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::apply::{apply_and_report, write_status};
use super::labels::{namespace, object_labels, owner_reference, selector_labels};
use super::{Context, Error, Result, requeue_after};
use crate::api::{RedisCache, WorkerPool};

const APP: &str = "celery-worker";

pub async fn run(ctx: Arc<Context>) {
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=celery-operator");
    let controller = Controller::new(ctx.watched::<WorkerPool>(), watcher::Config::default());
    let pools = controller.store();
    // A RedisCache appearing or changing may resolve the broker of the pools that use it.
    controller
        .owns(ctx.watched::<Deployment>(), owned)
        .watches(
            ctx.watched::<RedisCache>(),
            watcher::Config::default(),
            move |rc| {
                let (name, ns) = (rc.name_any(), rc.namespace());
                pools
                    .state()
                    .into_iter()
                    .filter(|wp| wp.namespace() == ns && uses_redis_cache(wp, &name))
                    .map(|wp| ObjectRef::from_obj(&*wp))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn uses_redis_cache(wp: &WorkerPool, name: &str) -> bool {
    std::iter::once(&wp.spec.broker)
        .chain(wp.spec.result_backend.as_ref())
        .any(|b| b.redis_cache.as_deref() == Some(name))
}

fn error_policy(wp: Arc<WorkerPool>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(workerpool = %wp.name_any(), namespace = wp.namespace().unwrap_or_default(), error = %err, label = err.metric_label(), "reconcile failed");
    Action::requeue(requeue_after(err))
}

async fn reconcile(wp: Arc<WorkerPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("WorkerPool");
    let ns = namespace(&*wp)?;
    let result = apply_all(&wp, &ctx, &ns).await;
    if let Err(err) = &result {
        ctx.metrics
            .reconcile_failed("WorkerPool", err.metric_label());
        let (reason, status) = match err {
            Error::BrokerUnresolved(msg) => (
                "BrokerNotFound",
                status::broker_unresolved(&wp, msg, Timestamp::now()),
            ),
            other => (
                "ReconcileFailed",
                status::failed(&wp, "ReconcileFailed", other.to_string(), Timestamp::now()),
            ),
        };
        ctx.publish(
            &*wp,
            EventType::Warning,
            reason,
            "Reconcile",
            err.to_string(),
        )
        .await;
        write_status(&ctx.client, &*wp, &ns, wp.status.as_ref(), status).await?;
    }
    result
}

async fn apply_all(wp: &WorkerPool, ctx: &Context, ns: &str) -> Result<Action> {
    let name = wp.name_any();
    let c = &ctx.client;
    let mut url_env = {
        let b = broker::resolve(c, ns, "spec.broker", &wp.spec.broker)
            .await
            .map_err(Error::BrokerUnresolved)?;
        broker::url_env("CELERY_BROKER_URL", &b)
    };
    if let Some(rb) = &wp.spec.result_backend {
        let b = broker::resolve(c, ns, "spec.resultBackend", rb)
            .await
            .map_err(Error::BrokerUnresolved)?;
        url_env.extend(broker::url_env("CELERY_RESULT_BACKEND", &b));
    }
    let desired = deployment::build(deployment::Inputs {
        name: &name,
        namespace: ns,
        labels: object_labels(APP, &name, "worker"),
        selector: selector_labels(APP, &name),
        owner: owner_reference(wp)?,
        spec: &wp.spec,
        url_env,
    });
    let applied = apply_and_report(ctx, wp, &Api::namespaced(c.clone(), ns), &desired).await?;
    write_status(
        c,
        wp,
        ns,
        wp.status.as_ref(),
        status::observed(wp, &applied, Timestamp::now()),
    )
    .await?;
    Ok(Action::await_change())
}
