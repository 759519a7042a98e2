//! One firing of one task: a pending run-now request, then the due slots under the missed
//! run policy, each message stamped and handed to the push thread; and the connectivity
//! probe that tells `BrokerReachable` before the first slot.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::concurrency::{self, Held};
use super::engine::{Job, Key, PushedRun, Shared};
use super::plan::run_now_task_id;
use super::run_state::RunState;
use super::slots::{self, MAX_DEDUPE_TTL};
use crate::api::periodic_task::ConcurrencyPolicy;
use crate::broker::{BrokerError, BrokerUrl, PublishOutcome, Push, RunCounter};
use crate::celery::message::{EncodeError, EncodedMessage};
use crate::celery::{Field, run_now_marks_key, slot_marks_key, task_id_for_slot};
use crate::metrics::FailureLabels;

/// Marks of run-now requests live as long as any mark (annotation values are not reused).
pub(super) const RUN_NOW_TTL: Duration = MAX_DEDUPE_TTL;

/// What one firing (or a connectivity probe) did.
pub(crate) struct Fired {
    pub(crate) key: Key,
    pub(crate) uid: String,
    pub(crate) probe: bool,
    /// The entry's runs when the firing started, moved on by what it pushed.
    pub(crate) runs: RunState,
    pub(crate) error: Option<FireError>,
    /// A message that could not be built (it is never pushed).
    pub(crate) message_error: Option<String>,
    /// Due slots were dropped by the policy or the deadline.
    pub(crate) skipped: bool,
    pub(crate) pushed: Vec<PushedRun>,
    /// What the concurrency policy did.
    pub(crate) held: Option<Held>,
}

impl Fired {
    pub(crate) fn new(key: Key, uid: String, probe: bool, runs: RunState) -> Self {
        Self {
            key,
            uid,
            probe,
            runs,
            error: None,
            message_error: None,
            skipped: false,
            pushed: Vec::new(),
            held: None,
        }
    }
}

impl Fired {
    /// The slots the policy held back, as runs with their reason.
    pub(crate) fn skipped_runs(&self) -> Vec<(PushedRun, String)> {
        match &self.held {
            Some(Held::Skipped {
                slots,
                previous,
                state,
            }) => slots
                .iter()
                .map(|(due, task_id)| {
                    (
                        PushedRun {
                            task_id: task_id.clone(),
                            due: *due,
                        },
                        Held::skip_reason(previous, *state),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) enum FireError {
    Broker(BrokerError),
}

/// What a firing needs of the entry it fires.
pub(crate) struct Firing {
    pub(crate) key: Key,
    pub(crate) job: Arc<Job>,
    pub(crate) runs: RunState,
    pub(crate) cursor: Option<DateTime<Utc>>,
    pub(crate) run_now: Option<String>,
}

pub(crate) async fn fire(firing: Firing, shared: Arc<Shared>, done: mpsc::UnboundedSender<Fired>) {
    let Firing {
        key,
        job,
        runs,
        cursor,
        run_now,
    } = firing;
    let mut out = Fired::new(key, job.plan.uid.clone(), false, runs);
    if let Err(err) = push_due(&job, cursor, run_now, &shared, &mut out).await {
        shared.stats.failed();
        if let Some(m) = &shared.metrics {
            m.push_failures
                .get_or_create(&FailureLabels {
                    reason: err.metric_label().into(),
                })
                .inc();
        }
        out.error = Some(FireError::Broker(err));
    }
    let _ = done.send(out);
}

async fn push_due(
    job: &Job,
    cursor: Option<DateTime<Utc>>,
    run_now: Option<String>,
    shared: &Shared,
    out: &mut Fired,
) -> Result<(), BrokerError> {
    let plan = &job.plan;
    let prefix = &plan.transport.global_key_prefix;
    let push = |marks_key, id: Uuid, mark_ttl, enc: EncodedMessage, seed| Push {
        key_prefix: prefix.clone(),
        marks_key,
        task_id: id.to_string(),
        mark_ttl,
        queue_key: enc.queue_key,
        envelope: enc.envelope,
        counter: RunCounter {
            uid: plan.uid.clone(),
            seed,
        },
    };
    let url = &job.url;
    if let Some(value) = run_now {
        let id = run_now_task_id(&plan.uid, &value);
        let now = Utc::now();
        match plan.template.encode(&plan.transport, id, now, now) {
            Ok(enc) => {
                let p = push(
                    run_now_marks_key(prefix, &plan.uid),
                    id,
                    RUN_NOW_TTL,
                    enc,
                    out.runs.total_runs,
                );
                let (published, acked) = shared.pusher.push(url, now, p).await?;
                count(shared, published.outcome, None, acked);
                out.runs.total_runs = published.runs;
                out.runs.last_task_id = Some(id.to_string());
                out.pushed.push(PushedRun {
                    task_id: id.to_string(),
                    due: now,
                });
            }
            Err(e) => out.message_error = Some(e.to_string()),
        }
        out.runs.last_run_now = Some(value);
    }
    if plan.suspend {
        return Ok(());
    }
    // The timer wakes `lead` early: messages are built before their slot, so at the slot
    // only the push is left.
    let due = slots::due(plan, cursor, Utc::now() + shared.lead());
    out.skipped = due.skipped;
    let mut ready = Vec::with_capacity(due.slots.len());
    for slot in due.slots {
        let id = match task_id_for_slot(&plan.uid, &slot) {
            Ok(id) => id,
            Err(e) => {
                out.message_error = Some(e.to_string());
                out.runs.last_slot = Some(slot);
                continue;
            }
        };
        match plan.encode_run(id, slot, Utc::now()) {
            Ok(enc) => ready.push((slot, id, Some(enc))),
            // Late enough that it would expire before a worker sees it: a missed run.
            Err(EncodeError::Invalid(v)) if v.field == Field::Expires => {
                out.skipped = true;
                shared.stats.skipped(1);
                ready.push((slot, id, None));
            }
            Err(e) => {
                out.message_error = Some(e.to_string());
                ready.push((slot, id, None));
            }
        }
    }
    if job.plan.concurrency != ConcurrencyPolicy::Allow {
        let pushable: Vec<(DateTime<Utc>, String)> = ready
            .iter()
            .filter(|(_, _, enc)| enc.is_some())
            .map(|(slot, id, _)| (*slot, id.to_string()))
            .collect();
        if !pushable.is_empty()
            && let Some(held) = concurrency::hold(job, shared, &out.runs, pushable).await?
        {
            let skipped = matches!(held, Held::Skipped { .. });
            if let Held::Skipped { slots, .. } = &held {
                out.runs.skipped_runs += slots.len() as i64;
                out.runs.last_slot = due.newest.max(out.runs.last_slot);
            }
            out.held = Some(held);
            if skipped {
                return Ok(());
            }
        }
    }
    for (slot, id, enc) in ready {
        if let Some(enc) = enc {
            let p = push(
                slot_marks_key(prefix, &slot),
                id,
                plan.dedupe_ttl,
                enc,
                out.runs.total_runs,
            );
            let (published, acked) = shared.pusher.push(url, slot, p).await?;
            count(shared, published.outcome, Some(slot), acked);
            out.runs.total_runs = published.runs;
            out.runs.last_task_id = Some(id.to_string());
            out.pushed.push(PushedRun {
                task_id: id.to_string(),
                due: slot,
            });
        }
        out.runs.last_slot = Some(slot);
    }
    if due.newest > out.runs.last_slot {
        out.runs.last_slot = due.newest;
    }
    Ok(())
}

/// Lateness is the broker's acknowledgement minus the slot.
fn count(
    shared: &Shared,
    outcome: PublishOutcome,
    slot: Option<DateTime<Utc>>,
    acked: DateTime<Utc>,
) {
    match outcome {
        PublishOutcome::Pushed => {
            let lateness = slot
                .and_then(|s| (acked - s).to_std().ok())
                .unwrap_or(Duration::ZERO);
            if slot.is_some() {
                shared.stats.pushed(lateness);
                tracing::trace!(lateness_us = lateness.as_micros() as u64, "pushed");
            } else {
                shared.stats.pushed_unscheduled();
            }
            if let Some(m) = &shared.metrics {
                m.pushes.inc();
                if slot.is_some() {
                    m.schedule_lateness.observe(lateness.as_secs_f64());
                }
            }
        }
        PublishOutcome::Duplicate => shared.stats.duplicate(),
    }
}

/// How often a broker whose pushes fail is tried; its tasks resume within this of its return.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// One PING over the broker's shared connection.
async fn ping(shared: &Shared, url: &BrokerUrl) -> Result<(), BrokerError> {
    let mut conn = shared.conns.get(url).await?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(drop)
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))
}

/// Connects (and PINGs) so BrokerReachable is known before the first slot.
pub(crate) async fn probe(
    key: Key,
    job: Arc<Job>,
    shared: Arc<Shared>,
    done: mpsc::UnboundedSender<Fired>,
) {
    let result = ping(&shared, &job.url).await;
    // A probe moves no run (the entry ignores its runs).
    let mut out = Fired::new(key, job.plan.uid.clone(), true, RunState::default());
    out.error = result.err().map(FireError::Broker);
    let _ = done.send(out);
}

/// While a broker's pushes fail: one PING per [`WATCH_INTERVAL`] for the broker (not per
/// task), and word on `back` once it answers, so every waiting task retries at once instead
/// of at the end of its own backoff (under Skip and RunOnce those seconds are lost slots).
pub(crate) async fn watch_broker(
    url: BrokerUrl,
    shared: Arc<Shared>,
    back: mpsc::UnboundedSender<BrokerUrl>,
) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if ping(&shared, &url).await.is_ok() {
            let _ = back.send(url);
            return;
        }
    }
}
