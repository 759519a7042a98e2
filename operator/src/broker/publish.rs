//! The atomic publish: push a message only if its slot was never pushed before.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;

use super::BrokerError;

/// KEYS[1] = dedupe key, KEYS[2] = queue list, KEYS[3] = the task's run counter;
/// ARGV[1] = dedupe TTL seconds, ARGV[2] = envelope, ARGV[3] = the run count to start the
/// counter from when it is missing, ARGV[4] = counter TTL seconds (set when it is created).
/// One script, so a crash can never leave a pushed message without its dedupe key or its
/// count (or the reverse), and two publishers racing for the same slot push once. A push
/// that fails (the queue key holds another type) takes its dedupe key back, so the retry
/// pushes instead of finding the slot done. Three commands per push: Redis runs this
/// thousands of times a second.
pub(super) const PUBLISH_SCRIPT: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[2])
  if type(pushed) == 'table' and pushed.err then
    redis.call('DEL', KEYS[1])
    return pushed
  end
  local runs = redis.call('INCR', KEYS[3])
  if runs == 1 then
    runs = tonumber(ARGV[3]) + 1
    redis.call('SET', KEYS[3], runs, 'EX', ARGV[4])
  end
  return {1, runs}
end
local runs = redis.call('GET', KEYS[3])
if not runs then
  runs = ARGV[3]
  redis.call('SET', KEYS[3], runs, 'EX', ARGV[4])
end
return {0, tonumber(runs)}
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH_SCRIPT));

/// What the publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishOutcome {
    /// The message was pushed now.
    Pushed,
    /// The slot had been pushed already (by an earlier run, a restart or another replica).
    Duplicate,
}

/// A task's run counter in the broker. It counts pushes where they happen, so the count
/// survives a crash between push and status write, and replicas share it. It only has to
/// bridge that gap: when missing (expired, a new broker) it starts from `seed`, the count
/// the caller knows (its status).
#[derive(Clone, Debug)]
pub(crate) struct RunCounter {
    pub key: String,
    pub seed: i64,
    pub ttl: Duration,
}

/// One message to push exactly once.
#[derive(Clone, Debug)]
pub(crate) struct Push {
    pub dedupe_key: String,
    pub dedupe_ttl: Duration,
    pub queue_key: String,
    pub envelope: String,
    pub counter: RunCounter,
}

/// The outcome and the task's run count after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Published {
    pub outcome: PublishOutcome,
    pub runs: i64,
}

/// Pushes in one pipeline: `SCRIPT LOAD` (a no-op when cached, and it makes a restarted
/// Redis work without a `NOSCRIPT` round trip), then one `EVALSHA` per push. The outer
/// error is the connection's; a push that fails alone (say its queue key holds another
/// type) fails alone.
pub(crate) async fn publish_batch<C: ConnectionLike>(
    conn: &mut C,
    pushes: &[Push],
) -> Result<Vec<Result<Published, BrokerError>>, BrokerError> {
    let invocations: Vec<redis::ScriptInvocation<'_>> = pushes
        .iter()
        .map(|p| {
            let mut inv = SCRIPT.prepare_invoke();
            inv.key(&p.dedupe_key)
                .key(&p.queue_key)
                .key(&p.counter.key)
                .arg(p.dedupe_ttl.as_secs().max(1))
                .arg(&p.envelope)
                .arg(p.counter.seed)
                .arg(p.counter.ttl.as_secs().max(1));
            inv
        })
        .collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors().load_script(&SCRIPT);
    for inv in &invocations {
        pipe.invoke_script(inv);
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe
        .query_async(conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))?;
    let mut replies = replies.into_iter();
    if let Some(Err(e)) = replies.next() {
        return Err(BrokerError::Command(BrokerError::describe(&e)));
    }
    let published = replies.map(|reply| {
        let (pushed, runs): (i64, i64) = reply
            .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))?;
        let outcome = if pushed == 1 {
            PublishOutcome::Pushed
        } else {
            PublishOutcome::Duplicate
        };
        Ok(Published { outcome, runs })
    });
    let published: Vec<_> = published.collect();
    if published.len() != pushes.len() {
        return Err(BrokerError::Command(format!(
            "{} replies for {} pushes",
            published.len(),
            pushes.len()
        )));
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerUrl;
    use crate::broker::test_server::Server;

    /// One push: a batch of one.
    async fn publish_once<C: ConnectionLike>(
        conn: &mut C,
        push: &Push,
    ) -> Result<Published, BrokerError> {
        let mut results = publish_batch(conn, std::slice::from_ref(push)).await?;
        results.pop().expect("one reply")
    }

    /// `envelope` for `queue`, deduplicated by `dedupe` (600 s), counted in `runs:t` (3600 s).
    fn push(dedupe: &str, queue: &str, envelope: &str, seed: i64) -> Push {
        Push {
            dedupe_key: dedupe.into(),
            dedupe_ttl: Duration::from_secs(600),
            queue_key: queue.into(),
            envelope: envelope.into(),
            counter: RunCounter {
                key: "runs:t".into(),
                seed,
                ttl: Duration::from_secs(3600),
            },
        }
    }

    async fn lrange<C: ConnectionLike>(conn: &mut C, key: &str) -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .expect("lrange")
    }

    #[tokio::test]
    async fn a_slot_is_pushed_once_with_its_dedupe_key_expiring() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let mut publish = async |dedupe, msg, seed| {
            publish_once(&mut conn, &push(dedupe, "celery", msg, seed))
                .await
                .expect("publish")
        };
        // The counter starts from the seed the caller knows, then counts in Redis: a stale
        // seed later (a restarted publisher) does not reset it, a duplicate does not count.
        let first = publish("d:1", "m1", 5).await;
        let again = publish("d:1", "m1", 0).await;
        let other = publish("d:2", "m2", 0).await;
        let pushed = |runs| Published {
            outcome: PublishOutcome::Pushed,
            runs,
        };
        assert_eq!(first, pushed(6));
        assert_eq!(
            again,
            Published {
                outcome: PublishOutcome::Duplicate,
                runs: 6
            }
        );
        assert_eq!(other, pushed(7));
        assert_eq!(
            lrange(&mut conn, "celery").await,
            ["m2", "m1"],
            "LPUSH: newest first, once each"
        );
        let left: i64 = redis::cmd("TTL")
            .arg("d:1")
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!((590..=600).contains(&left), "ttl {left}");
        let counter_left: i64 = redis::cmd("TTL")
            .arg("runs:t")
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!((3590..=3600).contains(&counter_left), "ttl {counter_left}");
    }

    #[tokio::test]
    async fn a_batch_isolates_a_failing_push_and_survives_a_script_flush() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let _: () = redis::cmd("SET")
            .arg("not-a-list")
            .arg("x")
            .query_async(&mut conn)
            .await
            .expect("set");
        // Redis forgot the script (a restart, SCRIPT FLUSH): the batch loads it again.
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .expect("flush");
        let batch = [
            push("d:1", "q", "m1", 0),
            push("d:2", "not-a-list", "m2", 0),
            push("d:3", "q", "m3", 0),
        ];
        let results = publish_batch(&mut conn, &batch).await.expect("batch");
        assert_eq!(results.len(), 3);
        assert_eq!(
            results[0].as_ref().ok().map(|p| p.outcome),
            Some(PublishOutcome::Pushed)
        );
        let err = results[1].as_ref().expect_err("WRONGTYPE");
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
        assert_eq!(results[2].as_ref().ok().map(|p| p.runs), Some(2));
        assert_eq!(lrange(&mut conn, "q").await, ["m3", "m1"]);

        // Nothing is lost: once the key is fixed, the failed push goes out on retry.
        let _: () = redis::cmd("DEL")
            .arg("not-a-list")
            .query_async(&mut conn)
            .await
            .expect("del");
        let retry = publish_once(&mut conn, &batch[1]).await.expect("retry");
        assert_eq!(retry.outcome, PublishOutcome::Pushed);
        assert_eq!(lrange(&mut conn, "not-a-list").await, ["m2"]);
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_an_error_without_the_url() {
        let conns = crate::broker::Connections::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let err = conns
            .get(&BrokerUrl::new(format!(
                "redis://:hunter2@127.0.0.1:{port}/0"
            )))
            .await
            .expect_err("nothing listens");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(matches!(
            conns.get(&BrokerUrl::new("http://nope")).await,
            Err(BrokerError::InvalidUrl)
        ));
    }
}
