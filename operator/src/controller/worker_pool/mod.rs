//! WorkerPool controller: resolves the broker, applies the worker Deployment, reports status;
//! with `autoscaling`, the autoscaler loop decides the replicas from the queue backlog.

pub(crate) mod autoscaler;
pub mod deployment;
pub(crate) mod heartbeats;
pub(crate) mod load;
pub(crate) mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::apply::{apply_and_report, write_status};
use super::broker_ref as broker;
use super::conditions::{Conditioned, is_true};
use super::labels::{OwnedBy, namespace, owned_objects};
use super::{Backoff, Context, Error, Result, requeue_failed};
use crate::api::shared::TransportOptionsSpec;
use crate::api::worker_pool::Autoscaling;
use crate::api::{RedisCache, WorkerPool};
use crate::autoscale::Policy;
use crate::schedule::Interval;
use autoscaler::{Autoscaler, Target};
use status::WAITING_FOR_BROKER;

const APP: &str = "celery-worker";

/// What a WorkerPool reconcile gets: the shared context and the autoscaler.
pub struct PoolContext {
    pub ctx: Arc<Context>,
    pub autoscaler: Arc<Autoscaler>,
}

pub async fn run(ctx: Arc<Context>) {
    let owned = owned_objects();
    let (trigger, triggered) = futures::channel::mpsc::unbounded();
    let autoscaler = Arc::new(Autoscaler::new(
        ctx.client.clone(),
        ctx.metrics.clone(),
        trigger,
    ));
    tokio::spawn(autoscaler.clone().run());
    let controller = Controller::new(ctx.watched::<WorkerPool>(), watcher::Config::default());
    let pools = controller.store();
    let pools_read = pools.clone();
    // A deleted pool is never reconciled again (it has no finalizer): the autoscaler drops
    // the pools the watch no longer holds, and with them their broker connections.
    {
        let (autoscaler, pools) = (autoscaler.clone(), pools.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if pools.wait_until_ready().await.is_ok() {
                    autoscaler.retain(|key| pools.get(key).is_some()).await;
                }
            }
        });
    }
    let pool_ctx = Arc::new(PoolContext {
        ctx: ctx.clone(),
        autoscaler,
    });
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
        // The autoscaler asks for a reconcile when its decision changes.
        .reconcile_on(triggered)
        // A new version of a broker Secret (a rotated password) rolls the workers now.
        .reconcile_on(broker::referencing(&ctx, pools_read, |wp: &WorkerPool| {
            std::iter::once(&wp.spec.broker)
                .chain(&wp.spec.result_backend)
                .collect()
        }))
        .shutdown_on_signal()
        .run(reconcile, error_policy, pool_ctx)
        .for_each(|_| async {})
        .await;
}

fn uses_redis_cache(wp: &WorkerPool, name: &str) -> bool {
    std::iter::once(&wp.spec.broker)
        .chain(wp.spec.result_backend.as_ref())
        .any(|b| broker::reads(b, broker::Read::RedisCache(name)))
}

fn error_policy(wp: Arc<WorkerPool>, err: &Error, pctx: Arc<PoolContext>) -> Action {
    requeue_failed(&pctx.ctx, &*wp, err)
}

async fn reconcile(wp: Arc<WorkerPool>, pctx: Arc<PoolContext>) -> Result<Action> {
    let ctx = &pctx.ctx;
    let _timer = ctx.metrics.reconcile_started("WorkerPool");
    let ns = namespace(&*wp)?;
    let key = ObjectRef::from_obj(&*wp);
    if wp.metadata.deletion_timestamp.is_some() {
        pctx.autoscaler.unregister(&key).await;
        return Ok(Action::await_change());
    }
    let result = apply_all(&wp, &pctx, &ns).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&Backoff::key(&*wp));
    }
    if let Err(err) = &result {
        ctx.metrics
            .reconcile_failed("WorkerPool", err.metric_label());
        let (event_type, reason, status) = match err {
            Error::Broker(broker::ResolveError::NotFound(msg)) => (
                EventType::Warning,
                "BrokerNotFound",
                status::broker_unresolved(&wp, "BrokerNotFound", msg, Timestamp::now()),
            ),
            Error::Broker(broker::ResolveError::Pending(msg)) => (
                EventType::Normal,
                WAITING_FOR_BROKER,
                status::broker_unresolved(&wp, WAITING_FOR_BROKER, msg, Timestamp::now()),
            ),
            other => (
                EventType::Warning,
                "ReconcileFailed",
                status::failed(&wp, "ReconcileFailed", other.to_string(), Timestamp::now()),
            ),
        };
        ctx.publish(&*wp, event_type, reason, "Reconcile", err.to_string());
        write_status(&ctx.client, &*wp, &ns, wp.status.as_ref(), status).await?;
    }
    result
}

/// Replicas while the broker's RedisCache is not Ready: no new worker starts (a Celery
/// worker started while its broker does not answer sometimes never consumes, even after the
/// broker comes up), and the running ones stay (they reconnect on their own).
fn hold_for_broker(desired: i32, running: i32) -> i32 {
    desired.min(running)
}

/// The autoscaling policy of a spec, defaults applied; the error names the field.
pub fn policy(a: &Autoscaling, concurrency: Option<i32>) -> Result<(Policy, Duration), String> {
    let duration =
        |field: &str, value: &Option<String>, default: u64| -> Result<Duration, String> {
            match value {
                None => Ok(Duration::from_secs(default)),
                Some(v) => Interval::parse(v)
                    .map(|i| Duration::from_secs(u64::try_from(i.seconds()).unwrap_or(1)))
                    .map_err(|e| format!("spec.autoscaling.{field}: {e}")),
            }
        };
    let non_negative = |v: i32| u32::try_from(v).unwrap_or(0);
    let policy = Policy {
        min_replicas: non_negative(a.min_replicas.unwrap_or(1)),
        max_replicas: non_negative(a.max_replicas),
        target_tasks_per_replica: non_negative(
            a.target_tasks_per_replica.or(concurrency).unwrap_or(1),
        )
        .max(1),
        scale_down_stabilization: duration(
            "scaleDownStabilization",
            &a.scale_down_stabilization,
            60,
        )?,
        idle_before_scale_to_zero: duration(
            "idleBeforeScaleToZero",
            &a.idle_before_scale_to_zero,
            300,
        )?,
    };
    let poll = duration("pollInterval", &a.poll_interval, 1)?;
    Ok((policy, poll))
}

async fn apply_all(wp: &WorkerPool, pctx: &PoolContext, ns: &str) -> Result<Action> {
    let ctx = &pctx.ctx;
    let name = wp.name_any();
    let c = &ctx.client;
    let key = ObjectRef::from_obj(wp);
    // Workers that would exit 2 at start are never rolled out.
    if let Some(problem) = deployment::extra_args_problems(&wp.spec).into_iter().next() {
        return Err(Error::InvalidSpec(problem));
    }
    let broker = broker::resolve(ctx, ns, "spec.broker", &wp.spec.broker).await?;
    let mut url_env = broker::url_env("CELERY_BROKER_URL", &broker.broker);
    let mut secret_versions = BTreeMap::from([broker.secret.clone()]);
    if let Some(rb) = &wp.spec.result_backend {
        let b = broker::resolve(ctx, ns, "spec.resultBackend", rb).await?;
        url_env.extend(broker::url_env("CELERY_RESULT_BACKEND", &b.broker));
        secret_versions.insert(b.secret.0, b.secret.1);
    }
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let (replicas, measurement) = match &wp.spec.autoscaling {
        None => {
            pctx.autoscaler.unregister(&key).await;
            (wp.spec.replicas.unwrap_or(1), None)
        }
        Some(a) => {
            let (policy, poll_interval) =
                policy(a, wp.spec.concurrency).map_err(Error::InvalidSpec)?;
            let target = Target {
                namespace: ns.to_string(),
                name: name.clone(),
                url: broker.url.clone(),
                keys: load::PoolKeys {
                    queues: wp.spec.queues.clone(),
                    transport: TransportOptionsSpec::resolve(wp.spec.transport_options.as_ref()),
                },
                policy: policy.clone(),
                poll_interval,
            };
            let measurement = pctx.autoscaler.measurement(&key).await;
            // Before the first reading, keep what runs (or start at the minimum); what runs
            // also seeds the autoscaler after a restart or failover.
            let running = match &measurement {
                Some(_) => None,
                None => deployments
                    .get_opt(&name)
                    .await?
                    .and_then(|d| d.spec)
                    .and_then(|s| s.replicas)
                    .and_then(|r| u32::try_from(r).ok()),
            };
            pctx.autoscaler.register(key.clone(), target, running).await;
            let replicas = match (&measurement, running) {
                (Some(m), _) => m.decision.desired,
                (None, Some(r)) => r,
                (None, None) => policy.min_replicas,
            };
            (i32::try_from(replicas).unwrap_or(i32::MAX), measurement)
        }
    };
    let replicas = if broker.ready {
        replicas
    } else {
        let running = deployments
            .get_opt(&name)
            .await?
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        let held = hold_for_broker(replicas, running);
        if held < replicas {
            ctx.publish(
                wp,
                EventType::Normal,
                WAITING_FOR_BROKER,
                "Scale",
                format!(
                    "holding {held} of {replicas} replicas until the broker's RedisCache is Ready"
                ),
            );
        }
        held
    };
    let desired = deployment::build(deployment::Inputs {
        owner: &OwnedBy::new(wp, APP, "worker")?,
        spec: &wp.spec,
        replicas,
        url_env,
        secret_versions,
    });
    let applied = apply_and_report(ctx, wp, &deployments, &desired).await?;
    let autoscaled = wp.spec.autoscaling.as_ref().map(|_| measurement.as_ref());
    let new_status = status::observed(wp, &applied, autoscaled, Timestamp::now());
    if wp.spec.autoscaling.is_some() {
        let was_active = is_true(wp.conditions(), status::SCALING_ACTIVE);
        if let Some(err) = measurement
            .as_ref()
            .and_then(|m| m.error.as_ref())
            .filter(|_| was_active)
        {
            ctx.publish(
                wp,
                EventType::Warning,
                "BrokerUnreachable",
                "Autoscale",
                format!("holding {replicas} replicas: {err}"),
            );
        }
    }
    write_status(c, wp, ns, wp.status.as_ref(), new_status).await?;
    Ok(Action::await_change())
}
