//! A min-heap of timers with cancellation, shared by the beat's schedule and the push
//! thread. Cancelling leaves the heap item behind and forgets its payload, so re-arming
//! a timer costs O(log n) instead of a search through the heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Names one armed timer, to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerId(u64);

/// Items of type `T`, each due at an instant of type `At`.
pub(crate) struct TimerQueue<T, At = Instant> {
    heap: BinaryHeap<Reverse<(At, u64)>>,
    items: HashMap<u64, T>,
    next: u64,
}

impl<T, At> Default for TimerQueue<T, At>
where
    At: Ord,
{
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            items: HashMap::new(),
            next: 0,
        }
    }
}

impl<T, At: Ord + Copy> TimerQueue<T, At> {
    pub(crate) fn push(&mut self, at: At, item: T) -> TimerId {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.items.insert(self.next, item);
        TimerId(self.next)
    }

    /// Disarms a timer; its item is returned if it had not fired yet.
    pub(crate) fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.items.remove(&id.0)
    }

    /// When the next armed timer is due.
    pub(crate) fn earliest(&mut self) -> Option<At> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.items.contains_key(id) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// The next item due at or before `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: At) -> Option<T> {
        while let Some(at) = self.earliest() {
            if at > now {
                return None;
            }
            if let Some(Reverse((_, id))) = self.heap.pop()
                && let Some(item) = self.items.remove(&id)
            {
                return Some(item);
            }
        }
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }
}

/// The tokio instant of a wall-clock instant (now if it is past).
pub(crate) fn instant_of(at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - Utc::now()).to_std().unwrap_or_default()
}

/// Sleeps until `at`, or forever when nothing is armed.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_time_order_and_cancelled_ones_never() {
        let mut q: TimerQueue<&str, u32> = TimerQueue::default();
        q.push(30, "c");
        let b = q.push(20, "b");
        q.push(10, "a");
        q.push(20, "b2");
        assert_eq!(q.cancel(b), Some("b"));
        assert_eq!(q.cancel(b), None, "cancelled once");
        assert_eq!(q.len(), 3);
        assert_eq!(q.earliest(), Some(10));
        assert_eq!(q.pop_due(5), None, "nothing due yet");
        assert_eq!(q.pop_due(25), Some("a"));
        assert_eq!(q.pop_due(25), Some("b2"));
        assert_eq!(q.pop_due(25), None);
        assert_eq!(q.earliest(), Some(30));
        assert_eq!(q.pop_due(30), Some("c"));
        assert_eq!(q.earliest(), None);
    }

    #[test]
    fn a_cancelled_head_does_not_hide_the_next_timer() {
        let mut q: TimerQueue<u8, u32> = TimerQueue::default();
        let first = q.push(1, 1);
        q.push(2, 2);
        q.cancel(first);
        assert_eq!(q.earliest(), Some(2));
        assert_eq!(q.pop_due(2), Some(2));
    }
}
