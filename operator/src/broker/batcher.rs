//! Pushes due at the same moment go to their broker together: one timer per broker and
//! instant, and one transaction per 500 pushes, instead of a timer and a round trip per task.
//!
//! The timers and the pushes run on a thread of their own, so reconciles, message
//! building and status writes on the main runtime never delay a push that is due. A push is
//! packed into its call when it arrives (its lead before the slot), so at the slot only
//! writing to the socket is left; the answers go back once every push of the instant is in,
//! so the main runtime's work on them does not compete with the pushes still going out.
//! A batch counts as done only once every replica of its broker has it (`WAIT`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::publish::{CallResult, Packer, confirm, send_call};
use super::{BrokerError, BrokerUrl, Connections, Published, Push, UrlUsers};
use crate::timer_queue::{TimerQueue, instant_of, sleep_until};

/// What a push did and when its broker acknowledged it.
pub(super) type Acked = (Published, DateTime<Utc>);

type Reply = oneshot::Sender<Result<Acked, BrokerError>>;

struct Request {
    url: BrokerUrl,
    at: DateTime<Utc>,
    push: Push,
    reply: Reply,
}

/// The pushes to one broker due at one instant, packed into calls as they come.
#[derive(Default)]
struct Batch {
    packer: Packer,
    /// Per call, the replies of its pushes in their order.
    replies: Vec<Vec<Reply>>,
}

impl Batch {
    fn add(&mut self, push: &Push, reply: Reply) {
        let call = self.packer.add(push);
        if self.replies.len() <= call {
            self.replies.resize_with(call + 1, Vec::new);
        }
        self.replies[call].push(reply);
    }

    /// One count per call (a few dozen at most), not per push.
    fn len(&self) -> usize {
        self.replies.iter().map(Vec::len).sum()
    }
}

type BatchKey = (BrokerUrl, DateTime<Utc>);

/// What sending one call gave (the outer error is the connection's), and when.
type Sent = (Result<CallResult, BrokerError>, DateTime<Utc>);

/// A batch this big makes its instant one that other bulk work (status writes) keeps clear
/// of: on a small machine the API server's work for them would slow the pushes.
const BIG_BATCH: usize = 500;
/// How long before a big batch's instant other work holds off.
const QUIET_AHEAD: Duration = Duration::from_millis(30);

/// Big batches due soon or going out now, for work that should hold off meanwhile.
#[derive(Debug, Default)]
pub(crate) struct PushWindow {
    /// Unix milliseconds of the earliest big batch still waiting; 0 when there is none.
    next_big_ms: AtomicI64,
    /// Big batches on their way.
    sending: AtomicUsize,
}

impl PushWindow {
    /// How long to wait before doing bulk work at `now`: none when no big batch is going out
    /// or due within [`QUIET_AHEAD`]. Callers bound how long they hold off in all.
    pub(crate) fn hold(&self, now: DateTime<Utc>) -> Option<Duration> {
        const POLL: Duration = Duration::from_millis(5);
        if self.sending.load(Ordering::Relaxed) > 0 {
            return Some(POLL);
        }
        let next = self.next_big_ms.load(Ordering::Relaxed);
        let ahead = next - now.timestamp_millis();
        (next > 0 && (0..=QUIET_AHEAD.as_millis() as i64).contains(&ahead))
            .then(|| Duration::from_millis(ahead.unsigned_abs()).max(POLL))
    }
}

/// Handle of the push thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct PushThread {
    tx: mpsc::UnboundedSender<Message>,
    window: Arc<PushWindow>,
}

enum Message {
    Push(Request),
    /// Nothing pushes to this broker any more: close its connection.
    Forget(BrokerUrl),
}

impl std::fmt::Debug for PushThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushThread { .. }")
    }
}

impl PushThread {
    /// Starts the push thread (or, if no thread can be started, a task on this runtime).
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let window = Arc::new(PushWindow::default());
        let shown = window.clone();
        let thread = std::thread::Builder::new()
            .name("broker-push".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(dispatch(rx, shown)),
                    Err(e) => tracing::error!(error = %e, "cannot build the push runtime"),
                }
            });
        if let Err(e) = thread {
            tracing::warn!(error = %e, "no push thread; pushing from the main runtime");
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(rx, window.clone()));
            return Self { tx, window };
        }
        Self { tx, window }
    }

    /// When big batches go out (see [`PushWindow::hold`]).
    pub(crate) fn window(&self) -> Arc<PushWindow> {
        self.window.clone()
    }

    /// Pushes at `at` (at once if that is past) to the broker at `url`. Pushes asked for the
    /// same broker and instant go out together.
    pub(crate) async fn push(
        &self,
        url: &BrokerUrl,
        at: DateTime<Utc>,
        push: Push,
    ) -> Result<Acked, BrokerError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            url: url.clone(),
            at,
            push,
            reply,
        };
        if self.tx.send(Message::Push(request)).is_err() {
            return Err(BrokerError::Command("the push thread stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(BrokerError::Command("the push thread stopped".into())))
    }

    /// Closes the connection to `url` (its last user is gone); a later push reconnects.
    pub(crate) fn forget(&self, url: &BrokerUrl) {
        // The thread only stops when every handle is gone: nothing to close then.
        let _ = self.tx.send(Message::Forget(url.clone()));
    }
}

/// Packs requests into their broker and instant's batch, then sends each batch at its
/// instant. A batch goes out without waiting for the previous reply (connections are
/// multiplexed). A forgotten broker's connection closes once the pushes asked of it before
/// are done: they still go out, and must not leave behind the connection they reopened.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<Message>, window: Arc<PushWindow>) {
    let mut state = State::default();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(BrokerUrl, usize)>();
    loop {
        tokio::select! {
            biased;
            received = rx.recv() => match received {
                Some(m) => state.take(m).await,
                None => return,
            },
            Some((url, n)) = sent_rx.recv() => {
                if n >= BIG_BATCH {
                    window.sending.fetch_sub(1, Ordering::Relaxed);
                }
                let mut last = false;
                for _ in 0..n {
                    last = state.unanswered.release(&url);
                }
                if last && state.closing.remove(&url) {
                    state.conns.forget(&url).await;
                }
            }
            _ = sleep_until(state.timers.earliest()) => {}
        }
        while let Ok(m) = rx.try_recv() {
            state.take(m).await;
        }
        while let Some(key) = state.timers.pop_due(Instant::now()) {
            if let Some(batch) = state.batches.remove(&key) {
                let (url, at) = key;
                state.big.remove(&at);
                if batch.len() >= BIG_BATCH {
                    window.sending.fetch_add(1, Ordering::Relaxed);
                }
                tokio::spawn(send(url, state.conns.clone(), batch, sent_tx.clone()));
            }
        }
        let next = state.big.first().map_or(0, DateTime::timestamp_millis);
        window.next_big_ms.store(next, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct State {
    conns: Arc<Connections>,
    batches: HashMap<BatchKey, Batch>,
    timers: TimerQueue<BatchKey>,
    /// Instants of the waiting batches of at least [`BIG_BATCH`] pushes.
    big: BTreeSet<DateTime<Utc>>,
    /// Requests taken and not yet answered, per broker; and the forgotten brokers that have some.
    unanswered: UrlUsers,
    closing: HashSet<BrokerUrl>,
}

impl State {
    async fn take(&mut self, m: Message) {
        match m {
            Message::Push(r) => {
                self.unanswered.add(&r.url);
                self.closing.remove(&r.url);
                let key = (r.url, r.at);
                let batch = self.batches.entry(key.clone()).or_insert_with_key(|key| {
                    self.timers.push(instant_of(key.1), key.clone());
                    Batch::default()
                });
                batch.add(&r.push, r.reply);
                if batch.len() == BIG_BATCH {
                    self.big.insert(key.1);
                }
            }
            Message::Forget(url) => {
                if self.unanswered.has(&url) {
                    self.closing.insert(url);
                } else {
                    self.conns.forget(&url).await;
                }
            }
        }
    }
}

/// Sends a batch's calls, each as soon as it is encoded (the connection writes one while the
/// next is encoded: encoding them all first delayed the first push by milliseconds per call),
/// then answers every push.
async fn send(
    url: BrokerUrl,
    conns: Arc<Connections>,
    batch: Batch,
    sent: mpsc::UnboundedSender<(BrokerUrl, usize)>,
) {
    let n = batch.len();
    let calls = batch.packer.finish();
    let results: Vec<Sent> = match conns.get(&url).await {
        Ok(conn) => {
            let mut sent: Vec<(usize, Sent)> = Vec::with_capacity(calls.len());
            let mut going = FuturesUnordered::new();
            for (i, call) in calls.into_iter().enumerate() {
                let mut conn = conn.clone();
                going.push(async move { (i, (send_call(&mut conn, call).await, Utc::now())) });
                // Polled once, the call is encoded and queued; yielding lets the connection
                // write it before the next one is encoded.
                while let Poll::Ready(Some(done)) = futures::poll!(going.next()) {
                    sent.push(done);
                }
                tokio::task::yield_now().await;
            }
            while let Some(done) = going.next().await {
                sent.push(done);
            }
            sent.sort_by_key(|(i, _)| *i);
            let mut sent: Vec<Sent> = sent.into_iter().map(|(_, s)| s).collect();
            // Done only once every replica has it: after the last call, one WAIT covers all.
            if sent.iter().any(|(r, _)| matches!(r, Ok(Ok(_))))
                && let Err(e) = confirm(&mut conn.clone()).await
            {
                for (result, _) in &mut sent {
                    if let Ok(Ok(_)) = result {
                        *result = Ok(Err(e.clone()));
                    }
                }
            }
            sent
        }
        Err(e) => calls.iter().map(|_| (Err(e.clone()), Utc::now())).collect(),
    };
    let mut failed = false;
    for ((result, acked), replies) in results.into_iter().zip(batch.replies) {
        let published = result.unwrap_or_else(|connection| {
            failed = true;
            Err(connection)
        });
        // A replica since a failover: only a new connection finds the new primary.
        failed |= matches!(published, Err(BrokerError::ReadOnly));
        match published {
            Ok(published) => {
                for (reply, p) in replies.into_iter().zip(published) {
                    let _ = reply.send(Ok((p, acked)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
    if failed {
        // A fresh connection next time, built with a connect timeout.
        conns.forget(&url).await;
    }
    let _ = sent.send((url, n));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::broker::RunCounter;
    use crate::broker::test_server::Server;

    fn push(id: &str) -> Push {
        Push {
            key_prefix: String::new(),
            marks_key: "s:1".into(),
            task_id: id.into(),
            mark_ttl: Duration::from_secs(60),
            queue_key: "celery".into(),
            envelope: format!("m-{id}"),
            counter: RunCounter {
                uid: "t".into(),
                seed: 0,
            },
        }
    }

    #[tokio::test]
    async fn a_push_waiting_when_its_broker_is_forgotten_goes_out_then_the_connection_closes() {
        let server = Server::start().await;
        let before = server.clients().await;
        let pusher = PushThread::start();
        // A first push opens the connection.
        pusher
            .push(&server.url, Utc::now(), push("d:1"))
            .await
            .expect("pushed");
        assert_eq!(server.clients().await, before + 1);
        // The last user goes while its next push (sent ahead of its slot) waits.
        let waiting = {
            let (pusher, url) = (pusher.clone(), server.url.clone());
            let at = Utc::now() + Duration::from_millis(300);
            tokio::spawn(async move { pusher.push(&url, at, push("d:2")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        pusher.forget(&server.url);
        let (published, _) = waiting.await.expect("join").expect("pushed");
        assert_eq!(published.outcome, crate::broker::PublishOutcome::Pushed);
        server.wait_for_clients(before).await;
    }

    #[tokio::test]
    async fn pushes_for_one_instant_go_out_together_at_it_not_before() {
        let server = Server::start().await;
        let pusher = PushThread::start();
        let at = Utc::now() + Duration::from_millis(400);
        let asked: Vec<_> = (0..3)
            .map(|i| {
                let (pusher, url) = (pusher.clone(), server.url.clone());
                tokio::spawn(async move { pusher.push(&url, at, push(&format!("p{i}"))).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut conn = server.conn.clone();
        let early: i64 = redis::cmd("LLEN")
            .arg("celery")
            .query_async(&mut conn)
            .await
            .expect("llen");
        assert_eq!(early, 0, "nothing before its instant");
        let mut acks = vec![];
        for answer in asked {
            let (published, acked) = answer.await.expect("join").expect("pushed");
            assert_eq!(published.outcome, crate::broker::PublishOutcome::Pushed);
            assert!(acked >= at, "acknowledged {acked} before {at}");
            acks.push((published.runs, acked));
        }
        // One call: the three counted 1, 2, 3 in one go, acknowledged at one moment.
        acks.sort();
        assert_eq!(acks.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(acks.iter().all(|a| a.1 == acks[0].1), "{acks:?}");
    }

    async fn queued(server: &Server) -> i64 {
        let mut conn = server.conn.clone();
        redis::cmd("LLEN")
            .arg("celery")
            .query_async(&mut conn)
            .await
            .expect("llen")
    }

    #[tokio::test]
    async fn a_push_counts_as_done_only_once_every_replica_has_it() {
        let primary = Server::start().await;
        let replica = Server::replica_of(&primary).await;
        let pusher = PushThread::start();
        pusher
            .push(&primary.url, Utc::now(), push("r:1"))
            .await
            .expect("confirmed");
        assert_eq!(queued(&replica).await, 1, "on the replica when answered");

        // A replica that hangs: the push is on the primary, but a failover now could lose
        // it, so it is not reported done.
        replica.freeze(true);
        let err = pusher
            .push(&primary.url, Utc::now(), push("r:2"))
            .await
            .expect_err("not confirmed");
        replica.freeze(false);
        assert!(
            matches!(
                err,
                BrokerError::Unconfirmed {
                    acked: 0,
                    replicas: 1
                }
            ),
            "{err:?}"
        );
        // Retried (as the engine does), it is a duplicate: its mark replicated with it.
        let (again, _) = pusher
            .push(&primary.url, Utc::now(), push("r:2"))
            .await
            .expect("confirmed");
        assert_eq!(again.outcome, crate::broker::PublishOutcome::Duplicate);
        assert_eq!(queued(&replica).await, 2);
    }

    #[tokio::test]
    async fn a_push_refused_by_a_replica_says_so_and_drops_the_connection() {
        // After a failover a client may still hold a connection to the old primary, now a
        // replica (a Service's conntrack entry outlives its endpoints): only a new
        // connection reaches the new primary.
        let primary = Server::start().await;
        let replica = Server::replica_of(&primary).await;
        let before = replica.clients().await;
        let pusher = PushThread::start();
        let err = pusher
            .push(&replica.url, Utc::now(), push("ro:1"))
            .await
            .expect_err("a replica takes no writes");
        assert!(matches!(err, BrokerError::ReadOnly), "{err:?}");
        replica.wait_for_clients(before).await;
    }

    #[tokio::test]
    async fn without_replicas_a_push_is_confirmed_at_once() {
        let server = Server::start().await;
        let pusher = PushThread::start();
        let (published, _) = pusher
            .push(&server.url, Utc::now(), push("s:1"))
            .await
            .expect("pushed");
        assert_eq!(published.outcome, crate::broker::PublishOutcome::Pushed);
    }

    #[test]
    fn bulk_work_holds_off_just_before_and_while_a_big_batch_goes_out() {
        let window = PushWindow::default();
        let now = Utc::now();
        assert_eq!(window.hold(now), None, "nothing due");
        let due_in = |ms| {
            let at = now + chrono::TimeDelta::milliseconds(ms);
            window
                .next_big_ms
                .store(at.timestamp_millis(), Ordering::Relaxed);
        };
        due_in(200);
        assert_eq!(window.hold(now), None, "not yet");
        due_in(20);
        assert_eq!(window.hold(now), Some(Duration::from_millis(20)));
        due_in(-5);
        assert_eq!(
            window.hold(now),
            None,
            "its instant passed: it is sending or gone"
        );
        window.sending.fetch_add(1, Ordering::Relaxed);
        assert_eq!(window.hold(now), Some(Duration::from_millis(5)));
    }

    #[tokio::test]
    async fn a_big_batch_is_announced_before_its_instant_and_cleared_once_answered() {
        let server = Server::start().await;
        let pusher = PushThread::start();
        let window = pusher.window();
        let at = Utc::now() + Duration::from_millis(500);
        let asked: Vec<_> = (0..BIG_BATCH)
            .map(|i| {
                let (pusher, url) = (pusher.clone(), server.url.clone());
                tokio::spawn(async move { pusher.push(&url, at, push(&format!("p{i}"))).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            window.next_big_ms.load(Ordering::Relaxed),
            at.timestamp_millis()
        );
        for answer in asked {
            answer.await.expect("join").expect("pushed");
        }
        // The thread counts the batch done right after answering it.
        for _ in 0..100 {
            if window.hold(Utc::now()).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(window.hold(Utc::now()), None);
        assert_eq!(window.next_big_ms.load(Ordering::Relaxed), 0);
    }
}
