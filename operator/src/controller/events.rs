//! Events leave through one queue, posted a few at a time. A reconcile never waits on an
//! event, and a burst (hundreds of tasks told the same thing after a restart) costs the API
//! server a few connections, not one each. A queue that is full drops what does not fit
//! and counts it, as client-go's event broadcaster does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, mpsc};

/// Events waiting to be posted; more are dropped (and counted).
const QUEUED: usize = 1024;
/// Event posts in flight at once.
const POSTS_IN_FLIGHT: usize = 4;

pub(crate) struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
    dropped: Counter,
    /// Set while events are being dropped, so a burst logs once.
    dropping: AtomicBool,
}

impl EventQueue {
    /// Starts posting through `recorder`; needs a tokio runtime.
    pub(crate) fn start(recorder: Recorder, dropped: Counter) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED);
        tokio::spawn(post_all(recorder, rx));
        Self {
            tx,
            dropped,
            dropping: AtomicBool::new(false),
        }
    }

    pub(crate) fn push(&self, event: Event, regarding: ObjectReference) {
        match self.tx.try_send((event, regarding)) {
            Ok(()) => self.dropping.store(false, Ordering::Relaxed),
            Err(err) => {
                self.dropped.inc();
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    let (event, regarding) = err.into_inner();
                    tracing::warn!(
                        reason = %event.reason,
                        name = regarding.name.as_deref().unwrap_or_default(),
                        "event queue full ({QUEUED}); dropping events until it drains (counted in celery_operator_events_dropped_total)"
                    );
                }
            }
        }
    }
}

async fn post_all(recorder: Recorder, mut rx: mpsc::Receiver<(Event, ObjectReference)>) {
    let posts = Arc::new(Semaphore::new(POSTS_IN_FLIGHT));
    while let Some((event, regarding)) = rx.recv().await {
        let Ok(permit) = posts.clone().acquire_owned().await else {
            return;
        };
        let recorder = recorder.clone();
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&event, &regarding).await {
                tracing::warn!(
                    kind = regarding.kind.as_deref().unwrap_or_default(),
                    name = regarding.name.as_deref().unwrap_or_default(),
                    error = %err,
                    "could not publish event"
                );
            }
            drop(permit);
        });
    }
}
