//! Reading a pool's load from its Redis broker: waiting = LLEN of every priority key of each
//! queue, reserved = `unacked` entries routed to the pool's queues; running tasks come from
//! worker heartbeats (heartbeats.rs). Reads are pipelined: one round trip per broker per poll.

use std::collections::HashMap;

use redis::aio::ConnectionLike;

use crate::broker::BrokerError;
use crate::celery::TransportOptions;

/// Counts the `unacked` entries per routing key inside Redis, so message bodies never cross
/// the wire. An entry is JSON `[message, exchange, routing_key]`; the routing key is its last
/// string, matched at the end instead of decoding the whole message.
pub(crate) const UNACKED_BY_QUEUE_SCRIPT: &str = r#"
local counts = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local rk = string.match(v, '"([^"]*)"%s*%]%s*$')
  if rk then counts[rk] = (counts[rk] or 0) + 1 end
end
local out = {}
for rk, n in pairs(counts) do
  table.insert(out, rk)
  table.insert(out, n)
end
return out
"#;

/// The keys of one pool on one broker.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolKeys {
    pub queues: Vec<String>,
    pub transport: TransportOptions,
}

impl PoolKeys {
    /// Every list key a worker of the pool pops from.
    pub fn list_keys(&self) -> Vec<String> {
        self.queues
            .iter()
            .flat_map(|q| self.transport.queue_keys(q))
            .collect()
    }

    fn unacked_key(&self) -> String {
        format!("{}unacked", self.transport.global_key_prefix)
    }
}

/// Waiting and reserved messages of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueLoad {
    pub waiting: u64,
    pub reserved: u64,
}

/// Reads the load of several pools sharing one broker in one pipeline.
pub(crate) async fn read<C: ConnectionLike>(
    conn: &mut C,
    pools: &[PoolKeys],
) -> Result<Vec<QueueLoad>, BrokerError> {
    let mut pipe = redis::pipe();
    let mut unacked_keys: Vec<String> = pools.iter().map(PoolKeys::unacked_key).collect();
    unacked_keys.sort();
    unacked_keys.dedup();
    for pool in pools {
        for key in pool.list_keys() {
            pipe.cmd("LLEN").arg(key);
        }
    }
    // Plain EVAL: inside a pipeline EVALSHA would need a NOSCRIPT fallback; the script is tiny.
    for key in &unacked_keys {
        pipe.cmd("EVAL")
            .arg(UNACKED_BY_QUEUE_SCRIPT)
            .arg(1)
            .arg(key);
    }
    let replies: Vec<redis::Value> = pipe
        .query_async(conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))?;
    let mut replies = replies.into_iter();
    let mut waiting = Vec::with_capacity(pools.len());
    for pool in pools {
        let mut n = 0u64;
        for _ in pool.list_keys() {
            n += replies
                .next()
                .map(|v| redis::from_redis_value::<u64>(v).unwrap_or(0))
                .unwrap_or(0);
        }
        waiting.push(n);
    }
    let mut unacked: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for key in &unacked_keys {
        let pairs: Vec<(String, u64)> = replies
            .next()
            .and_then(|v| redis::from_redis_value::<Vec<(String, u64)>>(v).ok())
            .unwrap_or_default();
        unacked.insert(key.clone(), pairs.into_iter().collect());
    }
    Ok(pools
        .iter()
        .zip(waiting)
        .map(|(pool, waiting)| {
            let by_queue = unacked.get(&pool.unacked_key());
            let reserved = pool
                .queues
                .iter()
                .map(|q| by_queue.and_then(|m| m.get(q)).copied().unwrap_or(0))
                .sum();
            QueueLoad { waiting, reserved }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_priority_key_of_every_queue_is_read() {
        let keys = PoolKeys {
            queues: vec!["celery".into(), "mail".into()],
            transport: TransportOptions::default(),
        };
        assert_eq!(
            keys.list_keys(),
            [
                "celery",
                "celery\x06\x163",
                "celery\x06\x166",
                "celery\x06\x169",
                "mail",
                "mail\x06\x163",
                "mail\x06\x166",
                "mail\x06\x169"
            ]
        );
    }

    #[test]
    fn the_key_prefix_applies_to_lists_and_unacked() {
        let transport = TransportOptions {
            global_key_prefix: "app:".into(),
            ..Default::default()
        };
        let keys = PoolKeys {
            queues: vec!["q".into()],
            transport,
        };
        assert_eq!(keys.list_keys()[0], "app:q");
        assert_eq!(keys.unacked_key(), "app:unacked");
    }
}
