//! Pushes due at the same moment go to their broker together: one timer and one pipeline
//! per broker and instant, instead of one timer and one round trip per task.
//!
//! The timers and the pushes run on a thread of their own, so reconciles, message
//! building and status writes on the main runtime never delay a push that is due.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{BrokerError, BrokerUrl, Connections, Published, Push, UrlUsers, publish_batch};
use crate::timer_queue::{TimerQueue, sleep_until};

/// Largest pipeline; a longer backlog goes out in several, so no reply is huge.
const MAX_BATCH: usize = 2_000;

/// What a push did and when its broker acknowledged it.
pub(super) type Acked = (Published, DateTime<Utc>);

type Reply = oneshot::Sender<Result<Acked, BrokerError>>;

struct Request {
    url: BrokerUrl,
    at: Instant,
    push: Push,
    reply: Reply,
}

/// Handle of the push thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct PushThread {
    tx: mpsc::UnboundedSender<Message>,
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
        let thread = std::thread::Builder::new()
            .name("broker-push".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(dispatch(rx)),
                    Err(e) => tracing::error!(error = %e, "cannot build the push runtime"),
                }
            });
        if let Err(e) = thread {
            tracing::warn!(error = %e, "no push thread; pushing from the main runtime");
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(rx));
            return Self { tx };
        }
        Self { tx }
    }

    /// Pushes at `at` (at once if that is past) to the broker at `url`.
    pub(crate) async fn push(
        &self,
        url: &BrokerUrl,
        at: Instant,
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

/// Holds requests until their instant, then sends every due one, one pipeline per broker.
/// A batch goes out without waiting for the previous reply (connections are multiplexed).
/// A forgotten broker's connection closes once the pushes asked of it before are done: they
/// still go out, and must not leave behind the connection they reopened.
async fn dispatch(mut rx: mpsc::UnboundedReceiver<Message>) {
    let conns = Arc::new(Connections::new());
    let mut waiting: TimerQueue<Request> = TimerQueue::default();
    // Requests taken and not yet answered, per broker; and the forgotten brokers that have some.
    let mut unanswered = UrlUsers::default();
    let mut closing: HashSet<BrokerUrl> = HashSet::new();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(BrokerUrl, usize)>();
    loop {
        tokio::select! {
            biased;
            received = rx.recv() => match received {
                Some(m) => take(m, &mut waiting, &conns, &mut unanswered, &mut closing).await,
                None => return,
            },
            Some((url, n)) = sent_rx.recv() => {
                let mut last = false;
                for _ in 0..n {
                    last = unanswered.release(&url);
                }
                if last && closing.remove(&url) {
                    conns.forget(&url).await;
                }
            }
            _ = sleep_until(waiting.earliest()) => {}
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut waiting, &conns, &mut unanswered, &mut closing).await;
        }
        let mut due: HashMap<BrokerUrl, Vec<Request>> = HashMap::new();
        while let Some(r) = waiting.pop_due(Instant::now()) {
            due.entry(r.url.clone()).or_default().push(r);
        }
        for (url, mut batch) in due {
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(MAX_BATCH));
                tokio::spawn(send(url.clone(), conns.clone(), batch, sent_tx.clone()));
                batch = rest;
            }
        }
    }
}

async fn take(
    m: Message,
    waiting: &mut TimerQueue<Request>,
    conns: &Connections,
    unanswered: &mut UrlUsers,
    closing: &mut HashSet<BrokerUrl>,
) {
    match m {
        Message::Push(r) => {
            unanswered.add(&r.url);
            closing.remove(&r.url);
            waiting.push(r.at, r);
        }
        Message::Forget(url) => {
            if unanswered.has(&url) {
                closing.insert(url);
            } else {
                conns.forget(&url).await;
            }
        }
    }
}

async fn send(
    url: BrokerUrl,
    conns: Arc<Connections>,
    batch: Vec<Request>,
    sent: mpsc::UnboundedSender<(BrokerUrl, usize)>,
) {
    let n = batch.len();
    let (pushes, replies): (Vec<Push>, Vec<Reply>) =
        batch.into_iter().map(|r| (r.push, r.reply)).unzip();
    let result = match conns.get(&url).await {
        Ok(mut conn) => publish_batch(&mut conn, &pushes).await,
        Err(e) => Err(e),
    };
    let acked = Utc::now();
    match result {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result.map(|p| (p, acked)));
            }
        }
        Err(err) => {
            // A fresh connection next time, built with a connect timeout.
            conns.forget(&url).await;
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
    let _ = sent.send((url, n));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::broker::RunCounter;
    use crate::broker::test_server::Server;

    fn push(dedupe: &str) -> Push {
        Push {
            dedupe_key: dedupe.into(),
            dedupe_ttl: Duration::from_secs(60),
            queue_key: "celery".into(),
            envelope: "m".into(),
            counter: RunCounter {
                key: "runs".into(),
                seed: 0,
                ttl: Duration::from_secs(60),
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
            .push(&server.url, Instant::now(), push("d:1"))
            .await
            .expect("pushed");
        assert_eq!(server.clients().await, before + 1);
        // The last user goes while its next push (sent ahead of its slot) waits.
        let waiting = {
            let (pusher, url) = (pusher.clone(), server.url.clone());
            let at = Instant::now() + Duration::from_millis(300);
            tokio::spawn(async move { pusher.push(&url, at, push("d:2")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        pusher.forget(&server.url);
        let (published, _) = waiting.await.expect("join").expect("pushed");
        assert_eq!(published.outcome, crate::broker::PublishOutcome::Pushed);
        server.wait_for_clients(before).await;
    }
}
