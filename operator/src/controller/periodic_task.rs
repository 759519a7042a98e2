//! PeriodicTask controller. The schedule engine (the beat) is not wired in yet; until it is,
//! the controller only observes PeriodicTasks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Context, Error, Result};
use crate::api::PeriodicTask;

pub async fn run(ctx: Arc<Context>) {
    Controller::new(ctx.watched::<PeriodicTask>(), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(pt: Arc<PeriodicTask>, _ctx: Arc<Context>) -> Result<Action> {
    tracing::debug!(periodictask = %pt.name_any(), namespace = pt.namespace().unwrap_or_default(), "observed");
    Ok(Action::await_change())
}

fn error_policy(_pt: Arc<PeriodicTask>, _err: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(30))
}
