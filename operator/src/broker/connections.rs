//! One multiplexed, self-reconnecting connection per broker URL, shared by every task that
//! uses that broker.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::BrokerError;

/// Commands (and connection attempts) fail after this, so an unreachable broker is reported
/// quickly instead of stalling the schedule.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection cache keyed by URL. The key is the secret URL itself, so it never leaves
/// this struct (no Debug of the map).
#[derive(Default)]
pub struct Connections {
    by_url: Mutex<HashMap<String, ConnectionManager>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections { .. }")
    }
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection for `url`, connecting on first use. A failed first connect is not
    /// cached, so the next call tries again.
    pub async fn get(&self, url: &str) -> Result<ConnectionManager, BrokerError> {
        if let Some(c) = self.by_url.lock().await.get(url) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url).map_err(|_| BrokerError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Few quick retries: the engine has its own backoff per task.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            RESPONSE_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| BrokerError::Timeout(RESPONSE_TIMEOUT * 2))?
        .map_err(|e| BrokerError::Connect(BrokerError::describe(&e)))?;
        let mut map = self.by_url.lock().await;
        // Another caller may have connected meanwhile; keep one.
        Ok(map.entry(url.to_owned()).or_insert(conn).clone())
    }

    /// Forgets the connection of `url` (after errors), so the next use reconnects afresh.
    pub async fn forget(&self, url: &str) {
        self.by_url.lock().await.remove(url);
    }

    /// Keeps only the connections of `urls` (brokers no task uses any more are dropped).
    pub async fn retain(&self, urls: &std::collections::HashSet<String>) {
        self.by_url.lock().await.retain(|u, _| urls.contains(u));
    }
}
