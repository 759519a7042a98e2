//! Validation of a message before it is pushed.
//!
//! A malformed message can take a whole worker pool down (SPEC.md section 3: invalid
//! base64, a body element that is not JSON or a 2-element body make the worker process
//! exit, and a restored message crashes every restart). So every rule here errs on the
//! strict side, and every error names the field the user has to fix.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::message::TaskMessage;
use super::names::{QUEUE_NAME, TASK_NAME};

/// Longest accepted task name (Celery has no limit; real names are dotted paths).
pub(crate) const MAX_TASK_NAME_LEN: usize = TASK_NAME.max_len;
/// Longest accepted queue name.
pub(crate) const MAX_QUEUE_NAME_LEN: usize = QUEUE_NAME.max_len;
/// Longest accepted `origin` header.
pub(crate) const MAX_ORIGIN_LEN: usize = 255;
/// Cap on the JSON body before base64 (the Redis list element is about 4/3 of this plus
/// ~3 KiB of headers). 256 KiB matches the SQS/Google Pub/Sub class of limits: periodic
/// tasks should carry references, not payloads, and a worker prefetches many messages.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Deepest accepted nesting of arrays/objects inside args or kwargs (the args array
/// itself is level 1). Python's decoder recurses per level; this stays far from its limit.
pub(crate) const MAX_JSON_DEPTH: usize = 32;
/// Most extra headers per message.
pub(crate) const MAX_HEADERS: usize = 32;
/// Longest extra header name.
pub(crate) const MAX_HEADER_NAME_LEN: usize = 64;
/// Longest extra header value, in bytes.
pub(crate) const MAX_HEADER_VALUE_LEN: usize = 1024;
/// Highest Celery priority on Redis (0 is served first).
pub(crate) const MAX_PRIORITY: u8 = 9;
/// Earliest UTC year accepted for `eta`/`expires`.
pub(crate) const MIN_YEAR: i32 = 1970;
/// Latest UTC year accepted for `eta`/`expires` (Python's `datetime` ends at 9999 and the
/// worker converts to its own zone, so stay clear of the edge).
pub(crate) const MAX_YEAR: i32 = 9998;

/// Header names a user may not set: Celery's protocol headers, the attributes and
/// methods of the worker's `Task.request` (headers are merged into it, so e.g. `get`
/// would shadow a method), and the names kombu itself reads from headers.
pub(crate) const RESERVED_HEADER_NAMES: &[&str] = &[
    // Protocol v2 headers.
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
    // celery.app.task.Context attributes and methods.
    "args",
    "kwargs",
    "callbacks",
    "errbacks",
    "chain",
    "chord",
    "called_directly",
    "correlation_id",
    "delivery_info",
    "headers",
    "hostname",
    "is_eager",
    "logfile",
    "loglevel",
    "properties",
    "reply_to",
    "taskset",
    "utc",
    "update",
    "clear",
    "get",
    "as_execution_options",
    "children",
    // Read by kombu/Celery from headers or properties.
    "compression",
    "redelivered",
    "priority",
    "expiration",
    "delivery_tag",
    "delivery_mode",
    "body_encoding",
    "content_type",
    "content_encoding",
    "exchange",
    "routing_key",
];

/// The field of a message (or of the transport options) a [`ValidationError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Task,
    Id,
    Args,
    Kwargs,
    Queue,
    Priority,
    Eta,
    Expires,
    Headers,
    Origin,
    Body,
    DeliveryTag,
    /// The Kubernetes object uid a task id is derived from.
    Uid,
    PrioritySteps,
    Separator,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Task => "task",
            Field::Id => "id",
            Field::Args => "args",
            Field::Kwargs => "kwargs",
            Field::Queue => "queue",
            Field::Priority => "priority",
            Field::Eta => "eta",
            Field::Expires => "expires",
            Field::Headers => "headers",
            Field::Origin => "origin",
            Field::Body => "body",
            Field::DeliveryTag => "delivery_tag",
            Field::Uid => "uid",
            Field::PrioritySteps => "transport.priority_steps",
            Field::Separator => "transport.separator",
        })
    }
}

/// A message (or transport setting) that must not be pushed; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    pub field: Field,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: Field, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

fn fail<T>(field: Field, reason: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError::new(field, reason))
}

/// Every rule, including the encoded body size. `now` is the publish instant.
pub fn validate_message(msg: &TaskMessage, now: DateTime<Utc>) -> Result<(), ValidationError> {
    validate_fields(msg, now)?;
    let body = msg
        .body_json()
        .map_err(|e| ValidationError::new(Field::Body, format!("cannot be serialized: {e}")))?;
    validate_body_size(body.len())
}

/// Every rule except the body size (which needs the encoded body; the encoder checks it
/// once it has encoded).
pub(crate) fn validate_fields(
    msg: &TaskMessage,
    now: DateTime<Utc>,
) -> Result<(), ValidationError> {
    validate_task_name(&msg.task)?;
    if msg.id.is_nil() {
        return fail(Field::Id, "must not be the nil UUID");
    }
    validate_args(&msg.args)?;
    validate_kwargs(&msg.kwargs)?;
    validate_queue_name(&msg.queue)?;
    validate_priority(msg.priority)?;
    validate_times(msg.eta.as_ref(), msg.expires.as_ref(), now)?;
    validate_headers(&msg.headers)?;
    validate_origin(&msg.origin)
}

/// Non-empty, at most [`MAX_TASK_NAME_LEN`], and of the characters [`TASK_NAME`] allows.
pub(crate) fn validate_task_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return fail(Field::Task, "must not be empty");
    }
    if name.len() > MAX_TASK_NAME_LEN {
        return fail(
            Field::Task,
            format!(
                "is {} bytes long, the limit is {MAX_TASK_NAME_LEN}",
                name.len()
            ),
        );
    }
    if !name.starts_with(|c: char| TASK_NAME.allows_first(c)) {
        return fail(
            Field::Task,
            format!("{name:?} must start with a letter or '_'"),
        );
    }
    if let Some(bad) = name.chars().find(|c| !TASK_NAME.allows(*c)) {
        return fail(
            Field::Task,
            format!(
                "{name:?} contains {bad:?}; allowed are {}",
                TASK_NAME.allowed_text()
            ),
        );
    }
    Ok(())
}

/// Non-empty, at most [`MAX_QUEUE_NAME_LEN`], and of the characters [`QUEUE_NAME`] allows.
pub(crate) fn validate_queue_name(queue: &str) -> Result<(), ValidationError> {
    if queue.is_empty() {
        return fail(Field::Queue, "must not be empty");
    }
    if queue.len() > MAX_QUEUE_NAME_LEN {
        return fail(
            Field::Queue,
            format!(
                "is {} bytes long, the limit is {MAX_QUEUE_NAME_LEN}",
                queue.len()
            ),
        );
    }
    if let Some(bad) = queue.chars().find(|c| !QUEUE_NAME.allows(*c)) {
        return fail(
            Field::Queue,
            format!(
                "{queue:?} contains {bad:?}; allowed are {}",
                QUEUE_NAME.allowed_text()
            ),
        );
    }
    Ok(())
}

/// 0..=9; Redis serves 0 first.
pub(crate) fn validate_priority(priority: u8) -> Result<(), ValidationError> {
    if priority > MAX_PRIORITY {
        return fail(
            Field::Priority,
            format!("{priority} is out of range 0-{MAX_PRIORITY}"),
        );
    }
    Ok(())
}

/// Positional arguments: a JSON array whose content kombu decodes as plain data.
pub(crate) fn validate_args(args: &Value) -> Result<(), ValidationError> {
    match args {
        Value::Array(_) => check_plain_json(Field::Args, args, "args", 1),
        other => fail(
            Field::Args,
            format!("must be a JSON array, got {}", type_name(other)),
        ),
    }
}

/// Keyword arguments: a JSON object with non-empty keys whose content kombu decodes as
/// plain data.
pub(crate) fn validate_kwargs(kwargs: &Value) -> Result<(), ValidationError> {
    let Value::Object(map) = kwargs else {
        return fail(
            Field::Kwargs,
            format!("must be a JSON object, got {}", type_name(kwargs)),
        );
    };
    if map.keys().any(String::is_empty) {
        return fail(Field::Kwargs, "keyword names must not be empty");
    }
    check_plain_json(Field::Kwargs, kwargs, "kwargs", 1)
}

/// Rejects excessive nesting and objects whose keys are exactly `__type__` and
/// `__value__`: kombu's JSON decoder turns those into Python objects and raises on an
/// unknown type, which makes the whole body undecodable.
fn check_plain_json(
    field: Field,
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<(), ValidationError> {
    let nested = matches!(value, Value::Array(_) | Value::Object(_));
    if nested && depth > MAX_JSON_DEPTH {
        return fail(
            field,
            format!("{path} nests deeper than {MAX_JSON_DEPTH} levels"),
        );
    }
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_plain_json(field, item, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
        Value::Object(map) => {
            if map.len() == 2 && map.contains_key("__type__") && map.contains_key("__value__") {
                return fail(
                    field,
                    format!(
                        "{path} is an object whose only keys are __type__ and __value__, \
                         which kombu decodes as a typed value; add another key or rename them"
                    ),
                );
            }
            for (key, item) in map {
                check_plain_json(field, item, &format!("{path}.{key}"), depth + 1)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON body (before base64) must not exceed [`MAX_BODY_BYTES`].
pub(crate) fn validate_body_size(len: usize) -> Result<(), ValidationError> {
    if len > MAX_BODY_BYTES {
        return fail(
            Field::Body,
            format!("encoded args and kwargs take {len} bytes, the limit is {MAX_BODY_BYTES}"),
        );
    }
    Ok(())
}

/// `eta` and `expires` must be representable by Python's `datetime` as Celery writes them,
/// and `expires` must lie after both `now` and `eta` (an expired message is revoked
/// unrun). Compared at microsecond precision, the precision on the wire.
pub(crate) fn validate_times(
    eta: Option<&DateTime<FixedOffset>>,
    expires: Option<&DateTime<FixedOffset>>,
    now: DateTime<Utc>,
) -> Result<(), ValidationError> {
    if let Some(eta) = eta {
        validate_datetime(Field::Eta, eta)?;
    }
    let Some(expires) = expires else {
        return Ok(());
    };
    validate_datetime(Field::Expires, expires)?;
    if expires.timestamp_micros() <= now.timestamp_micros() {
        return fail(
            Field::Expires,
            format!(
                "{} is not after the publish time {}; the worker would revoke the task unrun",
                expires.to_rfc3339(),
                now.to_rfc3339()
            ),
        );
    }
    if let Some(eta) = eta
        && expires.timestamp_micros() <= eta.timestamp_micros()
    {
        return fail(
            Field::Expires,
            format!(
                "{} is not after eta {}; the task would expire before it may run",
                expires.to_rfc3339(),
                eta.to_rfc3339()
            ),
        );
    }
    Ok(())
}

fn validate_datetime(field: Field, dt: &DateTime<FixedOffset>) -> Result<(), ValidationError> {
    if dt.offset().local_minus_utc() % 60 != 0 {
        return fail(
            field,
            format!("{} has a UTC offset with seconds", dt.to_rfc3339()),
        );
    }
    if dt.nanosecond() >= 1_000_000_000 {
        return fail(
            field,
            format!(
                "{} is a leap second, which Python cannot represent",
                dt.to_rfc3339()
            ),
        );
    }
    let year = dt.with_timezone(&Utc).year();
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return fail(
            field,
            format!(
                "{} is outside the years {MIN_YEAR}-{MAX_YEAR} (UTC)",
                dt.to_rfc3339()
            ),
        );
    }
    Ok(())
}

/// Extra headers: at most [`MAX_HEADERS`]; names start with a letter, then ASCII letters,
/// digits, `_` and `-`, at most [`MAX_HEADER_NAME_LEN`], and none of
/// [`RESERVED_HEADER_NAMES`] (compared case-insensitively); values at most
/// [`MAX_HEADER_VALUE_LEN`] bytes without control characters.
pub(crate) fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if headers.len() > MAX_HEADERS {
        return fail(
            Field::Headers,
            format!(
                "{} headers given, the limit is {MAX_HEADERS}",
                headers.len()
            ),
        );
    }
    for (name, value) in headers {
        validate_header(name, value)?;
    }
    Ok(())
}

fn validate_header(name: &str, value: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return fail(Field::Headers, "header names must not be empty");
    }
    if name.len() > MAX_HEADER_NAME_LEN {
        return fail(
            Field::Headers,
            format!("header name {name:?} is longer than {MAX_HEADER_NAME_LEN} bytes"),
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return fail(
            Field::Headers,
            format!(
                "header name {name:?} must start with a letter and contain only ASCII letters, digits, _ and -"
            ),
        );
    }
    if RESERVED_HEADER_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return fail(
            Field::Headers,
            format!("header name {name:?} is reserved by the Celery protocol"),
        );
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        return fail(
            Field::Headers,
            format!("value of header {name:?} is longer than {MAX_HEADER_VALUE_LEN} bytes"),
        );
    }
    if value.chars().any(char::is_control) {
        return fail(
            Field::Headers,
            format!("value of header {name:?} contains a control character"),
        );
    }
    Ok(())
}

/// Non-empty printable ASCII, at most [`MAX_ORIGIN_LEN`] bytes (Celery writes
/// `gen<pid>@<host>`).
pub(crate) fn validate_origin(origin: &str) -> Result<(), ValidationError> {
    if origin.is_empty() {
        return fail(Field::Origin, "must not be empty");
    }
    if origin.len() > MAX_ORIGIN_LEN {
        return fail(
            Field::Origin,
            format!("is longer than {MAX_ORIGIN_LEN} bytes"),
        );
    }
    if !origin.chars().all(|c| (' '..='~').contains(&c)) {
        return fail(Field::Origin, format!("{origin:?} must be printable ASCII"));
    }
    Ok(())
}

/// A delivery tag keys the worker's `unacked` hash, so it must be a real, fresh id.
pub(crate) fn validate_delivery_tag(tag: Uuid) -> Result<(), ValidationError> {
    if tag.is_nil() {
        return fail(Field::DeliveryTag, "must not be the nil UUID");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    fn good() -> TaskMessage {
        TaskMessage::new("tasks.add", Uuid::from_u128(1))
            .args(json!([1, "two", {"three": [3.0, null]}]))
            .kwargs(json!({"greeting": "héllo", "nested": {"__type__": "x", "other": 1}}))
            .queue("myqueue")
            .priority(9)
            .eta(now() + chrono::Duration::seconds(10))
            .expires(now() + chrono::Duration::seconds(60))
            .header("tenant", "acme")
            .header("x-trace-id", "abc-123")
            .origin("celery-operator@pod-0")
    }

    /// Asserts the message is rejected for `field` and that the text names it.
    fn assert_rejected(msg: &TaskMessage, field: Field, needle: &str) {
        let err = validate_message(msg, now()).expect_err("must be rejected");
        assert_eq!(err.field, field, "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("invalid {field}: ")), "{text}");
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }

    #[test]
    fn accepts_a_good_message() {
        validate_message(&good(), now()).unwrap();
        let minimal = TaskMessage::new("a", Uuid::from_u128(7));
        validate_message(&minimal, now()).unwrap();
    }

    #[test]
    fn task_name_rules() {
        for ok in [
            "tasks.add",
            "_private",
            "proj.app:task-1",
            &"a".repeat(MAX_TASK_NAME_LEN),
        ] {
            validate_task_name(ok).unwrap();
        }
        let mut msg = good();
        msg.task = String::new();
        assert_rejected(&msg, Field::Task, "empty");
        msg.task = "a".repeat(MAX_TASK_NAME_LEN + 1);
        assert_rejected(&msg, Field::Task, "limit");
        msg.task = "1tasks.add".into();
        assert_rejected(&msg, Field::Task, "start");
        for bad in [
            "tasks add",
            "tasks/add",
            "täsks",
            "tasks\n",
            "a\u{6}\u{16}b",
        ] {
            msg.task = bad.into();
            assert_rejected(&msg, Field::Task, "allowed");
        }
    }

    #[test]
    fn id_must_not_be_nil() {
        let mut msg = good();
        msg.id = Uuid::nil();
        assert_rejected(&msg, Field::Id, "nil");
    }

    #[test]
    fn args_must_be_an_array() {
        for bad in [json!({}), json!(null), json!("x"), json!(1)] {
            let mut msg = good();
            msg.args = bad;
            assert_rejected(&msg, Field::Args, "must be a JSON array");
        }
        validate_args(&json!([])).unwrap();
    }

    #[test]
    fn kwargs_must_be_an_object_with_names() {
        for bad in [json!([]), json!(null), json!("x"), json!(true)] {
            let mut msg = good();
            msg.kwargs = bad;
            assert_rejected(&msg, Field::Kwargs, "must be a JSON object");
        }
        let mut msg = good();
        msg.kwargs = json!({"": 1});
        assert_rejected(&msg, Field::Kwargs, "empty");
        validate_kwargs(&json!({})).unwrap();
    }

    #[test]
    fn typed_objects_are_rejected_anywhere() {
        let typed = json!({"__type__": "datetime", "__value__": "2030-01-01T00:00:00"});
        let mut msg = good();
        msg.args = json!([1, [2, typed.clone()]]);
        assert_rejected(
            &msg,
            Field::Args,
            "args[1][1] is an object whose only keys are __type__ and __value__",
        );
        let mut msg = good();
        msg.kwargs = json!({"a": {"b": typed.clone()}});
        assert_rejected(&msg, Field::Kwargs, "kwargs.a.b");
        let mut msg = good();
        msg.kwargs = typed;
        assert_rejected(&msg, Field::Kwargs, "kwargs is an object");
        // Only the exact key set is special to kombu.
        validate_args(
            &json!([{"__type__": "x"}, {"__value__": 1}, {"__type__": 1, "__value__": 2, "k": 3}]),
        )
        .unwrap();
    }

    #[test]
    fn nesting_is_capped() {
        let mut deep = json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        // The args array itself is one level.
        validate_args(&deep).unwrap();
        let mut msg = good();
        msg.args = json!([deep]);
        assert_rejected(&msg, Field::Args, "nests deeper");
    }

    #[test]
    fn body_size_is_capped() {
        let mut msg = good();
        msg.args = json!(["x".repeat(MAX_BODY_BYTES)]);
        assert_rejected(&msg, Field::Body, "limit is 262144");
        // Just under the cap passes: the body adds the array framing and the embed.
        let framing = TaskMessage::new("a", Uuid::from_u128(1))
            .args(json!([""]))
            .body_json()
            .unwrap()
            .len();
        let msg = TaskMessage::new("a", Uuid::from_u128(1))
            .args(json!(["x".repeat(MAX_BODY_BYTES - framing)]));
        validate_message(&msg, now()).unwrap();
        let msg = TaskMessage::new("a", Uuid::from_u128(1))
            .args(json!(["x".repeat(MAX_BODY_BYTES - framing + 1)]));
        assert_rejected(&msg, Field::Body, "262145 bytes");
    }

    #[test]
    fn priority_range() {
        for p in 0..=9 {
            validate_priority(p).unwrap();
        }
        let mut msg = good();
        msg.priority = 10;
        assert_rejected(&msg, Field::Priority, "10 is out of range 0-9");
    }

    #[test]
    fn queue_rules() {
        for ok in ["celery", "my-queue.fast", "a:b@c/d_e"] {
            validate_queue_name(ok).unwrap();
        }
        let mut msg = good();
        for (bad, needle) in [
            ("", "empty"),
            ("my queue", "allowed"),
            ("q\u{6}\u{16}3", "allowed"),
            ("q*", "allowed"),
        ] {
            msg.queue = bad.into();
            assert_rejected(&msg, Field::Queue, needle);
        }
        msg.queue = "q".repeat(MAX_QUEUE_NAME_LEN + 1);
        assert_rejected(&msg, Field::Queue, "limit");
    }

    #[test]
    fn expires_must_follow_now_and_eta() {
        let mut msg = good();
        msg.eta = None;
        msg.expires = Some(now().into());
        assert_rejected(&msg, Field::Expires, "not after the publish time");
        msg.expires = Some((now() - chrono::Duration::seconds(1)).into());
        assert_rejected(&msg, Field::Expires, "revoke");
        let mut msg = good();
        msg.expires = msg.eta;
        assert_rejected(&msg, Field::Expires, "not after eta");
        // Sub-microsecond differences vanish on the wire.
        let mut msg = good();
        msg.expires = msg.eta.map(|eta| eta + chrono::Duration::nanoseconds(999));
        assert_rejected(&msg, Field::Expires, "not after eta");
        // An eta in the past is fine (runs at once); so is a lone expires in the future.
        let mut msg = good();
        msg.eta = Some((now() - chrono::Duration::days(1)).into());
        validate_message(&msg, now()).unwrap();
        msg.eta = None;
        validate_message(&msg, now()).unwrap();
    }

    #[test]
    fn datetimes_must_be_python_representable() {
        let odd = FixedOffset::east_opt(3600 + 30).unwrap();
        let mut msg = good();
        msg.eta = Some(odd.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        assert_rejected(&msg, Field::Eta, "offset with seconds");
        let mut msg = good();
        msg.eta = Some(
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59)
                .unwrap()
                .into(),
        );
        assert_rejected(&msg, Field::Eta, "outside the years");
        let mut msg = good();
        msg.expires = Some(Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap().into());
        assert_rejected(&msg, Field::Expires, "outside the years");
        let leap = Utc
            .with_ymd_and_hms(2030, 6, 30, 23, 59, 59)
            .unwrap()
            .with_nanosecond(1_500_000_000)
            .unwrap();
        let mut msg = good();
        msg.eta = Some(leap.into());
        assert_rejected(&msg, Field::Eta, "leap second");
    }

    #[test]
    fn header_rules() {
        let mut msg = good();
        msg.headers.insert("task".into(), "evil.task".into());
        assert_rejected(&msg, Field::Headers, "\"task\" is reserved");
        for reserved in RESERVED_HEADER_NAMES {
            let mut msg = good();
            msg.headers.insert(reserved.to_uppercase(), "v".into());
            assert_rejected(&msg, Field::Headers, "reserved");
        }
        for bad in ["", "_private", "1abc", "with space", "dot.ted", "ünï"] {
            let mut msg = good();
            msg.headers.insert(bad.into(), "v".into());
            assert_rejected(&msg, Field::Headers, "header name");
        }
        let mut msg = good();
        msg.headers
            .insert("a".repeat(MAX_HEADER_NAME_LEN + 1), "v".into());
        assert_rejected(&msg, Field::Headers, "longer than");
        let mut msg = good();
        msg.headers.insert("tenant".into(), "a\nb".into());
        assert_rejected(&msg, Field::Headers, "control character");
        let mut msg = good();
        msg.headers
            .insert("tenant".into(), "v".repeat(MAX_HEADER_VALUE_LEN + 1));
        assert_rejected(&msg, Field::Headers, "value of header \"tenant\" is longer");
        let mut msg = good();
        for i in 0..=MAX_HEADERS {
            msg.headers.insert(format!("h{i}"), "v".into());
        }
        assert_rejected(&msg, Field::Headers, "limit");
        // Unicode values are fine: they are JSON-escaped.
        let mut msg = good();
        msg.headers.insert("tenant".into(), "ünïcode ✓".into());
        validate_message(&msg, now()).unwrap();
    }

    #[test]
    fn origin_rules() {
        let mut msg = good();
        for bad in ["", "gen1@höst", "a\tb"] {
            msg.origin = bad.into();
            assert_rejected(&msg, Field::Origin, "origin");
        }
        msg.origin = "o".repeat(MAX_ORIGIN_LEN + 1);
        assert_rejected(&msg, Field::Origin, "longer than");
        validate_origin("gen6104@vm").unwrap();
    }

    #[test]
    fn delivery_tag_must_not_be_nil() {
        let err = validate_delivery_tag(Uuid::nil()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid delivery_tag: must not be the nil UUID"
        );
        validate_delivery_tag(Uuid::from_u128(5)).unwrap();
    }
}
