//! Decoding a Redis list element back into the task call it carries.
//!
//! Strict where a worker is fragile: base64, UTF-8, JSON, and the 3-element body shape
//! are all required, so a message that decodes here is one a worker can take apart.
//! Used by the encoder's self-check, the tests and end-to-end checks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::{Map, Value};

/// A decoded task message.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    /// `headers.task`.
    pub task: String,
    /// `headers.id` (any string; Celery's own ids are UUIDs).
    pub id: String,
    /// `headers.root_id`, if present and not null.
    pub root_id: Option<String>,
    /// `headers.origin`, if present and not null.
    pub origin: Option<String>,
    /// Body element 0.
    pub args: Vec<Value>,
    /// Body element 1.
    pub kwargs: Map<String, Value>,
    /// Body element 2 (`callbacks`, `errbacks`, `chain`, `chord`).
    pub embed: Map<String, Value>,
    /// `properties.priority`; 0 when absent, as kombu reads it.
    pub priority: u8,
    /// `properties.delivery_info.exchange`.
    pub exchange: String,
    /// `properties.delivery_info.routing_key`: the queue.
    pub routing_key: String,
    /// `properties.delivery_tag`.
    pub delivery_tag: String,
    /// `properties.expiration` (milliseconds, as a string), if present.
    pub expiration: Option<String>,
    /// `headers.eta`; a naive value is read as UTC, as the worker does.
    pub eta: Option<DateTime<FixedOffset>>,
    /// `headers.expires`; a naive value is read as UTC.
    pub expires: Option<DateTime<FixedOffset>>,
    /// All headers, extra ones included.
    pub headers: Map<String, Value>,
    /// All properties.
    pub properties: Map<String, Value>,
}

/// Why an envelope does not decode; the text names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("envelope is not JSON: {0}")]
    EnvelopeJson(#[source] serde_json::Error),
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{field} is {value:?}, only {supported:?} is supported")]
    Unsupported {
        field: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("body is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("body is not UTF-8: {0}")]
    Utf8(#[source] std::string::FromUtf8Error),
    #[error("body is not JSON: {0}")]
    BodyJson(#[source] serde_json::Error),
    #[error("body must be [args, kwargs, embed]: {0}")]
    BodyShape(&'static str),
    #[error("{field} is not an ISO-8601 datetime: {value:?}")]
    Datetime { field: &'static str, value: String },
}

/// Decodes one list element as pushed to a Celery queue on Redis.
pub fn decode_envelope(raw: &str) -> Result<DecodedMessage, DecodeError> {
    let envelope: Value = serde_json::from_str(raw).map_err(DecodeError::EnvelopeJson)?;
    let envelope = as_object(&envelope, "envelope")?;
    let headers = as_object(require(envelope, "headers", "headers")?, "headers")?;
    let properties = as_object(require(envelope, "properties", "properties")?, "properties")?;

    expect_str(envelope, "content-type", "content-type", "application/json")?;
    expect_str(envelope, "content-encoding", "content-encoding", "utf-8")?;
    expect_str(
        properties,
        "body_encoding",
        "properties.body_encoding",
        "base64",
    )?;

    let body = as_str(require(envelope, "body", "body")?, "body")?;
    let body = BASE64.decode(body).map_err(DecodeError::Base64)?;
    let body = String::from_utf8(body).map_err(DecodeError::Utf8)?;
    let body: Value = serde_json::from_str(&body).map_err(DecodeError::BodyJson)?;
    let Value::Array(mut parts) = body else {
        return Err(DecodeError::BodyShape("not an array"));
    };
    if parts.len() != 3 {
        return Err(DecodeError::BodyShape("not 3 elements"));
    }
    let embed = match parts.pop() {
        Some(Value::Object(map)) => map,
        _ => return Err(DecodeError::BodyShape("embed is not an object")),
    };
    let kwargs = match parts.pop() {
        Some(Value::Object(map)) => map,
        _ => return Err(DecodeError::BodyShape("kwargs is not an object")),
    };
    let args = match parts.pop() {
        Some(Value::Array(items)) => items,
        _ => return Err(DecodeError::BodyShape("args is not an array")),
    };

    let delivery_info = as_object(
        require(properties, "delivery_info", "properties.delivery_info")?,
        "properties.delivery_info",
    )?;

    Ok(DecodedMessage {
        task: as_str(require(headers, "task", "headers.task")?, "headers.task")?.to_owned(),
        id: as_str(require(headers, "id", "headers.id")?, "headers.id")?.to_owned(),
        root_id: optional_str(headers, "root_id", "headers.root_id")?,
        origin: optional_str(headers, "origin", "headers.origin")?,
        args,
        kwargs,
        embed,
        priority: priority(properties)?,
        exchange: as_str(
            require(
                delivery_info,
                "exchange",
                "properties.delivery_info.exchange",
            )?,
            "properties.delivery_info.exchange",
        )?
        .to_owned(),
        routing_key: as_str(
            require(
                delivery_info,
                "routing_key",
                "properties.delivery_info.routing_key",
            )?,
            "properties.delivery_info.routing_key",
        )?
        .to_owned(),
        delivery_tag: as_str(
            require(properties, "delivery_tag", "properties.delivery_tag")?,
            "properties.delivery_tag",
        )?
        .to_owned(),
        expiration: optional_str(properties, "expiration", "properties.expiration")?,
        eta: optional_datetime(headers, "eta", "headers.eta")?,
        expires: optional_datetime(headers, "expires", "headers.expires")?,
        headers: headers.clone(),
        properties: properties.clone(),
    })
}

fn require<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a Value, DecodeError> {
    map.get(key).ok_or(DecodeError::Missing { field })
}

fn as_object<'a>(
    value: &'a Value,
    field: &'static str,
) -> Result<&'a Map<String, Value>, DecodeError> {
    value.as_object().ok_or(DecodeError::WrongType {
        field,
        expected: "an object",
    })
}

fn as_str<'a>(value: &'a Value, field: &'static str) -> Result<&'a str, DecodeError> {
    value.as_str().ok_or(DecodeError::WrongType {
        field,
        expected: "a string",
    })
}

fn expect_str(
    map: &Map<String, Value>,
    key: &str,
    field: &'static str,
    supported: &'static str,
) -> Result<(), DecodeError> {
    let value = as_str(require(map, key, field)?, field)?;
    if value == supported {
        Ok(())
    } else {
        Err(DecodeError::Unsupported {
            field,
            value: value.to_owned(),
            supported,
        })
    }
}

fn optional_str(
    map: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => Ok(Some(as_str(value, field)?.to_owned())),
    }
}

fn priority(properties: &Map<String, Value>) -> Result<u8, DecodeError> {
    match properties.get("priority") {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value
            .as_u64()
            .filter(|p| *p <= 9)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(DecodeError::WrongType {
                field: "properties.priority",
                expected: "an integer 0-9",
            }),
    }
}

fn optional_datetime(
    map: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<DateTime<FixedOffset>>, DecodeError> {
    let Some(text) = optional_str(map, key, field)? else {
        return Ok(None);
    };
    parse_python_datetime(&text)
        .map(Some)
        .ok_or(DecodeError::Datetime { field, value: text })
}

/// What `datetime.fromisoformat` reads from Celery: `YYYY-MM-DDTHH:MM:SS[.ffffff]`
/// with an optional offset; naive means UTC (SPEC.md section 1).
pub(crate) fn parse_python_datetime(text: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt);
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc().fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::super::testdata::Capture;
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    #[test]
    fn decodes_every_capture() {
        let cap = Capture::load("01_");
        let m = decode_envelope(&cap.raw).unwrap();
        assert_eq!(m.task, "tasks.add");
        assert_eq!(m.id, "bf0c9d19-b676-4ba8-bf9d-2379903a389f");
        assert_eq!(m.root_id.as_deref(), Some(m.id.as_str()));
        assert_eq!(m.origin.as_deref(), Some("gen6104@vm"));
        assert_eq!(m.args, [json!(2), json!(3)]);
        assert_eq!(
            Value::Object(m.kwargs.clone()),
            json!({"greeting": "héllo wörld ✓ 日本"})
        );
        assert_eq!(
            Value::Object(m.embed.clone()),
            json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null})
        );
        assert_eq!(m.priority, 5);
        assert_eq!(m.exchange, "");
        assert_eq!(m.routing_key, "myqueue");
        assert_eq!(m.delivery_tag, "9d48fe4d-60aa-4364-8f56-96ceeaf72b8a");
        assert_eq!(m.expiration.as_deref(), Some("300000"));
        let eta = m.eta.unwrap();
        let expires = m.expires.unwrap();
        assert_eq!(eta.to_rfc3339(), "2026-11-27T03:02:50.064301+00:00");
        assert_eq!((expires - eta).num_seconds(), 240);

        let m = decode_envelope(&Capture::load("02_").raw).unwrap();
        assert_eq!(
            (m.task.as_str(), m.priority, m.routing_key.as_str()),
            ("tasks.add", 0, "celery")
        );
        assert_eq!(m.args, [json!(1), json!(2)]);
        assert!(m.kwargs.is_empty());
        assert_eq!((m.eta, m.expires, m.expiration), (None, None, None));

        let m = decode_envelope(&Capture::load("03_").raw).unwrap();
        assert_eq!(
            (m.task.as_str(), m.priority, m.routing_key.as_str()),
            ("tasks.echo", 9, "celery")
        );
        assert_eq!(m.args, [json!(1), json!("a")]);
        assert_eq!(
            m.expires,
            Some(
                Utc.with_ymd_and_hms(2030, 1, 3, 0, 0, 0)
                    .unwrap()
                    .fixed_offset()
            )
        );
        assert_eq!(m.expiration.as_deref(), Some("97880289916"));

        let m = decode_envelope(&Capture::load("04_").raw).unwrap();
        assert_eq!(
            (m.task.as_str(), m.priority, m.routing_key.as_str()),
            ("tasks.echo", 3, "myqueue")
        );
        assert!(m.args.is_empty());
        assert_eq!(Value::Object(m.kwargs), json!({"x": 1}));
    }

    #[test]
    fn decodes_a_message_held_by_a_worker() {
        // unacked_during_eta_wait.json: a message pushed by the operator's prototype and
        // taken by a real worker; the hash value is [message, exchange, routing_key].
        let path = format!(
            "{}/unacked_during_eta_wait.json",
            super::super::testdata::WIRE_DIR
        );
        let dump: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let entry = &dump["unacked_hash"]["883f61c6-b7bb-4c89-801f-ddfac5f6a8ca"];
        let m = decode_envelope(&entry[0].to_string()).unwrap();
        assert_eq!(m.delivery_tag, "883f61c6-b7bb-4c89-801f-ddfac5f6a8ca");
        assert_eq!(Value::Object(m.kwargs), json!({"greeting": "ünïcode"}));
        assert_eq!((m.priority, m.routing_key.as_str()), (5, "myqueue"));
        assert_eq!(entry[2], json!(m.routing_key));
    }

    fn envelope_with(body: &str) -> String {
        json!({
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": "t", "id": "i", "root_id": "i"},
            "properties": {
                "delivery_info": {"exchange": "", "routing_key": "celery"},
                "priority": 0, "body_encoding": "base64", "delivery_tag": "d"
            }
        })
        .to_string()
    }

    #[test]
    fn minimal_header_set_decodes() {
        let body = BASE64.encode(r#"[[], {}, {}]"#);
        let m = decode_envelope(&envelope_with(&body)).unwrap();
        assert_eq!((m.task.as_str(), m.id.as_str(), m.origin), ("t", "i", None));
    }

    #[test]
    fn rejects_what_crashes_or_confuses_a_worker() {
        let cases = [
            ("!!!notbase64", "base64"),
            (&BASE64.encode("not json"), "body is not JSON"),
            (&BASE64.encode(b"\xff\xfe"), "UTF-8"),
            (&BASE64.encode("[[], {}]"), "not 3 elements"),
            (&BASE64.encode("{}"), "not an array"),
            (&BASE64.encode("[{}, {}, {}]"), "args is not an array"),
            (&BASE64.encode("[[], [], {}]"), "kwargs is not an object"),
            (&BASE64.encode("[[], {}, null]"), "embed is not an object"),
        ];
        for (body, needle) in cases {
            let err = decode_envelope(&envelope_with(body)).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        let err = decode_envelope("nope").unwrap_err();
        assert!(err.to_string().starts_with("envelope is not JSON"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let good: Value =
            serde_json::from_str(&envelope_with(&BASE64.encode("[[], {}, {}]"))).unwrap();
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            decode_envelope(&v.to_string()).unwrap_err().to_string()
        };
        assert_eq!(
            mutate(&|v| v["headers"].as_object_mut().unwrap().clear()),
            "headers.task is missing"
        );
        assert_eq!(
            mutate(&|v| v["headers"]["id"] = json!(5)),
            "headers.id must be a string"
        );
        assert_eq!(
            mutate(&|v| v["properties"]["priority"] = json!(10)),
            "properties.priority must be an integer 0-9"
        );
        assert_eq!(
            mutate(&|v| v["properties"]["priority"] = json!("1")),
            "properties.priority must be an integer 0-9"
        );
        assert_eq!(
            mutate(&|v| v["content-type"] = json!("application/x-python-serialize")),
            r#"content-type is "application/x-python-serialize", only "application/json" is supported"#
        );
        assert!(
            mutate(&|v| v["properties"]["body_encoding"] = json!("utf-8"))
                .starts_with("properties.body_encoding")
        );
        assert_eq!(
            mutate(&|v| v["headers"]["eta"] = json!("tomorrow")),
            r#"headers.eta is not an ISO-8601 datetime: "tomorrow""#
        );
        assert_eq!(
            mutate(&|v| v["properties"]["delivery_info"] = json!([])),
            "properties.delivery_info must be an object"
        );
        assert_eq!(
            mutate(&|v| v
                .as_object_mut()
                .unwrap()
                .remove("body")
                .map(|_| ())
                .unwrap()),
            "body is missing"
        );
    }

    #[test]
    fn python_datetimes_parse() {
        let utc = |s| parse_python_datetime(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            utc("2030-01-02T03:04:05.123456+00:00"),
            utc("2030-01-02T03:04:05.123456")
        );
        assert_eq!(
            utc("2026-11-27T04:10:39.973635+01:00"),
            utc("2026-11-27T03:10:39.973635Z")
        );
        assert_eq!(
            utc("2030-01-03T00:00:00+00:00"),
            Utc.with_ymd_and_hms(2030, 1, 3, 0, 0, 0).unwrap()
        );
        assert!(parse_python_datetime("2030-01-03").is_none());
    }
}
