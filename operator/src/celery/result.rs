//! What a worker's Redis result backend says of a task: the value of
//! `celery-task-meta-<task id>` (SPEC.md §5, pinned by the `result_meta_*` captures). Pure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The result key of a task. The broker's `global_keyprefix` does not apply to it.
pub(crate) fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

/// An exception's message in status is cut to this many characters (its first line only).
pub(crate) const MAX_EXCEPTION_MESSAGE: usize = 200;

/// The state of one run, with Celery's names. `PENDING` is what Celery reports for a task
/// no worker wrote yet; `UNKNOWN` is ours: still nothing written after the wait the
/// operator allows (an expired result, `ignore_result`, or a lost message look the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Pending,
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
    Unknown,
    /// Ours: never pushed, the slot was skipped (concurrencyPolicy Forbid).
    Skipped,
}

impl TaskState {
    /// Nothing changes a final state (Celery's READY_STATES, and our UNKNOWN).
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failure
                | TaskState::Revoked
                | TaskState::Unknown
                | TaskState::Skipped
        )
    }

    /// The name Celery uses, also the metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Started => "STARTED",
            TaskState::Retry => "RETRY",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
            TaskState::Unknown => "UNKNOWN",
            TaskState::Skipped => "SKIPPED",
        }
    }

    fn from_celery(status: &str) -> Option<Self> {
        Some(match status {
            "PENDING" => TaskState::Pending,
            "STARTED" => TaskState::Started,
            "RETRY" => TaskState::Retry,
            "SUCCESS" => TaskState::Success,
            "FAILURE" => TaskState::Failure,
            "REVOKED" => TaskState::Revoked,
            _ => return None,
        })
    }
}

/// What the operator keeps of a result value: never the return value, the arguments or
/// the traceback (they may hold anything, and the traceback holds the worker's paths).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ResultMeta {
    pub(crate) state: TaskState,
    pub(crate) date_done: Option<DateTime<Utc>>,
    /// For FAILURE, RETRY and REVOKED: `ValueError: bad input`, first line, bounded.
    pub(crate) exception: Option<String>,
    /// The attempt that wrote the value (only with `result_extended`).
    pub(crate) retries: Option<i64>,
    /// REVOKED as the revoke command writes it (`children: null`), not yet as a worker that
    /// discarded the message does: a worker that had already taken the message (or never
    /// heard of the revoke) still runs it and overwrites this.
    pub(crate) revoke_requested: bool,
}

#[cfg(test)]
impl ResultMeta {
    /// A value in `state` with nothing else written (tests).
    pub(crate) fn of(state: TaskState) -> Self {
        Self {
            state,
            date_done: None,
            exception: None,
            retries: None,
            revoke_requested: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum ResultError {
    #[error("the result value is not JSON")]
    NotJson,
    #[error("the result value has no known status")]
    UnknownStatus,
}

impl ResultMeta {
    /// Nothing will overwrite it: a final state, except a REVOKED only requested.
    pub(crate) fn settled(&self) -> bool {
        self.state.is_final() && !self.revoke_requested
    }

    pub(crate) fn parse(raw: &[u8]) -> Result<Self, ResultError> {
        let value: Value = serde_json::from_slice(raw).map_err(|_| ResultError::NotJson)?;
        let state = value["status"]
            .as_str()
            .and_then(TaskState::from_celery)
            .ok_or(ResultError::UnknownStatus)?;
        let date_done = value["date_done"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let exception = matches!(
            state,
            TaskState::Failure | TaskState::Retry | TaskState::Revoked
        )
        .then(|| exception_text(&value["result"]))
        .flatten();
        Ok(Self {
            revoke_requested: state == TaskState::Revoked && value["children"].is_null(),
            state,
            date_done,
            exception,
            retries: value["retries"].as_i64(),
        })
    }
}

/// `Type: first line of the first argument`, bounded, with any URL's credentials removed
/// (a connection error may quote the URL it failed on).
fn exception_text(result: &Value) -> Option<String> {
    let type_ = result["exc_type"].as_str()?;
    let message = match &result["exc_message"] {
        Value::Array(items) => items.first().map(plain_text),
        Value::Null => None,
        other => Some(plain_text(other)),
    }
    .unwrap_or_default();
    let line = message.lines().next().unwrap_or_default();
    let line = scrub_credentials(line);
    let text = if line.is_empty() {
        type_.to_string()
    } else {
        format!("{type_}: {line}")
    };
    Some(truncate(&text, MAX_EXCEPTION_MESSAGE))
}

fn plain_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `scheme://user:password@host` becomes `scheme://***@host`.
fn scrub_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/data/celery-wire/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).expect(&path)
    }

    #[test]
    fn the_captured_values_of_a_real_worker_parse_to_their_states() {
        let success = ResultMeta::parse(&capture("result_meta_success")).expect("success");
        assert_eq!(success.state, TaskState::Success);
        assert_eq!(
            success.date_done.map(|d| d.timestamp_micros()),
            Some(
                DateTime::parse_from_rfc3339("2026-11-27T03:10:16.691070+00:00")
                    .expect("t")
                    .timestamp_micros()
            )
        );
        assert_eq!(success.exception, None, "a return value is never kept");
        let failure = ResultMeta::parse(&capture("result_meta_failure")).expect("failure");
        assert_eq!(failure.state, TaskState::Failure);
        assert_eq!(
            failure.exception.as_deref(),
            Some("ValueError: bad input 'x=1'")
        );
        let retry = ResultMeta::parse(&capture("result_meta_retry")).expect("retry");
        assert_eq!(
            (retry.state, retry.date_done),
            (TaskState::Retry, None),
            "not final: no date_done"
        );
        assert_eq!(
            retry.exception.as_deref(),
            Some("ConnectionError: smtp down for bob@example.com")
        );
        let started = ResultMeta::parse(&capture("result_meta_started")).expect("started");
        assert_eq!(
            (started.state, started.exception),
            (TaskState::Started, None)
        );
        let revoked = ResultMeta::parse(&capture("result_meta_revoked")).expect("revoked");
        assert_eq!(revoked.state, TaskState::Revoked);
        assert_eq!(
            revoked.exception.as_deref(),
            Some("TaskRevokedError: revoked")
        );
        // Written by the revoke command: a worker may still run it and overwrite it.
        assert!(revoked.revoke_requested && !revoked.settled());
        let discarded =
            ResultMeta::parse(&capture("result_meta_revoked_discarded")).expect("discarded");
        assert_eq!(discarded.state, TaskState::Revoked);
        assert!(discarded.settled(), "written when the worker dropped it");
        assert!(success.settled() && failure.settled());
        let extended =
            ResultMeta::parse(&capture("result_meta_extended_success")).expect("extended");
        assert_eq!(extended.state, TaskState::Success);
    }

    #[test]
    fn the_attempt_of_each_retry_is_read_from_an_extended_result() {
        let sequence: Value =
            serde_json::from_slice(&capture("result_meta_retry_sequence")).expect("json");
        let read: Vec<(TaskState, Option<i64>)> = sequence["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| {
                let m = ResultMeta::parse(v["value"].to_string().as_bytes()).expect("meta");
                (m.state, m.retries)
            })
            .collect();
        assert_eq!(read.first(), Some(&(TaskState::Retry, Some(0))));
        assert_eq!(read.last(), Some(&(TaskState::Failure, Some(3))));
        assert!(read.iter().filter(|(s, _)| *s == TaskState::Retry).count() >= 3);
    }

    #[test]
    fn only_the_first_line_of_a_bounded_message_is_kept_without_credentials() {
        let value = serde_json::json!({
            "status": "FAILURE",
            "result": {
                "exc_type": "OperationalError",
                "exc_message": [format!(
                    "cannot reach redis://:hunter2@cache:6379/1 nor rediss://u:p@x {}\nsecond line",
                    "x".repeat(300)
                )],
                "exc_module": "redis.exceptions",
            },
            "date_done": "2026-12-02T18:32:15+00:00",
        });
        let m = ResultMeta::parse(value.to_string().as_bytes()).expect("meta");
        let text = m.exception.expect("exception");
        assert!(
            !text.contains("hunter2") && !text.contains("u:p@"),
            "{text}"
        );
        assert!(text.starts_with(
            "OperationalError: cannot reach redis://***@cache:6379/1 nor rediss://***@x"
        ));
        assert!(!text.contains("second line"));
        assert_eq!(
            text.chars().count(),
            MAX_EXCEPTION_MESSAGE + 1,
            "cut, with …"
        );
        // An exception without arguments is its type alone.
        let bare = serde_json::json!({"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": []}});
        let m = ResultMeta::parse(bare.to_string().as_bytes()).expect("meta");
        assert_eq!(m.exception.as_deref(), Some("KeyError"));
    }

    #[test]
    fn a_value_that_is_not_a_result_is_an_error_not_a_state() {
        assert_eq!(ResultMeta::parse(b"not json"), Err(ResultError::NotJson));
        assert_eq!(
            ResultMeta::parse(br#"{"status": "WEIRD"}"#),
            Err(ResultError::UnknownStatus)
        );
    }
}
