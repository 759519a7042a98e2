//! Running tasks per worker, from the heartbeats Celery workers publish (every 2 s by default)
//! on `<globalKeyPrefix>/<db>.celeryev/worker.heartbeat` (kombu prefixes PUBLISH too). A
//! running task with early acks is no longer in `unacked`, so heartbeats are what keep a pool
//! busy with long tasks from scaling in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::broker::BrokerUrl;

/// A heartbeat older than this is ignored (three missed beats at Celery's default 2 s).
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

#[derive(Clone, Copy, Debug)]
struct Beat {
    active: u64,
    at: Instant,
}

/// Latest heartbeat per worker hostname of one broker.
type BeatTable = Arc<Mutex<HashMap<String, Beat>>>;

/// A [`BeatTable`] per (broker URL, heartbeat channel), each fed by one subscriber task.
#[derive(Default)]
pub(crate) struct Heartbeats {
    by_channel: Mutex<HashMap<(BrokerUrl, String), Subscription>>,
}

/// A subscriber task and the table it fills; dropping it ends the subscription.
struct Subscription {
    table: BeatTable,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeats {
    /// Running tasks per live worker hostname of the broker at `url` whose workers use
    /// `key_prefix`; subscribes on first use.
    pub(crate) async fn active(&self, url: &BrokerUrl, key_prefix: &str) -> HashMap<String, u64> {
        let key = (url.clone(), channel(url, key_prefix));
        let table = {
            let mut by_channel = self.by_channel.lock().await;
            match by_channel.get(&key) {
                Some(s) => s.table.clone(),
                None => {
                    let table: BeatTable = Arc::new(Mutex::new(HashMap::new()));
                    let task = tokio::spawn(subscribe(key.0.clone(), key.1.clone(), table.clone()));
                    by_channel.insert(
                        key,
                        Subscription {
                            table: table.clone(),
                            task,
                        },
                    );
                    table
                }
            }
        };
        let now = Instant::now();
        table
            .lock()
            .await
            .iter()
            .filter(|(_, b)| now.duration_since(b.at) < HEARTBEAT_TTL)
            .map(|(h, b)| (h.clone(), b.active))
            .collect()
    }
}

impl Heartbeats {
    /// Ends the subscriptions to the broker at `url` (nothing reads it any more).
    pub(crate) async fn forget(&self, url: &BrokerUrl) {
        self.by_channel.lock().await.retain(|(u, _), _| u != url);
    }
}

/// The heartbeat channel of the database a URL names (`/0` when none), under the
/// transport's `global_keyprefix`.
pub(crate) fn channel(url: &BrokerUrl, key_prefix: &str) -> String {
    format!("{key_prefix}/{}.celeryev/worker.heartbeat", url.database())
}

/// `(hostname, active, offline)` of a heartbeat envelope.
pub(crate) fn parse(payload: &[u8]) -> Option<(String, u64, bool)> {
    let envelope: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let body = envelope.get("body")?.as_str()?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let event: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let hostname = event.get("hostname")?.as_str()?.to_string();
    let active = event.get("active").and_then(|a| a.as_u64()).unwrap_or(0);
    let offline = event.get("type").and_then(|t| t.as_str()) == Some("worker-offline");
    Some((hostname, active, offline))
}

/// Keeps a subscription open, reconnecting after a pause on any error.
async fn subscribe(url: BrokerUrl, channel: String, table: BeatTable) {
    loop {
        if let Err(err) = listen(&url, &channel, &table).await {
            tracing::debug!(error = %crate::broker::BrokerError::describe(&err), "heartbeat subscription lost; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen(
    url: &BrokerUrl,
    channel: &str,
    table: &Mutex<HashMap<String, Beat>>,
) -> redis::RedisResult<()> {
    let client = crate::broker::client(url)
        .await
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "connect", e.to_string())))?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        if let Some((hostname, active, offline)) = parse(msg.get_payload_bytes()) {
            let mut t = table.lock().await;
            if offline {
                t.remove(&hostname);
            } else {
                t.insert(
                    hostname,
                    Beat {
                        active,
                        at: Instant::now(),
                    },
                );
            }
        }
    }
    Ok(())
}

/// The pod of `pool` a worker hostname belongs to: Celery names a worker `celery@<hostname>`
/// and a Deployment's pod is `<pool>-<template hash>-<suffix>`, so exactly two segments must
/// follow `<pool>-` (which keeps pool `a` from claiming the pods of pool `a-b`).
pub(crate) fn pod_of_pool<'a>(hostname: &'a str, pool: &str) -> Option<&'a str> {
    let pod = hostname.split_once('@').map(|(_, h)| h).unwrap_or(hostname);
    let rest = pod.strip_prefix(pool)?.strip_prefix('-')?;
    let mut parts = rest.split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    (ok(parts.next()) && ok(parts.next()) && parts.next().is_none()).then_some(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captured_idle_heartbeat_parses() {
        let capture = std::fs::read_to_string(format!(
            "{}/monitor_worker_idle.txt",
            crate::celery::testdata::WIRE_DIR
        ))
        .expect("capture");
        let line = capture
            .lines()
            .find(|l| l.contains("worker.heartbeat"))
            .expect("a heartbeat");
        // MONITOR quotes the payload: take the last argument and unescape it.
        let quoted = line
            .rsplit_once("\" \"")
            .map(|(_, p)| p.trim_end_matches('"'))
            .expect("payload");
        let payload = quoted.replace("\\\"", "\"");
        let (hostname, active, offline) = parse(payload.as_bytes()).expect("parsed");
        assert_eq!((hostname.as_str(), active, offline), ("w3@local", 0, false));
    }

    #[test]
    fn channel_follows_the_database_and_the_key_prefix() {
        assert_eq!(
            channel(&BrokerUrl::new("redis://:p@h:6379/0"), ""),
            "/0.celeryev/worker.heartbeat"
        );
        assert_eq!(
            channel(&BrokerUrl::new("redis://h:6379/3"), ""),
            "/3.celeryev/worker.heartbeat"
        );
        assert_eq!(
            channel(&BrokerUrl::new("redis://h:6379"), ""),
            "/0.celeryev/worker.heartbeat"
        );
        // Captured from Celery 5.7 with broker_transport_options={"global_keyprefix": "pfx:"}.
        assert_eq!(
            channel(&BrokerUrl::new("redis://h:6379/2"), "pfx:"),
            "pfx:/2.celeryev/worker.heartbeat"
        );
    }

    #[test]
    fn workers_map_to_their_pool_only() {
        assert_eq!(
            pod_of_pool("celery@default-7d9f8b6c5-x2x9z", "default"),
            Some("default-7d9f8b6c5-x2x9z")
        );
        assert_eq!(
            pod_of_pool("celery@default-mail-7d9f8b6c5-x2x9z", "default"),
            None
        );
        assert_eq!(
            pod_of_pool("celery@default-mail-7d9f8b6c5-x2x9z", "default-mail"),
            Some("default-mail-7d9f8b6c5-x2x9z")
        );
        assert_eq!(pod_of_pool("celery@other-7d9f8b6c5-x2x9z", "default"), None);
    }
}
