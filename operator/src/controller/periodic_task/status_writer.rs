//! The status writer: merges what reconciles saw and what the engine did into each task's
//! status, and writes it. Coalesced (at most one write in flight per task, the latest
//! wins) and rate-limited over all tasks, so pushes never wait for status and status never
//! floods the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::engine::{Engine, Key, Report};
use super::status::{self, Seen};
use crate::api::periodic_task::{PeriodicTask, PeriodicTaskStatus};
use crate::controller::apply::write_status;
use crate::controller::{Context, Error};

/// Status writes per second over all tasks. Every write costs the API server, etcd and
/// every watcher; under load writes coalesce (latest wins), so a status lags a little
/// instead of the API server eating the CPU the beat needs.
pub(crate) const STATUS_WRITES_PER_SECOND: f64 = 100.0;

/// What the writer learns about a task.
pub(crate) enum Observation {
    /// What a reconcile saw of the object.
    Reconciled(Arc<PeriodicTask>, Seen),
    /// What the engine did.
    Report(Report),
}

/// Shared by reconciles, the report consumer and the per-task writers.
pub(crate) struct StatusWriter {
    ctx: Arc<Context>,
    engine: Engine,
    cells: Mutex<HashMap<Key, Cell>>,
    writes: TokenBucket,
}

/// What is known about one task, for its status.
struct Cell {
    obj: Arc<PeriodicTask>,
    seen: Seen,
    report: Option<Report>,
    written: Option<PeriodicTaskStatus>,
    writing: bool,
    dirty: bool,
}

impl StatusWriter {
    pub(crate) fn new(ctx: Arc<Context>, engine: Engine) -> Self {
        Self {
            ctx,
            engine,
            cells: Mutex::new(HashMap::new()),
            writes: TokenBucket::new(STATUS_WRITES_PER_SECOND),
        }
    }

    /// Records an observation (and the events of what changed), then makes sure a writer
    /// runs for the task.
    pub(crate) async fn observe(self: &Arc<Self>, key: Key, observation: Observation) {
        let (warn, events, obj, start_writer) = {
            let Ok(mut cells) = self.cells.lock() else {
                return;
            };
            let (cell, warn, events) = match observation {
                Observation::Reconciled(obj, seen) => {
                    let cell = cells.entry(key.clone()).or_insert_with(|| Cell {
                        obj: obj.clone(),
                        seen: Seen::default(),
                        report: None,
                        written: None,
                        writing: false,
                        dirty: false,
                    });
                    cell.obj = obj;
                    let warn = (seen != cell.seen).then(|| seen.warning()).flatten();
                    cell.seen = seen;
                    (cell, warn, Vec::new())
                }
                Observation::Report(mut report) => {
                    // A report for a task reconcile has not seen (or already forgot).
                    let Some(cell) = cells.get_mut(&key) else {
                        return;
                    };
                    let events = std::mem::take(&mut report.events);
                    cell.report = Some(report);
                    (cell, None, events)
                }
            };
            cell.dirty = true;
            let start = !cell.writing;
            cell.writing = true;
            (warn, events, cell.obj.clone(), start)
        };
        if let Some((reason, note)) = warn {
            self.ctx
                .publish(&*obj, EventType::Warning, reason, "Schedule", note)
                .await;
        }
        if !events.is_empty() {
            let ctx = self.ctx.clone();
            let obj = obj.clone();
            tokio::spawn(async move {
                for e in events {
                    ctx.publish(&*obj, e.type_, e.reason, "Push", e.note).await;
                }
            });
        }
        if start_writer {
            tokio::spawn(self.clone().write_loop(key));
        }
    }

    /// Whether the writer knows `key`.
    pub(crate) fn knows(&self, key: &Key) -> bool {
        self.cells.lock().is_ok_and(|c| c.contains_key(key))
    }

    /// The keys of every task the writer knows.
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.cells
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops firing a task and forgets it.
    pub(crate) fn remove(&self, key: &Key) {
        self.engine.remove(key.clone());
        if let Ok(mut cells) = self.cells.lock() {
            cells.remove(key);
        }
    }

    /// Writes the task's status until nothing new arrived meanwhile.
    async fn write_loop(self: Arc<Self>, key: Key) {
        loop {
            self.writes.acquire().await;
            let snapshot = {
                let Ok(mut cells) = self.cells.lock() else {
                    return;
                };
                let Some(cell) = cells.get_mut(&key) else {
                    return;
                };
                if !cell.dirty {
                    cell.writing = false;
                    return;
                }
                cell.dirty = false;
                // The object is only refreshed on spec changes: what we wrote last is newer.
                let old = cell.written.clone().or_else(|| cell.obj.status.clone());
                let new = status::build(
                    &cell.obj,
                    old.clone().unwrap_or_default(),
                    &cell.seen,
                    cell.report.as_ref(),
                    Timestamp::now(),
                );
                (cell.obj.clone(), old, new)
            };
            let (obj, old, new) = snapshot;
            let ns = obj.namespace().unwrap_or_default();
            match write_status(&self.ctx.client, &*obj, &ns, old.as_ref(), new.clone()).await {
                Ok(()) => {
                    if let Ok(mut cells) = self.cells.lock()
                        && let Some(cell) = cells.get_mut(&key)
                    {
                        cell.written = Some(new);
                    }
                }
                Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => {
                    // Deleted: stop firing it.
                    self.remove(&key);
                    return;
                }
                Err(err) => {
                    tracing::warn!(periodictask = %key, error = %err, "status write failed; retrying");
                    if let Ok(mut cells) = self.cells.lock()
                        && let Some(cell) = cells.get_mut(&key)
                    {
                        cell.dirty = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// A plain token bucket (burst = one second's worth).
struct TokenBucket {
    rate: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            state: tokio::sync::Mutex::new((rate, tokio::time::Instant::now())),
        }
    }

    async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = tokio::time::Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}
