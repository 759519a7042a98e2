//! The atomic publish: push a message only if its slot was never pushed before.
//!
//! Pushes are packed into calls (one transaction each) as they come, ahead of their slot, so
//! at the slot only sending is left: see [`Packer`].

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use redis::aio::ConnectionLike;

use super::BrokerError;
use crate::celery::run_counts_key;
use crate::celery::task_id::{LEGACY_RUNS_KEY, LEGACY_SLOT_KEY};

/// Runs in one transaction right after the `LPUSH` of every message of its call, and takes
/// back the ones whose task id is already marked: so the envelopes (most of the bytes) go
/// straight into the list and never through Lua, which halves what a push costs Redis.
/// KEYS: 1 the marks hash (task id -> 1) of the pushes' instant, 2 the run counts hash
/// (uid -> count) of this window, 3 that of the window before, 4 the queue list. ARGV: per
/// push `i` (from 1) 3i-2 task id, 3i-1 the task's uid, 3i the count the caller knows; then
/// the marks' TTL, the counts' TTL, and the key prefixes of the older per-slot and per-task
/// keys (read so that an upgrade hands a slot over without a double push). Returns per push
/// `status, runs`: 1 pushed, 0 the slot was pushed before (its message taken back).
///
/// Nothing runs between the `LPUSH` and this script, so the call's messages are the first
/// `n` of the list, push `i` at index `n - i`; a taken-back one is overwritten with a
/// tombstone and the tombstones removed from the head. The transaction makes a crash leave
/// either the messages with their marks and counts or nothing, and two publishers racing for
/// a slot push it once. A queue that refused the `LPUSH` (it holds another type) fails the
/// call before anything is marked, so the retry pushes. A count is the largest the caller,
/// this window, the last one or an older operator knows (counts only grow); duplicates read
/// it last, so they see the call's own pushes. What older operators left is read only for a
/// task's first push of a window: an upgrade hands a task over before its first push here,
/// and skipping those reads afterwards saves about a tenth of a push's Redis time.
pub(super) const PUBLISH_SCRIPT: &str = r#"
local marks, counts, counts_before, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('TYPE', queue).ok ~= 'list' then
  return redis.error_reply('WRONGTYPE the queue key holds no list')
end
local na = #ARGV
local mark_ttl, counts_ttl = tonumber(ARGV[na-3]), tonumber(ARGV[na-2])
local n = (na - 4) / 3
local ids, uids = {}, {}
for i = 1, n do
  ids[i], uids[i] = ARGV[3*i-2], ARGV[3*i-1]
end
local marked = redis.call('HMGET', marks, unpack(ids))
local now_runs = redis.call('HMGET', counts, unpack(uids))
-- A task this window has not counted yet: its count from the window before or an older
-- operator, and whether an older operator pushed this slot (it can only have handed it over
-- before the task's first push here).
local firsts, missing, known_before, marked_before = {}, {}, {}, {}
for i = 1, n do
  if not now_runs[i] then firsts[#firsts+1] = i end
end
if #firsts > 0 then
  local old_counts, old_marks = {}, {}
  for j, i in ipairs(firsts) do
    missing[j] = uids[i]
    old_counts[j] = ARGV[na] .. uids[i]
    old_marks[j] = ARGV[na-1] .. ids[i]
  end
  local runs_before = redis.call('HMGET', counts_before, unpack(missing))
  local old_runs = redis.call('MGET', unpack(old_counts))
  local old_marked = redis.call('MGET', unpack(old_marks))
  for j, i in ipairs(firsts) do
    known_before[missing[j]] = math.max(tonumber(runs_before[j]) or 0, tonumber(old_runs[j]) or 0)
    marked_before[i] = old_marked[j]
  end
end
local tombstone = 'celery-operator:taken-back'
local runs, seen, fresh, out, taken_back = {}, {}, {}, {}, 0
for i = 1, n do
  local id, uid = ids[i], uids[i]
  if not runs[uid] then
    runs[uid] = math.max(tonumber(ARGV[3*i]), tonumber(now_runs[i]) or 0,
      known_before[uid] or 0)
  end
  if marked[i] or marked_before[i] or seen[id] then
    redis.call('LSET', queue, n - i, tombstone)
    taken_back = taken_back + 1
    out[2*i-1] = 0
  else
    seen[id] = true
    fresh[#fresh+1] = id
    fresh[#fresh+1] = 1
    runs[uid] = runs[uid] + 1
    out[2*i-1] = 1
    out[2*i] = runs[uid]
  end
end
if taken_back > 0 then
  redis.call('LREM', queue, taken_back, tombstone)
end
if #fresh > 0 then
  redis.call('HSET', marks, unpack(fresh))
  if redis.call('TTL', marks) < mark_ttl then redis.call('EXPIRE', marks, mark_ttl) end
end
local written = {}
for uid, count in pairs(runs) do
  written[#written+1] = uid
  written[#written+1] = count
end
redis.call('HSET', counts, unpack(written))
redis.call('EXPIRE', counts, counts_ttl)
for i = 1, n do
  if out[2*i-1] == 0 then out[2*i] = runs[uids[i]] end
end
return out
"#;

/// Pushes per call (one transaction). Redis runs one transaction at a time and nothing else
/// meanwhile: at about 5 µs of Redis time a push (measured, 1.5 kB messages), 500 hold it for
/// about 2.5 ms.
const PUSHES_PER_CALL: usize = 500;
/// Length of a run-count window. A count must bridge a push and the status write that
/// records it; a task that pushes less often than this starts again from its status.
const RUN_COUNT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the publish did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishOutcome {
    /// The message was pushed now.
    Pushed,
    /// The slot had been pushed already (by an earlier run, a restart or another replica).
    Duplicate,
}

/// A task's run count in the broker. It counts pushes where they happen, so the count
/// survives a crash between push and status write, and replicas share it. `seed` is the
/// count the caller knows (its status), used when the broker knows less.
#[derive(Clone, Debug)]
pub(crate) struct RunCounter {
    /// The task object's uid.
    pub uid: String,
    pub seed: i64,
}

/// One message to push exactly once.
#[derive(Clone, Debug)]
pub(crate) struct Push {
    /// The transport's global key prefix: every key the push touches starts with it.
    pub key_prefix: String,
    /// The hash in which `task_id` marks the push done (see `celery::slot_marks_key`).
    pub marks_key: String,
    pub task_id: String,
    /// How long the mark must last: the longest any push of its hash asks for applies.
    pub mark_ttl: Duration,
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

/// What pushes must share to go in one call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CallKeys {
    key_prefix: String,
    marks_key: String,
    queue_key: String,
    window: i64,
}

/// One call: the `LPUSH` of its messages and the script that marks and counts them, each
/// taking its arguments as pushes come.
#[derive(Debug)]
pub(crate) struct Call {
    lpush: redis::Cmd,
    script: redis::Cmd,
    key_prefix: String,
    pushes: usize,
    mark_ttl: Duration,
}

impl Call {
    fn new(keys: &CallKeys) -> Self {
        let mut lpush = redis::cmd("LPUSH");
        lpush.arg(&keys.queue_key);
        // EVAL, not EVALSHA: a script missing at EXEC (flushed since) would fail after the
        // LPUSH ran; Redis finds the compiled script by its hash, the text costs microseconds.
        let mut script = redis::cmd("EVAL");
        script
            .arg(PUBLISH_SCRIPT)
            .arg(4)
            .arg(&keys.marks_key)
            .arg(run_counts_key(&keys.key_prefix, keys.window))
            .arg(run_counts_key(&keys.key_prefix, keys.window - 1))
            .arg(&keys.queue_key);
        Self {
            lpush,
            script,
            key_prefix: keys.key_prefix.clone(),
            pushes: 0,
            mark_ttl: Duration::ZERO,
        }
    }

    fn add(&mut self, push: &Push) {
        self.lpush.arg(&push.envelope);
        self.script
            .arg(&push.task_id)
            .arg(&push.counter.uid)
            .arg(push.counter.seed);
        self.pushes += 1;
        self.mark_ttl = self.mark_ttl.max(push.mark_ttl);
    }

    /// How many pushes it carries; they answer in the order they were added.
    pub(crate) fn pushes(&self) -> usize {
        self.pushes
    }

    /// `MULTI`, the `LPUSH`, the script with the arguments that come after every push's, `EXEC`.
    fn seal_into(mut self, pipe: &mut redis::Pipeline) {
        self.script
            .arg(self.mark_ttl.as_secs().max(1))
            .arg(2 * RUN_COUNT_WINDOW.as_secs())
            .arg(format!("{}{LEGACY_SLOT_KEY}", self.key_prefix))
            .arg(format!("{}{LEGACY_RUNS_KEY}", self.key_prefix));
        pipe.cmd("MULTI")
            .add_command(self.lpush)
            .add_command(self.script)
            .cmd("EXEC");
    }
}

/// Pushes of one broker packed into calls as they come, so that building the commands
/// (megabytes at thousands of pushes) is done before their instant.
#[derive(Debug, Default)]
pub(crate) struct Packer {
    calls: Vec<Call>,
    /// The call of each set of keys that still takes pushes.
    open: HashMap<CallKeys, usize>,
}

impl Packer {
    /// Packs `push`; returns the index of the call that carries it.
    pub(crate) fn add(&mut self, push: &Push) -> usize {
        let window = window_of(Utc::now());
        let keys = CallKeys {
            key_prefix: push.key_prefix.clone(),
            marks_key: push.marks_key.clone(),
            queue_key: push.queue_key.clone(),
            window,
        };
        let index = match self.open.get(&keys) {
            Some(&i) if self.calls[i].pushes < PUSHES_PER_CALL => i,
            _ => {
                self.calls.push(Call::new(&keys));
                let i = self.calls.len() - 1;
                self.open.insert(keys, i);
                i
            }
        };
        self.calls[index].add(push);
        index
    }

    /// The calls, in the order they were opened.
    pub(crate) fn finish(self) -> Vec<Call> {
        self.calls
    }
}

/// What one call did: each of its pushes, or the error that failed them all.
pub(crate) type CallResult = Result<Vec<Published>, BrokerError>;

/// Sends `call` as one transaction. The outer error is the connection's; the inner one the
/// call's (its queue key holds another type, Redis is out of memory), and then nothing of it
/// happened.
pub(crate) async fn send_call<C: ConnectionLike>(
    conn: &mut C,
    call: Call,
) -> Result<CallResult, BrokerError> {
    let n = call.pushes();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    call.seal_into(&mut pipe);
    let command_failed = |e: &redis::RedisError| BrokerError::Command(BrokerError::describe(e));
    let replies = pipe
        .query_async::<Vec<redis::RedisResult<redis::Value>>>(conn)
        .await
        .map_err(|e| command_failed(&e))?;
    // MULTI, QUEUED, QUEUED, then EXEC's: the LPUSH's and the script's replies.
    let Ok::<[_; 4], _>([_, lpush, script, exec]) = replies.try_into() else {
        return Err(BrokerError::Command(
            "not 4 replies to a transaction".into(),
        ));
    };
    // A command refused while queued aborts the transaction; its own error says why.
    if let Some(e) = [&lpush, &script].into_iter().find_map(|r| r.as_ref().err()) {
        return Ok(Err(
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly) {
                BrokerError::ReadOnly
            } else {
                command_failed(e)
            },
        ));
    }
    Ok(exec
        .map_err(|e| command_failed(&e))
        .and_then(|exec| outcomes(exec, n)))
}

/// Longest a batch waits for its replicas to confirm it (below the connection's response
/// timeout): past it the pushes are reported unconfirmed and pushed again later.
const CONFIRM_TIMEOUT_MS: u64 = 1000;

/// Replicas in sync with the primary (`state=online` in `INFO replication`): those a
/// failover may promote, and so those a push must reach.
fn online_replicas(info: &str) -> usize {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

/// Waits until every replica in sync has what this connection wrote (`WAIT`), so a failover
/// right after a push cannot lose it while the push counts as done. A broker without
/// replicas answers at once. `WAIT` cannot go in the transaction or the script (it never
/// blocks in `MULTI` and is refused in scripts), so this is one more round trip per batch.
pub(crate) async fn confirm<C: ConnectionLike>(conn: &mut C) -> Result<(), BrokerError> {
    let failed = |e: redis::RedisError| BrokerError::Command(BrokerError::describe(&e));
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await
        .map_err(failed)?;
    let replicas = online_replicas(&info);
    if replicas == 0 {
        return Ok(());
    }
    let acked: usize = redis::cmd("WAIT")
        .arg(replicas)
        .arg(CONFIRM_TIMEOUT_MS)
        .query_async(conn)
        .await
        .map_err(failed)?;
    if acked < replicas {
        return Err(BrokerError::Unconfirmed { acked, replicas });
    }
    Ok(())
}

/// Each push's outcome from `EXEC`'s reply: the `LPUSH`'s, then the script's `status, runs`
/// per push.
fn outcomes(exec: redis::Value, n: usize) -> CallResult {
    let script = match exec {
        redis::Value::Array(mut both) if both.len() == 2 => both.pop(),
        _ => None,
    }
    .ok_or_else(|| BrokerError::Command("the transaction did not run".into()))?;
    let flat: Vec<i64> = redis::from_redis_value(script)
        .map_err(|e| BrokerError::Command(BrokerError::describe(&e.into())))?;
    if flat.len() != 2 * n {
        return Err(BrokerError::Command(format!(
            "{} replies for {n} pushes",
            flat.len() / 2
        )));
    }
    Ok(flat.chunks(2).map(|p| outcome(p[0], p[1])).collect())
}

fn outcome(status: i64, runs: i64) -> Published {
    let outcome = if status == 1 {
        PublishOutcome::Pushed
    } else {
        PublishOutcome::Duplicate
    };
    Published { outcome, runs }
}

/// The run-count window `at` falls in.
fn window_of(at: chrono::DateTime<Utc>) -> i64 {
    at.timestamp() / RUN_COUNT_WINDOW.as_secs() as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_replicas_in_sync_must_confirm() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:3\r\n\
            slave0:ip=a,port=6379,state=online,offset=10,lag=0\r\n\
            slave1:ip=b,port=6379,state=wait_bgsave,offset=0,lag=0\r\n\
            slave2:ip=c,port=6379,state=online,offset=10,lag=1\r\n\
            master_failover_state:no-failover\r\n";
        assert_eq!(online_replicas(info), 2);
        assert_eq!(
            online_replicas("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"),
            0
        );
    }

    use super::*;
    use crate::broker::BrokerUrl;
    use crate::broker::test_server::Server;

    /// Packs and sends `pushes`; each push's result in their order.
    async fn publish_batch<C: ConnectionLike>(
        conn: &mut C,
        pushes: &[Push],
    ) -> Result<Vec<Result<Published, BrokerError>>, BrokerError> {
        let mut packer = Packer::default();
        let placed: Vec<usize> = pushes.iter().map(|p| packer.add(p)).collect();
        let mut per_call = vec![];
        for call in packer.finish() {
            per_call.push(send_call(conn, call).await?.map(Vec::into_iter));
        }
        Ok(placed
            .into_iter()
            .map(|call| match &mut per_call[call] {
                Ok(results) => Ok(results.next().expect("a result per push")),
                Err(e) => Err(e.clone()),
            })
            .collect())
    }

    /// Packs and sends `pushes`, each of which must get an answer.
    async fn publish_all<C: ConnectionLike>(conn: &mut C, pushes: &[Push]) -> Vec<Published> {
        let results = publish_batch(conn, pushes).await.expect("batch");
        results.into_iter().map(|r| r.expect("reply")).collect()
    }

    async fn publish_once<C: ConnectionLike>(
        conn: &mut C,
        push: &Push,
    ) -> Result<Published, BrokerError> {
        let mut results = publish_batch(conn, std::slice::from_ref(push)).await?;
        results.pop().expect("one reply")
    }

    /// `envelope` for `queue` as task id `id` of the instant `marks` (600 s), counted for
    /// task `t` from `seed`.
    fn push(marks: &str, id: &str, queue: &str, envelope: &str, seed: i64) -> Push {
        Push {
            key_prefix: String::new(),
            marks_key: marks.into(),
            task_id: id.into(),
            mark_ttl: Duration::from_secs(600),
            queue_key: queue.into(),
            envelope: envelope.into(),
            counter: RunCounter {
                uid: "t".into(),
                seed,
            },
        }
    }

    async fn cmd<T: redis::FromRedisValue, C: ConnectionLike>(conn: &mut C, args: &[&str]) -> T {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(conn)
            .await
            .expect(args[0])
    }

    async fn lrange<C: ConnectionLike>(conn: &mut C, key: &str) -> Vec<String> {
        cmd(conn, &["LRANGE", key, "0", "-1"]).await
    }

    fn pushed(runs: i64) -> Published {
        Published {
            outcome: PublishOutcome::Pushed,
            runs,
        }
    }

    fn duplicate(runs: i64) -> Published {
        Published {
            outcome: PublishOutcome::Duplicate,
            runs,
        }
    }

    #[tokio::test]
    async fn a_slot_is_pushed_once_with_its_mark_expiring() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let mut publish = async |id, msg, seed| {
            publish_once(&mut conn, &push("s:1", id, "celery", msg, seed))
                .await
                .expect("publish")
        };
        // The count starts from the seed the caller knows, then counts in Redis: a stale
        // seed later (a restarted publisher) does not reset it, a duplicate does not count.
        assert_eq!(publish("a", "m1", 5).await, pushed(6));
        assert_eq!(publish("a", "m1", 0).await, duplicate(6));
        assert_eq!(publish("b", "m2", 0).await, pushed(7));
        assert_eq!(
            lrange(&mut conn, "celery").await,
            ["m2", "m1"],
            "LPUSH: newest first, once each"
        );
        let left: i64 = cmd(&mut conn, &["TTL", "s:1"]).await;
        assert!((590..=600).contains(&left), "ttl {left}");
        // A push asking for a longer mark extends the instant's; a shorter one does not cut it.
        let mut long = push("s:1", "c", "celery", "m3", 0);
        long.mark_ttl = Duration::from_secs(7200);
        publish_once(&mut conn, &long).await.expect("publish");
        publish_once(&mut conn, &push("s:1", "d", "celery", "m4", 0))
            .await
            .expect("publish");
        let left: i64 = cmd(&mut conn, &["TTL", "s:1"]).await;
        assert!((7190..=7200).contains(&left), "ttl {left}");
        // The counts of a window outlive the next one.
        let counts = run_counts_key("", window_of(Utc::now()));
        let left: i64 = cmd(&mut conn, &["TTL", &counts]).await;
        let two_windows = 2 * RUN_COUNT_WINDOW.as_secs() as i64;
        assert!(
            (two_windows - 10..=two_windows).contains(&left),
            "ttl {left}"
        );
    }

    #[tokio::test]
    async fn a_failing_queue_fails_its_call_alone_and_a_script_flush_is_survived() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let _: () = cmd(&mut conn, &["SET", "not-a-list", "x"]).await;
        // Redis forgot the script (a restart, SCRIPT FLUSH): the batch loads it again.
        let _: () = cmd(&mut conn, &["SCRIPT", "FLUSH"]).await;
        let batch = [
            push("s:1", "a", "q", "m1", 0),
            push("s:1", "b", "not-a-list", "m2", 0),
            push("s:1", "c", "q", "m3", 0),
        ];
        let results = publish_batch(&mut conn, &batch).await.expect("batch");
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().ok(), Some(&pushed(1)));
        let err = results[1].as_ref().expect_err("WRONGTYPE");
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
        assert_eq!(results[2].as_ref().ok(), Some(&pushed(2)));
        assert_eq!(lrange(&mut conn, "q").await, ["m3", "m1"]);

        // Nothing is lost: once the key is fixed, the failed push goes out on retry.
        let _: () = cmd(&mut conn, &["DEL", "not-a-list"]).await;
        let retry = publish_once(&mut conn, &batch[1]).await.expect("retry");
        assert_eq!(retry, pushed(3));
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
                    uid: format!("t{i}"),
                    seed: 10,
                },
                ..push(
                    "s:1",
                    &format!("id{i}"),
                    ["a", "b"][i % 2],
                    &format!("m{i}"),
                    0,
                )
            })
            .collect();
        let first = publish_batch(&mut conn, &batch).await.expect("batch");
        let again = publish_batch(&mut conn, &batch).await.expect("batch");
        assert!(
            first
                .iter()
                .all(|r| *r.as_ref().expect("pushed") == pushed(11))
        );
        assert!(
            again
                .iter()
                .all(|r| *r.as_ref().expect("dup") == duplicate(11))
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
        let batch = [
            push("s:1", "a", "q", "m1", 3),
            push("s:1", "a", "q", "m1", 3),
        ];
        let outcomes = publish_all(&mut conn, &batch).await;
        assert_eq!(outcomes, [pushed(4), duplicate(4)]);
        assert_eq!(lrange(&mut conn, "q").await, ["m1"]);
    }

    #[tokio::test]
    async fn duplicates_in_the_middle_of_a_call_are_taken_back_and_nothing_else_moves() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        // A backlog the workers have not taken yet, then two of the slots pushed earlier.
        let _: () = cmd(&mut conn, &["RPUSH", "q", "b2", "b1"]).await;
        let batch: Vec<Push> = (1..=5)
            .map(|i| push("s:1", &format!("x{i}"), "q", &format!("m{i}"), 0))
            .collect();
        publish_batch(&mut conn, &[batch[1].clone(), batch[3].clone()])
            .await
            .expect("earlier");
        let outcomes: Vec<PublishOutcome> = publish_all(&mut conn, &batch)
            .await
            .into_iter()
            .map(|p| p.outcome)
            .collect();
        use PublishOutcome::{Duplicate, Pushed};
        assert_eq!(outcomes, [Pushed, Duplicate, Pushed, Duplicate, Pushed]);
        assert_eq!(
            lrange(&mut conn, "q").await,
            ["m5", "m3", "m1", "m4", "m2", "b2", "b1"]
        );
    }

    #[tokio::test]
    async fn a_slot_an_older_operator_pushed_is_not_pushed_again_and_its_count_goes_on() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        // What an operator before the per-instant hashes left: a slot's key, a task's count.
        let _: () = cmd(&mut conn, &["SET", "app:celery-operator:slot:a", "1"]).await;
        let _: () = cmd(&mut conn, &["SET", "app:celery-operator:runs:t", "20"]).await;
        let prefixed = |id, msg| Push {
            key_prefix: "app:".into(),
            ..push("app:s:1", id, "q", msg, 0)
        };
        let outcomes = publish_all(&mut conn, &[prefixed("a", "m1"), prefixed("b", "m2")]).await;
        assert_eq!(outcomes, [duplicate(21), pushed(21)]);
        assert_eq!(lrange(&mut conn, "q").await, ["m2"]);
    }

    #[tokio::test]
    async fn an_older_operators_marks_are_matched_to_their_pushes_among_counted_tasks() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let now = run_counts_key("", window_of(Utc::now()));
        let _: () = cmd(&mut conn, &["HSET", &now, "counted", "5"]).await;
        // An older operator pushed the slot of "handed" and counted "fresh" and "handed".
        let _: () = cmd(&mut conn, &["SET", "celery-operator:slot:h1", "1"]).await;
        let _: () = cmd(&mut conn, &["SET", "celery-operator:runs:handed", "30"]).await;
        let _: () = cmd(&mut conn, &["SET", "celery-operator:runs:fresh", "9"]).await;
        let of = |uid: &str, id, msg| Push {
            counter: RunCounter {
                uid: uid.into(),
                seed: 0,
            },
            ..push("s:1", id, "q", msg, 0)
        };
        let outcomes = publish_all(
            &mut conn,
            &[
                of("counted", "c1", "m1"),
                of("fresh", "f1", "m2"),
                of("handed", "h1", "m3"),
            ],
        )
        .await;
        assert_eq!(outcomes, [pushed(6), pushed(10), duplicate(30)]);
        assert_eq!(lrange(&mut conn, "q").await, ["m2", "m1"]);
    }

    #[tokio::test]
    async fn a_count_goes_on_from_the_window_before() {
        let server = Server::start().await;
        let mut conn = server.conn.clone();
        let before = run_counts_key("", window_of(Utc::now()) - 1);
        let _: () = cmd(&mut conn, &["HSET", &before, "t", "41"]).await;
        let first = publish_once(&mut conn, &push("s:1", "a", "q", "m1", 7))
            .await
            .expect("publish");
        assert_eq!(first, pushed(42));
        let now = run_counts_key("", window_of(Utc::now()));
        let counted: i64 = cmd(&mut conn, &["HGET", &now, "t"]).await;
        assert_eq!(counted, 42);
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
