//! The atomic publish: push a message only if its slot was never pushed before.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;

use super::BrokerError;

/// Pushes a batch of messages, each only if its slot was never pushed before. Per push `i`
/// (from 0): KEYS[3i+1] = dedupe key, KEYS[3i+2] = queue list, KEYS[3i+3] = the task's run
/// counter; ARGV[4i+1] = dedupe TTL seconds, ARGV[4i+2] = envelope, ARGV[4i+3] = the run
/// count to start the counter from when it is missing, ARGV[4i+4] = counter TTL seconds (set
/// when it is created). Returns per push `{1, runs}` (pushed), `{0, runs}` (the slot was
/// pushed before) or `{-1, error}`.
///
/// One script, so a crash can never leave a pushed message without its dedupe key or its
/// count (or the reverse), and two publishers racing for the same slot push once. The new
/// messages of one queue go in one LPUSH, in batch order; a push that fails (the queue key
/// holds another type) takes its dedupe keys back, so the retry pushes instead of finding
/// the slot done. Duplicates read their counter last, so they see the batch's own pushes.
pub(super) const PUBLISH_SCRIPT: &str = r#"
local n = #KEYS / 3
local out = {}
local queues, order, dups = {}, {}, {}
for i = 0, n - 1 do
  if redis.call('SET', KEYS[3*i+1], '1', 'NX', 'EX', ARGV[4*i+1]) then
    local q = KEYS[3*i+2]
    if not queues[q] then
      queues[q] = {}
      order[#order+1] = q
    end
    local slots = queues[q]
    slots[#slots+1] = i
  else
    dups[#dups+1] = i
  end
end
for _, q in ipairs(order) do
  local slots = queues[q]
  local envelopes = {}
  for j, i in ipairs(slots) do envelopes[j] = ARGV[4*i+2] end
  local pushed = redis.pcall('LPUSH', q, unpack(envelopes))
  for _, i in ipairs(slots) do
    if type(pushed) == 'table' and pushed.err then
      redis.call('DEL', KEYS[3*i+1])
      out[i+1] = {-1, pushed.err}
    else
      local runs = redis.call('INCR', KEYS[3*i+3])
      if runs == 1 then
        runs = tonumber(ARGV[4*i+3]) + 1
        redis.call('SET', KEYS[3*i+3], runs, 'EX', ARGV[4*i+4])
      end
      out[i+1] = {1, runs}
    end
  end
end
for _, i in ipairs(dups) do
  local runs = redis.call('GET', KEYS[3*i+3])
  if not runs then
    runs = ARGV[4*i+3]
    redis.call('SET', KEYS[3*i+3], runs, 'EX', ARGV[4*i+4])
  end
  out[i+1] = {0, tonumber(runs)}
end
return out
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH_SCRIPT));

/// Pushes per script call. Redis runs one script at a time and nothing else meanwhile: at
/// about 2 µs of Redis time a push, 500 hold it for about a millisecond, and a due instant of
/// 10,000 pushes is 20 calls in one pipeline.
const PUSHES_PER_CALL: usize = 500;
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
/// Redis work without a `NOSCRIPT` round trip), then one `EVALSHA` per
/// [`PUSHES_PER_CALL`] pushes. The outer error is the connection's; a push that fails alone
/// (say its queue key holds another type) fails alone.
pub(crate) async fn publish_batch<C: ConnectionLike>(
    conn: &mut C,
    pushes: &[Push],
) -> Result<Vec<Result<Published, BrokerError>>, BrokerError> {
    let invocations: Vec<redis::ScriptInvocation<'_>> = pushes
        .chunks(PUSHES_PER_CALL)
        .map(|chunk| {
            let mut inv = SCRIPT.prepare_invoke();
            for p in chunk {
                inv.key(&p.dedupe_key)
                    .key(&p.queue_key)
                    .key(&p.counter.key)
                    .arg(p.dedupe_ttl.as_secs().max(1))
                    .arg(&p.envelope)
                    .arg(p.counter.seed)
                    .arg(p.counter.ttl.as_secs().max(1));
            }
            inv
        })
        .collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors().load_script(&SCRIPT);
    for inv in &invocations {
        pipe.invoke_script(inv);
    }
    let command_failed = |e: &redis::RedisError| BrokerError::Command(BrokerError::describe(e));
    let mut replies = pipe
        .query_async::<Vec<redis::RedisResult<redis::Value>>>(conn)
        .await
        .map_err(|e| command_failed(&e))?
        .into_iter();
    if let Some(Err(e)) = replies.next() {
        return Err(command_failed(&e));
    }
    let replies = replies.map(|reply| {
        reply.and_then(|v| {
            redis::from_redis_value::<Vec<(i64, redis::Value)>>(v).map_err(Into::into)
        })
    });
    let mut published = Vec::with_capacity(pushes.len());
    for (reply, chunk) in replies.zip(pushes.chunks(PUSHES_PER_CALL)) {
        match reply {
            Ok(results) if results.len() == chunk.len() => {
                published.extend(results.into_iter().map(outcome));
            }
            Ok(results) => {
                return Err(BrokerError::Command(format!(
                    "{} replies for {} pushes",
                    results.len(),
                    chunk.len()
                )));
            }
            // The whole call failed (say Redis is out of memory): so did each of its pushes.
            Err(e) => published.extend(chunk.iter().map(|_| Err(command_failed(&e)))),
        }
    }
    if published.len() != pushes.len() {
        return Err(BrokerError::Command(format!(
            "{} replies for {} pushes",
            published.len(),
            pushes.len()
        )));
    }
    Ok(published)
}

/// One push's `{status, runs or error}` from the script.
fn outcome((status, detail): (i64, redis::Value)) -> Result<Published, BrokerError> {
    let runs = || {
        redis::from_redis_value::<i64>(detail.clone())
            .map_err(|e| BrokerError::Command(BrokerError::describe(&e.into())))
    };
    let outcome = match status {
        1 => PublishOutcome::Pushed,
        0 => PublishOutcome::Duplicate,
        _ => {
            let message = redis::from_redis_value::<String>(detail)
                .unwrap_or_else(|_| "the push failed".to_string());
            return Err(BrokerError::Command(message));
        }
    };
    Ok(Published {
        outcome,
        runs: runs()?,
    })
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
    async fn a_batch_longer_than_one_script_call_pushes_each_slot_once_in_order() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let n = 2 * PUSHES_PER_CALL + 7;
        // Two queues and a counter per task, interleaved: one LPUSH per queue and call.
        let batch: Vec<Push> = (0..n)
            .map(|i| Push {
                counter: RunCounter {
                    key: format!("runs:{i}"),
                    seed: 10,
                    ttl: Duration::from_secs(3600),
                },
                ..push(&format!("d:{i}"), ["a", "b"][i % 2], &format!("m{i}"), 0)
            })
            .collect();
        let first = publish_batch(&mut conn, &batch).await.expect("batch");
        let again = publish_batch(&mut conn, &batch).await.expect("batch");
        let published = |outcome| Published { outcome, runs: 11 };
        assert!(
            first
                .iter()
                .all(|r| *r.as_ref().expect("pushed") == published(PublishOutcome::Pushed))
        );
        assert!(
            again
                .iter()
                .all(|r| *r.as_ref().expect("dup") == published(PublishOutcome::Duplicate))
        );
        // Oldest at the tail, where a worker pops: batch order.
        let a: Vec<String> = (0..n).step_by(2).rev().map(|i| format!("m{i}")).collect();
        let b: Vec<String> = (1..n).step_by(2).rev().map(|i| format!("m{i}")).collect();
        assert_eq!(lrange(&mut conn, "a").await, a);
        assert_eq!(lrange(&mut conn, "b").await, b);
    }

    #[tokio::test]
    async fn a_slot_twice_in_one_batch_is_pushed_once_and_both_see_the_count() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let batch = [push("d:1", "q", "m1", 3), push("d:1", "q", "m1", 3)];
        let results = publish_batch(&mut conn, &batch).await.expect("batch");
        let outcomes: Vec<Published> = results.into_iter().map(|r| r.expect("reply")).collect();
        assert_eq!(
            outcomes,
            [
                Published {
                    outcome: PublishOutcome::Pushed,
                    runs: 4
                },
                Published {
                    outcome: PublishOutcome::Duplicate,
                    runs: 4
                },
            ]
        );
        assert_eq!(lrange(&mut conn, "q").await, ["m1"]);
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
