//! Redis brokers: cached connections and the atomic, exactly-once publish of a task message.
//!
//! URLs carry passwords, so nothing here logs or formats one: errors name what failed, never
//! where.

mod batcher;
mod connections;
mod publish;
#[cfg(test)]
pub(crate) mod test_server;
mod url;

pub(crate) use batcher::{PushThread, PushWindow};
pub(crate) use connections::{Connections, UrlUsers};
pub(crate) use publish::{PublishOutcome, Published, Push, RunCounter};
pub use url::BrokerUrl;

/// Why a broker operation failed; `metric_label` is short and stable for metrics.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL does not parse as a Redis URL. The URL itself is never shown.
    #[error("the broker URL is not a valid redis:// or rediss:// URL")]
    InvalidUrl,
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    #[error("broker command failed: {0}")]
    Command(String),
    #[error("broker did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Written to the primary, but not every replica confirmed it in time: a failover could
    /// lose it, so it is not counted as done (and pushed again, which its mark makes safe).
    #[error("only {acked} of the broker's {replicas} replicas confirmed the push in time")]
    Unconfirmed { acked: usize, replicas: usize },
    /// The server is a replica: a failover happened and this connection still reaches the
    /// old primary.
    #[error("the broker is a read-only replica now (a failover); reconnecting")]
    ReadOnly,
}

/// How long asking the Sentinels for the primary may take.
const SENTINEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A client for `url`; for a URL that follows Sentinels, for the primary they name now (so
/// a new connection after a failover reaches the new primary).
pub(crate) async fn client(url: &BrokerUrl) -> Result<redis::Client, BrokerError> {
    let Some((sentinels, master)) = url.sentinels() else {
        return redis::Client::open(url.expose()).map_err(|_| BrokerError::InvalidUrl);
    };
    let ask = async {
        let sentinel = redis::Client::open(sentinels).map_err(|_| BrokerError::InvalidUrl)?;
        let mut conn = sentinel
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| BrokerError::Connect(BrokerError::describe(&e)))?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async::<Option<(String, u16)>>(&mut conn)
            .await
            .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))
    };
    let (host, port) = tokio::time::timeout(SENTINEL_TIMEOUT, ask)
        .await
        .map_err(|_| BrokerError::Timeout(SENTINEL_TIMEOUT))??
        .ok_or_else(|| BrokerError::Connect("the Sentinels know no primary yet".into()))?;
    let primary = url.at_primary(&host, port).ok_or(BrokerError::InvalidUrl)?;
    redis::Client::open(primary.expose()).map_err(|_| BrokerError::InvalidUrl)
}

impl BrokerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            BrokerError::InvalidUrl => "invalid_url",
            BrokerError::Connect(_) => "connect",
            BrokerError::Command(_) => "command",
            BrokerError::Timeout(_) => "timeout",
            BrokerError::Unconfirmed { .. } => "unconfirmed",
            BrokerError::ReadOnly => "read_only",
        }
    }

    /// A redis error as text without anything of the URL: redis-rs errors describe the
    /// failure (kind, server message, OS error), not the address, but passwords are scrubbed
    /// anyway in case a server echoes one.
    pub(crate) fn describe(err: &redis::RedisError) -> String {
        let text = err.to_string();
        if text.contains("://") {
            format!("{:?}", err.kind())
        } else {
            text
        }
    }
}
