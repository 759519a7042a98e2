//! RedisCache controller: ConfigMap (redis.conf), password and connection Secrets, headless
//! and client Services, StatefulSet and PodDisruptionBudget; with replication also the
//! Sentinels' StatefulSet and Services, and the primary's role label.

pub mod config_map;
mod directives;
pub(crate) mod password;
pub(crate) mod pdb;
pub(crate) mod primary;
pub(crate) mod roll;
pub mod secrets;
pub(crate) mod sentinel_stateful_set;
pub(crate) mod services;
pub mod settings;
pub mod stateful_set;
pub(crate) mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::ResourceExt;
use kube::api::{EvictParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;

use super::apply::{apply_and_report, write_status};
use super::conditions::Status;
use super::labels::{OwnedBy, namespace, owned_objects};
use super::{Backoff, Context, Error, Result, requeue_failed};
use crate::api::redis_cache::{Purpose, RedisCache};
use primary::PrimaryView;
use settings::{AuthSettings, Settings};

const APP: &str = "redis";
/// The Sentinels' app label: their selector must never match the Redis pods'.
const SENTINEL_APP: &str = "redis-sentinel";

/// Watches RedisCaches and the objects they own (only those labelled as ours).
pub async fn run(ctx: Arc<Context>) {
    let owned = owned_objects();
    let controller = Controller::new(ctx.watched::<RedisCache>(), watcher::Config::default());
    let store = controller.store();
    controller
        .owns(ctx.watched::<StatefulSet>(), owned.clone())
        .owns(ctx.watched::<ConfigMap>(), owned.clone())
        .owns(ctx.watched::<Secret>(), owned.clone())
        .owns(ctx.watched::<Service>(), owned.clone())
        .owns(ctx.watched::<PodDisruptionBudget>(), owned)
        .reconcile_on(existing_secret_changes(&ctx, store))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(error = %err, "RedisCache reconcile failed");
            }
        })
        .await;
}

/// The caches whose `auth.existingSecret` changed (a new password to rotate to); the
/// generated password Secret is owned, and watched as such.
fn existing_secret_changes(
    ctx: &Context,
    caches: reflector::Store<RedisCache>,
) -> impl futures::Stream<Item = ObjectRef<RedisCache>> + Send + 'static {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let mut changes = ctx.secrets.changes();
    tokio::spawn(async move {
        loop {
            let (ns, name) = match changes.recv().await {
                Ok(key) => key,
                // Fell behind: the next change comes anyway.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            for rc in caches.state() {
                let reads = rc.spec.auth.enabled
                    && rc
                        .spec
                        .auth
                        .existing_secret
                        .as_ref()
                        .is_some_and(|r| r.name == name);
                if rc.namespace().as_deref() == Some(ns.as_str())
                    && reads
                    && tx.unbounded_send(ObjectRef::from_obj(&*rc)).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

fn error_policy(rc: Arc<RedisCache>, err: &Error, ctx: Arc<Context>) -> Action {
    requeue_failed(&ctx, &*rc, err)
}

async fn reconcile(rc: Arc<RedisCache>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("RedisCache");
    let result = apply_all(&rc, &ctx).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&Backoff::key(&*rc));
    }
    if let Err(err) = &result {
        ctx.metrics
            .reconcile_failed("RedisCache", err.metric_label());
        let reason = match err {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingSecret(_) => "SecretMissing",
            _ => "ReconcileFailed",
        };
        ctx.publish(
            &*rc,
            EventType::Warning,
            reason,
            "Reconcile",
            err.to_string(),
        );
        let ns = namespace(&*rc)?;
        let status = status::failed(&rc, reason, err.to_string(), Timestamp::now());
        write_status(&ctx.client, &*rc, &ns, rc.status.as_ref(), status).await?;
    }
    result
}

async fn apply_all(rc: &RedisCache, ctx: &Context) -> Result<Action> {
    let settings = settings::resolve(&rc.spec).map_err(Error::InvalidSpec)?;
    let component = match settings.purpose {
        Purpose::Broker => "broker",
        Purpose::Cache => "cache",
    };
    let owner = OwnedBy::new(rc, APP, component)?;
    let ns = &owner.namespace;

    let wanted = ensure_password(ctx, rc, &owner, &settings).await?;
    let redis_conf = config_map::render_redis_conf(&settings);

    let c = &ctx.client;
    let cm = config_map::build(&owner, &redis_conf);
    apply_and_report(ctx, rc, &Api::namespaced(c.clone(), ns), &cm).await?;
    let replicated = settings.replication.is_some();
    let sentinel_owner = OwnedBy::new(rc, SENTINEL_APP, "sentinel")?;
    let sentinel = replicated.then_some(&sentinel_owner);
    let connection_secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let (password, rotation) = match wanted {
        Some(wanted) => {
            let connection = connection_secrets
                .get_opt(&secrets::connection_secret_name(&owner.name))
                .await?;
            let (in_use, rotation) =
                password::rotate(ctx, rc, &owner, &settings, &wanted, connection.as_ref()).await?;
            (Some(in_use), rotation)
        }
        None => (None, None),
    };
    let conn = secrets::build_connection_secret(&owner, password.as_deref(), replicated);
    apply_and_report(ctx, rc, &connection_secrets, &conn).await?;
    for svc in services::build(&owner, sentinel) {
        apply_and_report(ctx, rc, &Api::namespaced(c.clone(), ns), &svc).await?;
    }
    if let Some(sts) = sentinel_stateful_set::build(&owner, &sentinel_owner, &settings)
        .map_err(Error::InvalidSpec)?
    {
        apply_and_report(ctx, rc, &Api::namespaced(c.clone(), ns), &sts).await?;
    }
    let sts = stateful_set::build(stateful_set::Inputs {
        owner: &owner,
        settings: &settings,
        config_checksum: config_map::checksum(&redis_conf),
        resources: rc.spec.resources.clone(),
        pod: rc.spec.pod.as_ref(),
    })
    .map_err(Error::InvalidSpec)?;
    let sts = apply_and_report(ctx, rc, &Api::namespaced(c.clone(), ns), &sts).await?;
    let budget = pdb::build(&owner, owner.name.clone(), settings.purpose, replicated);
    apply_and_report(ctx, rc, &Api::namespaced(c.clone(), ns), &budget).await?;
    if let Some(sentinel) = sentinel {
        let name = services::sentinel_name(&owner.name);
        let budget = pdb::build(sentinel, name, settings.purpose, true);
        apply_and_report(ctx, rc, &Api::namespaced(c.clone(), ns), &budget).await?;
    }

    let mut replicas = Vec::new();
    let primary = match &settings.replication {
        Some(r) => {
            let pw = password.as_deref();
            let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
            let listed = pods
                .list(&ListParams::default().labels(&label_selector(&owner.selector)))
                .await?
                .items;
            let view = primary::ask(&owner, pw).await;
            if let PrimaryView::Named(primary) = &view {
                primary::label(&pods, &listed, &owner.name, 1 + r.replicas, primary).await?;
                roll_step(ctx, rc, &owner, pw, (&pods, &listed), &sts, primary).await?;
                // Unanswered (a failover going on): none shown until the next look.
                replicas = primary::replicas(&owner, pw).await.unwrap_or_default();
            }
            Some(view)
        }
        None => None,
    };
    let rotating = rotation.as_ref().is_some_and(|c| c.status != Status::True);
    let learnt = status::FromServers {
        primary: primary.as_ref(),
        replicas,
        rotation,
    };
    let status = status::observed(rc, ns, &sts, learnt, Timestamp::now());
    write_status(c, rc, ns, rc.status.as_ref(), status).await?;
    Ok(if rotating {
        Action::requeue(password::LOOK_EVERY)
    } else if primary.is_some() {
        // Sentinel fails over without telling the API server: look again.
        Action::requeue(primary::LOOK_EVERY)
    } else {
        Action::await_change()
    })
}

/// One step of rolling the Redis pods to the StatefulSet's revision (see [`roll`]): at most
/// one pod replaced or one failover per reconcile, which comes back every few seconds.
async fn roll_step(
    ctx: &Context,
    rc: &RedisCache,
    owner: &OwnedBy,
    password: Option<&str>,
    (pods, listed): (&Api<Pod>, &[Pod]),
    sts: &StatefulSet,
    primary: &str,
) -> Result<()> {
    let status = sts.status.as_ref();
    let Some(revision) = status.and_then(|s| s.update_revision.as_deref()) else {
        return Ok(());
    };
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    // Unknown counts as none in sync: the roll waits rather than risk the last good copy.
    let in_sync = primary::replicas_in_sync(owner, password)
        .await
        .unwrap_or(0);
    match roll::next(listed, want, revision, primary, in_sync) {
        roll::Step::Replace(pod) => match pods.evict(&pod, &EvictParams::default()).await {
            Ok(_) => ctx.publish(
                rc,
                EventType::Normal,
                "Rolling",
                "Roll",
                format!("Replacing replica {pod} to run revision {revision}"),
            ),
            // The disruption budget says not now: the next look tries again.
            Err(kube::Error::Api(s)) if s.code == 429 => {}
            Err(e) => return Err(e.into()),
        },
        roll::Step::FailOver => match primary::fail_over(owner, password).await {
            Ok(()) => ctx.publish(
                rc,
                EventType::Normal,
                "FailingOver",
                "Roll",
                format!(
                    "Every replica runs revision {revision}: asking the Sentinels to promote one in place of {primary}"
                ),
            ),
            Err(err) => ctx.publish(
                rc,
                EventType::Warning,
                "FailoverFailed",
                "Roll",
                format!("The Sentinels refused a failover ({err}); trying again"),
            ),
        },
        roll::Step::Done | roll::Step::Wait => {}
    }
    Ok(())
}

/// `k=v,...`: the label selector of `labels`.
fn label_selector(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The password (None without auth). A generated one is created once and then only read,
/// so neither a reconcile nor an operator restart rotates it.
async fn ensure_password(
    ctx: &Context,
    rc: &RedisCache,
    owner: &OwnedBy,
    settings: &Settings,
) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let value = |secret: &Secret, name: &str, key: &str| {
        secrets::secret_value(secret, key)
            .map(Some)
            .ok_or_else(|| Error::MissingSecret(format!("Secret {name} has no key {key}")))
    };
    let secret_name = match &settings.auth {
        AuthSettings::Disabled => return Ok(None),
        AuthSettings::Existing(r) => {
            // Read through the read cache, whose watch brings this cache back when the
            // Secret changes: that starts a rotation.
            let secret = ctx
                .secrets
                .get_opt(&owner.namespace, &r.name)
                .await
                .map_err(Error::KubeRead)?
                .ok_or_else(|| {
                    Error::MissingSecret(format!(
                        "spec.auth.existingSecret: Secret {} not found",
                        r.name
                    ))
                })?;
            return value(&secret, &r.name, &r.key);
        }
        AuthSettings::Generated => secrets::password_secret_name(&owner.name),
    };
    let key = secrets::PASSWORD_KEY;
    if let Some(secret) = secrets.get_opt(&secret_name).await? {
        return value(&secret, &secret_name, key);
    }
    let password = secrets::generate_password();
    let secret = secrets::build_password_secret(owner, &password);
    match secrets
        .create(
            &PostParams {
                field_manager: Some(super::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(_) => {
            ctx.publish(
                rc,
                EventType::Normal,
                "Created",
                "GeneratePassword",
                format!("Created Secret {secret_name} with a generated password"),
            );
            Ok(Some(password))
        }
        // Another reconcile won the race: use its password, never ours.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            value(&secrets.get(&secret_name).await?, &secret_name, key)
        }
        Err(e) => Err(e.into()),
    }
}
