//! concurrencyPolicy at a slot: whether the previous run has finished, read fresh from the
//! result backend right before the push (the followed outcomes may be seconds old), and the
//! revoke that Replace sends.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::engine::{Job, Shared};
use super::outcomes::PENDING_UNKNOWN_AFTER;
use super::run_state::RunState;
use crate::api::periodic_task::{ConcurrencyPolicy, TaskState};
use crate::broker::{BrokerError, BrokerUrl};
use crate::celery::result::{ResultMeta, result_key};
use crate::celery::revoke::{pidbox_channel, revoke_envelope};

/// What a policy did at one firing.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Held {
    /// Forbid: the due slots (slot, its task id) were not pushed.
    Skipped {
        slots: Vec<(DateTime<Utc>, String)>,
        previous: String,
        state: TaskState,
    },
    /// Replace: the previous run was revoked; `receivers` workers got the broadcast.
    Replaced {
        previous: String,
        state: TaskState,
        receivers: i64,
    },
}

impl Held {
    /// Why a skipped slot was not pushed, for its run in status and the event.
    pub(crate) fn skip_reason(previous: &str, state: TaskState) -> String {
        format!(
            "the previous run {previous} is {} (concurrencyPolicy Forbid)",
            state.as_str()
        )
    }
}

/// The previous run's state when it has not finished: a state that is not final, or no
/// result yet for a run pushed less than [`PENDING_UNKNOWN_AFTER`] ago (after that, no key
/// means it will not be known: expired, ignored or lost).
fn unfinished(
    meta: Option<&ResultMeta>,
    pushed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<TaskState> {
    match meta {
        Some(m) => (!m.state.is_final()).then_some(m.state),
        None => pushed
            .is_some_and(|p| now - p < PENDING_UNKNOWN_AFTER)
            .then_some(TaskState::Pending),
    }
}

/// Reads the previous run's result. A backend that cannot be read is said as an error;
/// the caller pushes anyway (a policy never makes a slot wait for a second Redis).
async fn read_previous(
    shared: &Shared,
    results: &BrokerUrl,
    task_id: &str,
) -> Result<Option<ResultMeta>, BrokerError> {
    let mut conn = shared.conns.get(results).await?;
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(result_key(task_id))
        .query_async(&mut conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))?;
    Ok(raw.and_then(|r| ResultMeta::parse(&r).ok()))
}

/// Publishes the revoke of `task_id` to the workers of broker `url`; returns how many got it.
async fn revoke(
    shared: &Shared,
    url: &BrokerUrl,
    global_key_prefix: &str,
    task_id: &str,
) -> Result<i64, BrokerError> {
    let db = url.database();
    let mut conn = shared.conns.get(url).await?;
    redis::cmd("PUBLISH")
        .arg(pidbox_channel(global_key_prefix, db))
        .arg(revoke_envelope(task_id, Uuid::new_v4(), Utc::now()))
        .query_async(&mut conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))
}

/// Applies the policy before `slots` (slot, task id) are pushed: Forbid holds them back
/// while the previous run has not finished, Replace revokes that run first. None: push.
pub(crate) async fn hold(
    job: &Job,
    shared: &Shared,
    runs: &RunState,
    slots: Vec<(DateTime<Utc>, String)>,
) -> Result<Option<Held>, BrokerError> {
    let plan = &job.plan;
    if plan.concurrency == ConcurrencyPolicy::Allow {
        return Ok(None);
    }
    let (Some(results), Some(previous)) = (&job.results, &runs.last_task_id) else {
        return Ok(None);
    };
    let meta = match read_previous(shared, results, previous).await {
        Ok(meta) => meta,
        Err(err) => {
            tracing::warn!(error = %err, task_id = %previous, "cannot read the previous run's result: pushing as under Allow");
            return Ok(None);
        }
    };
    let Some(state) = unfinished(meta.as_ref(), runs.last_slot, Utc::now()) else {
        return Ok(None);
    };
    let previous = previous.clone();
    Ok(Some(match plan.concurrency {
        ConcurrencyPolicy::Allow | ConcurrencyPolicy::Forbid => Held::Skipped {
            slots,
            previous,
            state,
        },
        ConcurrencyPolicy::Replace => Held::Replaced {
            receivers: revoke(
                shared,
                &job.url,
                &plan.transport.global_key_prefix,
                &previous,
            )
            .await?,
            previous,
            state,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn meta(state: TaskState) -> ResultMeta {
        ResultMeta::of(state)
    }

    #[test]
    fn waiting_running_and_retrying_are_unfinished_final_states_and_old_silence_are_not() {
        let now = DateTime::from_timestamp(1_900_000_000, 0).expect("ts");
        let recent = Some(now - TimeDelta::seconds(30));
        for state in [TaskState::Started, TaskState::Retry, TaskState::Pending] {
            assert_eq!(unfinished(Some(&meta(state)), recent, now), Some(state));
        }
        for state in [TaskState::Success, TaskState::Failure, TaskState::Revoked] {
            assert_eq!(unfinished(Some(&meta(state)), recent, now), None);
        }
        // No key: waiting in the queue (or running untracked) until the bound.
        assert_eq!(unfinished(None, recent, now), Some(TaskState::Pending));
        assert_eq!(
            unfinished(None, Some(now - PENDING_UNKNOWN_AFTER), now),
            None,
            "an hour of silence is unknown, not running"
        );
        assert_eq!(unfinished(None, None, now), None);
    }
}
