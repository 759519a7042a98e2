//! The atomic publish: push a message only if its slot was never pushed before.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;

use super::BrokerError;

/// KEYS[1] = dedupe key, KEYS[2] = queue list, KEYS[3] = the task's run counter;
/// ARGV[1] = dedupe TTL seconds, ARGV[2] = envelope, ARGV[3] = the run count to start the
/// counter from when it is missing, ARGV[4] = counter TTL seconds.
/// One script, so a crash can never leave a pushed message without its dedupe key or its
/// count (or the reverse), and two publishers racing for the same slot push once.
pub const PUBLISH_SCRIPT: &str = r#"
redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4])
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  local runs = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  return {1, runs}
end
return {0, tonumber(redis.call('GET', KEYS[3]))}
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH_SCRIPT));

/// What the publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The message was pushed now.
    Pushed,
    /// The slot had been pushed already (by an earlier run, a restart or another replica).
    Duplicate,
}

/// A task's run counter in the broker. It counts pushes where they happen, so the count
/// survives a crash between push and status write, and replicas share it. It only has to
/// bridge that gap: when missing (expired, a new broker) it starts from `seed`, the count
/// the caller knows (its status).
#[derive(Clone, Copy, Debug)]
pub struct RunCounter<'a> {
    pub key: &'a str,
    pub seed: i64,
    pub ttl: Duration,
}

/// The outcome and the task's run count after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub outcome: PublishOutcome,
    pub runs: i64,
}

/// `EVALSHA` of [`PUBLISH_SCRIPT`] (redis-rs loads it on `NOSCRIPT`).
pub async fn publish_once<C: ConnectionLike>(
    conn: &mut C,
    dedupe_key: &str,
    ttl: Duration,
    queue_key: &str,
    envelope: &str,
    counter: RunCounter<'_>,
) -> Result<Published, BrokerError> {
    let (pushed, runs): (i64, i64) = SCRIPT
        .key(dedupe_key)
        .key(queue_key)
        .key(counter.key)
        .arg(ttl.as_secs().max(1))
        .arg(envelope)
        .arg(counter.seed)
        .arg(counter.ttl.as_secs().max(1))
        .invoke_async(conn)
        .await
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e)))?;
    let outcome = if pushed == 1 {
        PublishOutcome::Pushed
    } else {
        PublishOutcome::Duplicate
    };
    Ok(Published { outcome, runs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A throwaway redis-server, when one is installed (`make deps` installs it).
    struct Server(Child, u16);

    impl Server {
        fn start() -> Option<Self> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--bind",
                    "127.0.0.1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Server(child, port));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn a_slot_is_pushed_once_with_its_dedupe_key_expiring() {
        let Some(server) = Server::start() else {
            eprintln!("redis-server not installed; skipped");
            return;
        };
        let conns = crate::broker::Connections::new();
        let url = format!("redis://127.0.0.1:{}/0", server.1);
        let mut conn = conns.get(&url).await.expect("connect");
        let ttl = Duration::from_secs(600);
        let counter = |seed| RunCounter {
            key: "runs:t",
            seed,
            ttl: Duration::from_secs(3600),
        };
        let mut publish = async |dedupe, msg, seed| {
            publish_once(&mut conn, dedupe, ttl, "celery", msg, counter(seed))
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
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg("celery")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("lrange");
        assert_eq!(list, ["m2", "m1"], "LPUSH: newest first, once each");
        let left: i64 = redis::cmd("TTL")
            .arg("d:1")
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!((590..=600).contains(&left), "ttl {left}");
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_an_error_without_the_url() {
        let conns = crate::broker::Connections::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let err = conns
            .get(&format!("redis://:hunter2@127.0.0.1:{port}/0"))
            .await
            .expect_err("nothing listens");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(matches!(
            conns.get("http://nope").await,
            Err(BrokerError::InvalidUrl)
        ));
    }
}
