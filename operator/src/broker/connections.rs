//! One multiplexed, self-reconnecting connection per broker URL, shared by every task that
//! uses that broker.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::{BrokerError, BrokerUrl};

/// Commands (and connection attempts) fail after this, so an unreachable broker is reported
/// quickly instead of stalling the schedule.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection cache keyed by URL. Its users say when a URL is no longer theirs
/// ([`Connections::forget`]), so the connections of deleted objects and of rotated
/// passwords close instead of living on.
#[derive(Default)]
pub(crate) struct Connections {
    by_url: Mutex<HashMap<BrokerUrl, ConnectionManager>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections { .. }")
    }
}

impl Connections {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The connection for `url`, connecting on first use. A failed first connect is not
    /// cached, so the next call tries again.
    pub(crate) async fn get(&self, url: &BrokerUrl) -> Result<ConnectionManager, BrokerError> {
        if let Some(c) = self.by_url.lock().await.get(url) {
            return Ok(c.clone());
        }
        let conn = connect(url).await?;
        let mut map = self.by_url.lock().await;
        // Another caller may have connected meanwhile; keep one.
        Ok(map.entry(url.clone()).or_insert(conn).clone())
    }

    /// Drops the connection of `url`: after an error (the next use reconnects afresh), or
    /// when nothing uses the URL any more (it closes once its last clone is dropped).
    pub(crate) async fn forget(&self, url: &BrokerUrl) {
        self.by_url.lock().await.remove(url);
    }

    /// How many URLs have a connection.
    #[cfg(test)]
    async fn connected(&self) -> usize {
        self.by_url.lock().await.len()
    }
}

/// A multiplexed connection that reconnects by itself, with timeouts on connect and replies.
pub(super) async fn connect(url: &BrokerUrl) -> Result<ConnectionManager, BrokerError> {
    let client = super::client(url).await?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        // Few quick retries: the engine has its own backoff per task.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(
        RESPONSE_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| BrokerError::Timeout(RESPONSE_TIMEOUT * 2))?
    .map_err(|e| BrokerError::Connect(BrokerError::describe(&e)))
}

/// How many users (objects, pushes not answered yet) each broker URL has, so the last one
/// to go can close its connections.
#[derive(Debug, Default)]
pub(crate) struct UrlUsers {
    counts: HashMap<BrokerUrl, usize>,
}

impl UrlUsers {
    pub(crate) fn add(&mut self, url: &BrokerUrl) {
        *self.counts.entry(url.clone()).or_default() += 1;
    }

    pub(crate) fn has(&self, url: &BrokerUrl) -> bool {
        self.counts.contains_key(url)
    }

    /// One user less; true when it was the last.
    pub(crate) fn release(&mut self, url: &BrokerUrl) -> bool {
        match self.counts.get_mut(url) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(url);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The port of the server a connection of `conns` to `url` reaches.
    async fn port_reached(conns: &Connections, url: &BrokerUrl) -> u16 {
        let mut conn = conns.get(url).await.expect("connect");
        let port: (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg("port")
            .query_async(&mut conn)
            .await
            .expect("CONFIG GET");
        port.1.parse().expect("port")
    }

    #[tokio::test]
    async fn a_url_via_sentinels_reaches_the_primary_they_name_before_and_after_a_failover() {
        use crate::broker::test_server::Sentinel;
        let primary = Server::start().await;
        let replica = Server::replica_of(&primary).await;
        let sentinel = Sentinel::watching(&primary, 1).await;
        let url = BrokerUrl::via_sentinels(
            "redis://127.0.0.1:1",
            &format!("127.0.0.1:{}", sentinel.port),
            "m",
            0,
        );
        let conns = Connections::new();
        assert_eq!(port_reached(&conns, &url).await, primary.port);
        sentinel.fail_over_to(&replica).await;
        // A connection made before stays where it was, until an error drops it.
        assert_eq!(port_reached(&conns, &url).await, primary.port);
        conns.forget(&url).await;
        assert_eq!(
            port_reached(&conns, &url).await,
            replica.port,
            "a new connection asks again"
        );
    }
    use crate::broker::test_server::Server;

    #[test]
    fn the_last_user_of_a_url_releases_it() {
        let (a, b) = (BrokerUrl::new("redis://a"), BrokerUrl::new("redis://b"));
        let mut users = UrlUsers::default();
        users.add(&a);
        users.add(&a);
        users.add(&b);
        assert!(!users.release(&a));
        assert!(users.release(&a));
        assert!(!users.release(&a), "an unknown URL has no users to release");
        assert!(users.release(&b));
    }

    #[tokio::test]
    async fn a_forgotten_url_closes_its_connection_on_the_server() {
        let server = Server::start().await;
        let conns = Connections::new();
        let before = server.clients().await;
        let mut conn = conns.get(&server.url).await.expect("connect");
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("ping");
        drop(conn);
        assert_eq!(server.clients().await, before + 1);
        conns.forget(&server.url).await;
        assert_eq!(conns.connected().await, 0);
        server.wait_for_clients(before).await;
    }
}
