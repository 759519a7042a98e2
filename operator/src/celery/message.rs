//! Building Celery protocol v2 task messages for the kombu Redis transport.
//!
//! The output is the exact list element Celery itself pushes (SPEC.md section 1): same
//! keys in the same order, written with Python's `json.dumps` conventions, so a golden
//! capture and our message differ only in ids, times and `reply_to`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::decode::decode_envelope;
use super::python;
use super::queue::TransportOptions;
use super::validate::{self, ValidationError};

/// Celery's default queue.
pub(crate) const DEFAULT_QUEUE: &str = "celery";
/// The `origin` header unless set (Celery writes `gen<pid>@<host>`).
pub(crate) const DEFAULT_ORIGIN: &str = "celery-operator";

/// Whole milliseconds from `now` to `expires`, floored at 0, as Celery computes the
/// `expiration` property. Microseconds are the precision on the wire; integer math avoids
/// the float rounding Python has here.
pub(crate) fn expiration_ms<Tz: TimeZone>(expires: &DateTime<Tz>, now: DateTime<Utc>) -> i64 {
    ((expires.timestamp_micros() - now.timestamp_micros()) / 1000).max(0)
}
/// `argsrepr`/`kwargsrepr` are cut to this many characters, as Celery's
/// `argsrepr_maxsize`/`kwargsrepr_maxsize` do.
pub(crate) const MAX_REPR_CHARS: usize = 1024;

/// One task invocation, ready to be encoded.
///
/// Fields are public for inspection; build with [`TaskMessage::new`] and the chained
/// setters. Nothing is checked until encoding, which validates everything first.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Registered task name, e.g. `myapp.tasks.refresh_cache`.
    pub task: String,
    /// Task id; also the result key (`celery-task-meta-<id>`).
    pub id: Uuid,
    /// Positional arguments: a JSON array.
    pub args: Value,
    /// Keyword arguments: a JSON object.
    pub kwargs: Value,
    /// Queue name, which is also the routing key (Celery publishes to exchange "").
    pub queue: String,
    /// 0..=9; on Redis 0 is served first.
    pub priority: u8,
    /// Run no earlier than this.
    pub eta: Option<DateTime<FixedOffset>>,
    /// Revoke unrun after this.
    pub expires: Option<DateTime<FixedOffset>>,
    /// Extra headers; they end up as `task.request.<name>` on the worker.
    pub headers: BTreeMap<String, String>,
    /// The `origin` header.
    pub origin: String,
}

impl TaskMessage {
    /// A call of `task` without arguments on the default queue at priority 0.
    pub fn new(task: impl Into<String>, id: Uuid) -> Self {
        Self {
            task: task.into(),
            id,
            args: Value::Array(Vec::new()),
            kwargs: Value::Object(serde_json::Map::new()),
            queue: DEFAULT_QUEUE.to_owned(),
            priority: 0,
            eta: None,
            expires: None,
            headers: BTreeMap::new(),
            origin: DEFAULT_ORIGIN.to_owned(),
        }
    }

    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }

    pub fn kwargs(mut self, kwargs: Value) -> Self {
        self.kwargs = kwargs;
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Any time zone; the offset is kept on the wire.
    pub fn eta<Tz: TimeZone>(mut self, eta: DateTime<Tz>) -> Self {
        self.eta = Some(eta.fixed_offset());
        self
    }

    pub fn expires<Tz: TimeZone>(mut self, expires: DateTime<Tz>) -> Self {
        self.expires = Some(expires.fixed_offset());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// All validation rules against publish time `now`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ValidationError> {
        validate::validate_message(self, now)
    }

    /// The body before base64: `[args, kwargs, embed]` as `json.dumps` writes it.
    pub fn body_json(&self) -> Result<String, serde_json::Error> {
        python::to_py_json(&(&self.args, &self.kwargs, Embed::default()))
    }

    /// Informational `argsrepr`: the args as a Python tuple, like `delay(2, 3)` gives
    /// `(2, 3)`; non-array args render as their own repr.
    pub fn argsrepr(&self) -> String {
        let repr = match &self.args {
            Value::Array(items) => python::repr_tuple(items),
            other => {
                let mut out = String::new();
                python::repr_value(other, &mut out);
                out
            }
        };
        python::truncate_repr(repr, MAX_REPR_CHARS)
    }

    /// Informational `kwargsrepr`: the kwargs as a Python dict.
    pub fn kwargsrepr(&self) -> String {
        let mut out = String::new();
        python::repr_value(&self.kwargs, &mut out);
        python::truncate_repr(out, MAX_REPR_CHARS)
    }

    /// The `expiration` property: whole milliseconds from `now` to `expires`, as Celery
    /// computes it (`int((expires - now).total_seconds() * 1000)`, floored at 0).
    /// Relative to publish time, not to eta. Redis ignores it; kept for fidelity.
    pub fn expiration_ms(&self, now: DateTime<Utc>) -> Option<i64> {
        self.expires.map(|expires| expiration_ms(&expires, now))
    }

    /// The Redis list element, published now. See [`Self::to_envelope_json_at`].
    pub fn to_envelope_json(&self, delivery_tag: Uuid) -> Result<String, EncodeError> {
        self.to_envelope_json_at(delivery_tag, Utc::now())
    }

    /// The Redis list element for a publish at `now` (which `expires` is checked
    /// against and `expiration` is computed from). `delivery_tag` must be fresh per
    /// push (a new v4 uuid): it keys the worker's `unacked` hash.
    ///
    /// Validates everything first, and decodes its own output again before returning
    /// it, so nothing that could crash a worker leaves this function.
    pub fn to_envelope_json_at(
        &self,
        delivery_tag: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, EncodeError> {
        validate::validate_fields(self, now)?;
        validate::validate_delivery_tag(delivery_tag)?;
        let body = self.body_json()?;
        validate::validate_body_size(body.len())?;

        let id = self.id.hyphenated().to_string();
        let envelope = Envelope {
            body: BASE64.encode(body.as_bytes()),
            content_encoding: "utf-8",
            content_type: "application/json",
            headers: Headers {
                lang: "py",
                task: &self.task,
                id: &id,
                shadow: None,
                eta: self.eta.as_ref().map(python::isoformat),
                expires: self.expires.as_ref().map(python::isoformat),
                group: None,
                group_index: None,
                retries: 0,
                timelimit: [None, None],
                root_id: &id,
                parent_id: None,
                argsrepr: self.argsrepr(),
                kwargsrepr: self.kwargsrepr(),
                origin: &self.origin,
                ignore_result: false,
                replaced_task_nesting: 0,
                stamped_headers: None,
                stamps: BTreeMap::new(),
                extra: &self.headers,
            },
            properties: Properties {
                correlation_id: &id,
                // Celery sets its app's reply queue; no one replies to beat messages.
                reply_to: "",
                delivery_mode: 2,
                expiration: self.expiration_ms(now).map(|ms| ms.to_string()),
                delivery_info: DeliveryInfo {
                    exchange: "",
                    routing_key: &self.queue,
                },
                priority: self.priority,
                body_encoding: "base64",
                delivery_tag: delivery_tag.hyphenated().to_string(),
            },
        };
        let json = python::to_py_json(&envelope)?;
        self.self_check(&json, &id, delivery_tag)?;
        Ok(json)
    }

    /// Validated envelope plus the list key it goes to under `transport`.
    pub fn encode(
        &self,
        transport: &TransportOptions,
        delivery_tag: Uuid,
        now: DateTime<Utc>,
    ) -> Result<EncodedMessage, EncodeError> {
        transport.validate()?;
        transport.check_queue(&self.queue)?;
        let envelope = self.to_envelope_json_at(delivery_tag, now)?;
        Ok(EncodedMessage {
            queue_key: transport.queue_key(&self.queue, self.priority),
            envelope,
            delivery_tag,
        })
    }

    /// Decodes the envelope the way a worker needs it and compares with the inputs.
    fn self_check(&self, json: &str, id: &str, delivery_tag: Uuid) -> Result<(), EncodeError> {
        let decoded = decode_envelope(json).map_err(|e| EncodeError::SelfCheck(e.to_string()))?;
        let mismatch = if decoded.task != self.task {
            Some("task")
        } else if decoded.id != id {
            Some("id")
        } else if Value::Array(decoded.args.clone()) != self.args {
            Some("args")
        } else if Value::Object(decoded.kwargs.clone()) != self.kwargs {
            Some("kwargs")
        } else if decoded.priority != self.priority {
            Some("priority")
        } else if decoded.routing_key != self.queue {
            Some("routing key")
        } else if decoded.delivery_tag != delivery_tag.hyphenated().to_string() {
            Some("delivery_tag")
        } else {
            None
        };
        match mismatch {
            Some(field) => Err(EncodeError::SelfCheck(format!(
                "{field} differs after decoding"
            ))),
            None => Ok(()),
        }
    }
}

/// What to push: `LPUSH <queue_key> <envelope>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedMessage {
    pub queue_key: String,
    pub envelope: String,
    pub delivery_tag: Uuid,
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("serializing the message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("encoded message failed its own decode check: {0}")]
    SelfCheck(String),
}

/// Third body element; Celery always sends all four keys.
#[derive(Serialize, Default)]
struct Embed {
    callbacks: Option<()>,
    errbacks: Option<()>,
    chain: Option<()>,
    chord: Option<()>,
}

// Field order below is the wire order Celery uses; serde keeps declaration order.

#[derive(Serialize)]
struct Envelope<'a> {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'static str,
    #[serde(rename = "content-type")]
    content_type: &'static str,
    headers: Headers<'a>,
    properties: Properties<'a>,
}

#[derive(Serialize)]
struct Headers<'a> {
    lang: &'static str,
    task: &'a str,
    id: &'a str,
    shadow: Option<&'a str>,
    eta: Option<String>,
    expires: Option<String>,
    group: Option<&'a str>,
    group_index: Option<u32>,
    retries: u32,
    /// `[hard, soft]`, hard first despite the protocol doc.
    timelimit: [Option<u64>; 2],
    root_id: &'a str,
    parent_id: Option<&'a str>,
    argsrepr: String,
    kwargsrepr: String,
    origin: &'a str,
    ignore_result: bool,
    replaced_task_nesting: u32,
    stamped_headers: Option<Vec<String>>,
    stamps: BTreeMap<String, String>,
    /// User headers after the protocol ones; validation keeps names disjoint.
    #[serde(flatten)]
    extra: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Properties<'a> {
    correlation_id: &'a str,
    reply_to: &'static str,
    delivery_mode: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
    delivery_info: DeliveryInfo<'a>,
    priority: u8,
    body_encoding: &'static str,
    delivery_tag: String,
}

#[derive(Serialize)]
struct DeliveryInfo<'a> {
    exchange: &'static str,
    routing_key: &'a str,
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{Capture, OJson};
    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn uuid(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    /// The Celery call behind each capture (README.txt), as operator input, with the
    /// capture's ids, origin and publish time so the bytes can be compared too.
    struct Case {
        prefix: &'static str,
        msg: TaskMessage,
        now: DateTime<Utc>,
        delivery_tag: Uuid,
    }

    fn cases() -> Vec<Case> {
        // 01: apply_async((2,3), {...}, queue='myqueue', priority=5, expires=300, countdown=60)
        let now01 = utc("2026-11-27T03:01:50.064301+00:00");
        // 03: expires=datetime(2030,1,3); the capture's expiration pins its publish time.
        let expires03 = utc("2030-01-03T00:00:00+00:00");
        vec![
            Case {
                prefix: "01_",
                msg: TaskMessage::new("tasks.add", uuid("bf0c9d19-b676-4ba8-bf9d-2379903a389f"))
                    .args(json!([2, 3]))
                    .kwargs(json!({"greeting": "héllo wörld ✓ 日本"}))
                    .queue("myqueue")
                    .priority(5)
                    .eta(now01 + Duration::seconds(60))
                    .expires(now01 + Duration::seconds(300))
                    .origin("gen6104@vm"),
                now: now01,
                delivery_tag: uuid("9d48fe4d-60aa-4364-8f56-96ceeaf72b8a"),
            },
            Case {
                prefix: "02_",
                msg: TaskMessage::new("tasks.add", uuid("4c875c31-3b0d-4662-b36a-b888f4920f23"))
                    .args(json!([1, 2]))
                    .origin("gen6104@vm"),
                now: now01,
                delivery_tag: uuid("8ccc43bd-808e-4c48-b73b-547f9a480876"),
            },
            Case {
                prefix: "03_",
                msg: TaskMessage::new("tasks.echo", uuid("22fe54aa-4060-4065-8a06-31fe1a876bf4"))
                    .args(json!([1, "a"]))
                    .priority(9)
                    .eta(utc("2030-01-02T03:04:05.123456+00:00"))
                    .expires(expires03)
                    .origin("gen6104@vm"),
                now: expires03 - Duration::milliseconds(97_880_289_916),
                delivery_tag: uuid("8b8fe17b-2ca0-4a97-bba2-0d611db03014"),
            },
            Case {
                prefix: "04_",
                msg: TaskMessage::new("tasks.echo", uuid("04f36661-c008-4689-944e-f1fd89c8196d"))
                    .kwargs(json!({"x": 1}))
                    .queue("myqueue")
                    .priority(3)
                    .origin("gen6104@vm"),
                now: now01,
                delivery_tag: uuid("91ab2995-9586-487a-944c-b20187f9f707"),
            },
        ]
    }

    #[test]
    fn captures_and_our_encoding_decode_alike() {
        let transport = TransportOptions::default();
        for case in cases() {
            let cap = Capture::load(case.prefix);
            let ours = case
                .msg
                .encode(&transport, case.delivery_tag, case.now)
                .unwrap();
            let theirs = decode_envelope(&cap.raw).unwrap();
            let mine = decode_envelope(&ours.envelope).unwrap();
            let p = case.prefix;
            assert_eq!(mine.task, theirs.task, "{p}");
            assert_eq!(mine.id, theirs.id, "{p}");
            assert_eq!(mine.args, theirs.args, "{p}");
            assert_eq!(mine.kwargs, theirs.kwargs, "{p}");
            assert_eq!(mine.priority, theirs.priority, "{p}");
            assert_eq!(mine.routing_key, theirs.routing_key, "{p}");
            assert_eq!(mine.eta, theirs.eta, "{p}");
            assert_eq!(mine.expires, theirs.expires, "{p}");
            assert_eq!(mine.expiration, theirs.expiration, "{p}");
            assert_eq!(ours.queue_key.as_bytes(), cap.key.as_slice(), "{p}");
            assert_eq!(
                transport
                    .queue_key(&theirs.routing_key, theirs.priority)
                    .as_bytes(),
                cap.key.as_slice(),
                "{p}"
            );
        }
    }

    #[test]
    fn envelope_structure_equals_the_captures() {
        for case in cases() {
            let cap = Capture::load(case.prefix);
            let ours = case
                .msg
                .to_envelope_json_at(case.delivery_tag, case.now)
                .unwrap();
            let theirs = OJson::parse(&cap.raw);
            let mine = OJson::parse(&ours);
            let p = case.prefix;
            assert_eq!(mine.keys(&[]), theirs.keys(&[]), "{p} envelope keys");
            for path in [
                &["headers"][..],
                &["properties"],
                &["properties", "delivery_info"],
            ] {
                assert_eq!(mine.keys(path), theirs.keys(path), "{p} {path:?} keys");
            }
            // Header and property values equal except the informational/app-specific ones.
            for key in theirs.keys(&["headers"]) {
                if key != "argsrepr" {
                    assert_eq!(
                        mine.get(&["headers", &key]),
                        theirs.get(&["headers", &key]),
                        "{p} headers.{key}"
                    );
                }
            }
            for key in theirs.keys(&["properties"]) {
                if key != "reply_to" {
                    assert_eq!(
                        mine.get(&["properties", &key]),
                        theirs.get(&["properties", &key]),
                        "{p} properties.{key}"
                    );
                }
            }
            // Bodies equal as JSON values, and equal the decoded capture body file.
            let body = |env: &OJson| -> Value {
                let OJson::Str(b64) = env.get(&["body"]).unwrap() else {
                    panic!("body is not a string")
                };
                serde_json::from_slice(&BASE64.decode(b64).unwrap()).unwrap()
            };
            assert_eq!(body(&mine), body(&theirs), "{p} body");
            assert_eq!(
                body(&mine),
                serde_json::from_str::<Value>(&cap.body).unwrap(),
                "{p} body.json"
            );
        }
    }

    #[test]
    fn envelope_bytes_equal_the_captures_but_for_reply_to_and_argsrepr() {
        for case in cases() {
            let cap = Capture::load(case.prefix);
            let ours = case
                .msg
                .to_envelope_json_at(case.delivery_tag, case.now)
                .unwrap();
            // Celery's reply_to is its app's oid; 03 passed a list, rendered "[1, 'a']".
            let expected = cap
                .raw
                .replace(
                    r#""reply_to": "00fbecd0-7b5a-356f-9919-a8b922165714""#,
                    r#""reply_to": """#,
                )
                .replace(r#""argsrepr": "[1, 'a']""#, r#""argsrepr": "(1, 'a')""#);
            assert_eq!(ours, expected, "{}", case.prefix);
        }
    }

    #[test]
    fn expiration_is_relative_to_publish_time() {
        let now = utc("2030-01-01T00:00:00Z");
        let msg = TaskMessage::new("t", Uuid::from_u128(1))
            .eta(now + Duration::seconds(60))
            .expires(now + Duration::seconds(300) + Duration::microseconds(999));
        assert_eq!(msg.expiration_ms(now), Some(300_000));
        assert_eq!(msg.expiration_ms(now + Duration::seconds(301)), Some(0));
        assert_eq!(
            TaskMessage::new("t", Uuid::from_u128(1)).expiration_ms(now),
            None
        );
        let json = msg.to_envelope_json_at(Uuid::from_u128(2), now).unwrap();
        assert!(
            json.contains(r#""delivery_mode": 2, "expiration": "300000", "delivery_info""#),
            "{json}"
        );
    }

    #[test]
    fn extra_headers_follow_the_protocol_headers() {
        let now = utc("2030-01-01T00:00:00Z");
        let msg = TaskMessage::new("t", Uuid::from_u128(1))
            .header("tenant", "acme")
            .header("b-side", "ünï");
        let json = msg.to_envelope_json_at(Uuid::from_u128(2), now).unwrap();
        let keys = OJson::parse(&json).keys(&["headers"]);
        assert_eq!(keys.len(), 21);
        assert_eq!(keys[18..], ["stamps", "b-side", "tenant"]);
        assert!(json.contains(r#""b-side": "\u00fcn\u00ef""#), "{json}");
        // A protocol header name is refused, never overridden.
        let evil = msg.header("task", "other.task");
        let err = evil
            .to_envelope_json_at(Uuid::from_u128(2), now)
            .unwrap_err();
        assert!(
            matches!(err, EncodeError::Invalid(ref e) if e.field == validate::Field::Headers),
            "{err}"
        );
    }

    #[test]
    fn encoding_refuses_invalid_input() {
        let now = utc("2030-01-01T00:00:00Z");
        let bad = TaskMessage::new("", Uuid::from_u128(1));
        let err = bad
            .to_envelope_json_at(Uuid::from_u128(2), now)
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid task: must not be empty");
        let ok = TaskMessage::new("t", Uuid::from_u128(1));
        let err = ok.to_envelope_json_at(Uuid::nil(), now).unwrap_err();
        assert!(err.to_string().contains("delivery_tag"), "{err}");
        let bad_transport = TransportOptions {
            priority_steps: vec![],
            ..TransportOptions::default()
        };
        let err = ok
            .encode(&bad_transport, Uuid::from_u128(2), now)
            .unwrap_err();
        assert!(
            err.to_string().contains("transport.priority_steps"),
            "{err}"
        );
        let dotted = TransportOptions {
            separator: ".".into(),
            ..TransportOptions::default()
        };
        let err = ok
            .clone()
            .queue("a.b")
            .encode(&dotted, Uuid::from_u128(2), now)
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid queue:"), "{err}");
        let big = ok.args(json!(["x".repeat(validate::MAX_BODY_BYTES)]));
        let err = big
            .to_envelope_json_at(Uuid::from_u128(2), now)
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid body:"), "{err}");
    }

    #[test]
    fn offsets_and_precision_survive_encoding() {
        let now = utc("2030-01-01T00:00:00Z");
        let berlin = FixedOffset::east_opt(3600).unwrap();
        let eta = berlin.with_ymd_and_hms(2030, 1, 1, 4, 10, 39).unwrap()
            + Duration::nanoseconds(973_635_999);
        let msg = TaskMessage::new("t", Uuid::from_u128(1)).eta(eta);
        let json = msg.to_envelope_json_at(Uuid::from_u128(2), now).unwrap();
        // Like monitor_apply_async.txt (Europe/Berlin app): offset kept, microseconds.
        assert!(
            json.contains(r#""eta": "2030-01-01T04:10:39.973635+01:00""#),
            "{json}"
        );
        let decoded = decode_envelope(&json).unwrap();
        assert_eq!(
            decoded.eta.unwrap().timestamp_micros(),
            eta.timestamp_micros()
        );
    }

    #[test]
    fn reprs_are_python_like() {
        let msg = TaskMessage::new("t", Uuid::from_u128(1))
            .args(json!([1, "it's", null, [true], 2.5]))
            .kwargs(json!({"a": {"b": "c"}, "n": -1}));
        assert_eq!(msg.argsrepr(), r#"(1, "it's", None, [True], 2.5)"#);
        assert_eq!(msg.kwargsrepr(), "{'a': {'b': 'c'}, 'n': -1}");
        let long = msg.args(json!(["x".repeat(5000)]));
        assert_eq!(long.argsrepr().chars().count(), MAX_REPR_CHARS + 3);
        assert!(long.argsrepr().ends_with("xxx..."));
    }

    #[test]
    fn body_is_a_three_element_array() {
        let msg = TaskMessage::new("t", Uuid::from_u128(1))
            .args(json!([1]))
            .kwargs(json!({"k": "v"}));
        assert_eq!(
            msg.body_json().unwrap(),
            r#"[[1], {"k": "v"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
        );
    }

    #[test]
    fn now_variant_uses_the_clock() {
        let msg =
            TaskMessage::new("t", Uuid::from_u128(1)).expires(Utc::now() + Duration::hours(1));
        let json = msg.to_envelope_json(Uuid::new_v4()).unwrap();
        let decoded = decode_envelope(&json).unwrap();
        let ms: i64 = decoded.expiration.unwrap().parse().unwrap();
        assert!((3_590_000..=3_600_000).contains(&ms), "{ms}");
        // Already expired: refused.
        let stale =
            TaskMessage::new("t", Uuid::from_u128(1)).expires(Utc::now() - Duration::seconds(1));
        assert!(stale.to_envelope_json(Uuid::new_v4()).is_err());
    }
}
