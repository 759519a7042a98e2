//! The revoke broadcast `app.control.revoke(id)` sends: one PUBLISH to the pidbox fanout
//! channel every worker subscribes to, in the captured format (SPEC.md §5.4). Workers drop a
//! revoked message when they get to it; a revoke reaches only workers running now.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The channel workers of broker database `db` listen on for control commands.
pub(crate) fn pidbox_channel(global_key_prefix: &str, db: i64) -> String {
    format!("{global_key_prefix}/{db}.celery.pidbox")
}

#[derive(Serialize)]
struct Body<'a> {
    method: &'static str,
    arguments: Arguments<'a>,
    destination: Option<()>,
    pattern: Option<()>,
    matcher: Option<()>,
}

#[derive(Serialize)]
struct Arguments<'a> {
    task_id: &'a str,
    terminate: bool,
    signal: &'static str,
}

#[derive(Serialize)]
struct Envelope {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'static str,
    #[serde(rename = "content-type")]
    content_type: &'static str,
    headers: Headers,
    properties: Properties,
}

#[derive(Serialize)]
struct Headers {
    clock: u64,
    /// Only read by a client collecting replies (we collect none).
    expires: f64,
}

#[derive(Serialize)]
struct Properties {
    delivery_mode: u8,
    delivery_info: DeliveryInfo,
    priority: u8,
    body_encoding: &'static str,
    delivery_tag: String,
}

#[derive(Serialize)]
struct DeliveryInfo {
    exchange: &'static str,
    routing_key: &'static str,
}

/// The envelope revoking `task_id` without terminating it (a running task runs to its end:
/// terminating is not possible on every pool, and the next run is about to be pushed).
pub(crate) fn revoke_envelope(task_id: &str, delivery_tag: Uuid, now: DateTime<Utc>) -> Vec<u8> {
    let body = Body {
        method: "revoke",
        arguments: Arguments {
            task_id,
            terminate: false,
            signal: "SIGTERM",
        },
        destination: None,
        pattern: None,
        matcher: None,
    };
    let envelope = Envelope {
        body: BASE64.encode(serde_json::to_vec(&body).unwrap_or_default()),
        content_encoding: "utf-8",
        content_type: "application/json",
        headers: Headers {
            clock: 1,
            expires: now.timestamp_micros() as f64 / 1e6 + 1.0,
        },
        properties: Properties {
            delivery_mode: 2,
            delivery_info: DeliveryInfo {
                exchange: "celery.pidbox",
                routing_key: "",
            },
            priority: 0,
            body_encoding: "base64",
            delivery_tag: delivery_tag.to_string(),
        },
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::celery::testdata::{OJson, WIRE_DIR};

    fn capture(name: &str) -> String {
        std::fs::read_to_string(format!("{WIRE_DIR}/{name}")).expect("capture")
    }

    #[test]
    fn the_envelope_and_body_have_the_captured_shape_and_values() {
        let id = "6922b25c-0178-4bbf-93ba-35a5424ac408";
        let now = DateTime::from_timestamp(1_796_237_156, 787_167_800).expect("ts");
        let ours = String::from_utf8(revoke_envelope(id, Uuid::new_v4(), now)).expect("utf-8");
        let theirs = OJson::parse(&capture("revoke_pidbox.raw.json"));
        let ours_json = OJson::parse(&ours);
        assert_eq!(ours_json.keys(&[]), theirs.keys(&[]));
        for path in [
            &["headers"][..],
            &["properties"],
            &["properties", "delivery_info"],
        ] {
            assert_eq!(ours_json.keys(path), theirs.keys(path), "{path:?}");
        }
        for path in [
            &["content-encoding"][..],
            &["content-type"],
            &["headers", "clock"],
            &["properties", "delivery_mode"],
            &["properties", "delivery_info", "exchange"],
            &["properties", "delivery_info", "routing_key"],
            &["properties", "priority"],
            &["properties", "body_encoding"],
        ] {
            assert_eq!(ours_json.get(path), theirs.get(path), "{path:?}");
        }
        let v: serde_json::Value = serde_json::from_str(&ours).expect("json");
        let expires = v["headers"]["expires"].as_f64().expect("expires");
        assert!(
            (expires - 1_796_237_157.787_167_8).abs() < 1e-3,
            "{expires}"
        );
        // The body, decoded, is what Celery sent for the same id.
        let body = BASE64
            .decode(v["body"].as_str().expect("body"))
            .expect("base64");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("body json");
        let captured: serde_json::Value =
            serde_json::from_str(&capture("revoke_pidbox.body.json")).expect("capture json");
        assert_eq!(body, captured);
    }

    #[test]
    fn the_channel_is_the_one_workers_subscribe_to() {
        let monitor = capture("revoke_monitor.txt");
        assert!(monitor.contains("\"/0.celery.pidbox\""), "{monitor}");
        assert_eq!(pidbox_channel("", 0), "/0.celery.pidbox");
        assert_eq!(pidbox_channel("pfx:", 3), "pfx:/3.celery.pidbox");
    }
}
