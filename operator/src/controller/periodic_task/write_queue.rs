//! The order status writes go out in, over all tasks: first what a user waits for (a new
//! object's first status, a condition or the generation that changed), in arrival order;
//! then routine run bookkeeping (`lastScheduleTime`, `totalRuns`, outcomes), each task's at
//! most once per [`ROUTINE_EVERY`], the longest waiting first. Pure: the writer calls it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::engine::Key;

/// A task's routine rewrites are this far apart at least: what happens in between (runs of
/// a task firing every few hundred ms, a run's PENDING, STARTED and SUCCESS) lands in one
/// write, while a state that lasts a second (a RETRY's countdown) still shows. Under load
/// the writes/s budget spreads them further (see the README).
pub(crate) const ROUTINE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Priority {
    Routine,
    Urgent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Urgent,
    Routine(Instant),
}

#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    urgent: VecDeque<Key>,
    routine: BTreeSet<(Instant, Key)>,
    queued: HashMap<Key, Place>,
}

impl WriteQueue {
    /// Queues a write of `key`; `written_at` is when its status was last written. A key
    /// queued already keeps its place, unless it becomes urgent.
    pub(crate) fn push(
        &mut self,
        key: &Key,
        priority: Priority,
        written_at: Option<Instant>,
        now: Instant,
    ) {
        match (self.queued.get(key).copied(), priority) {
            (Some(Place::Urgent), _) | (Some(Place::Routine(_)), Priority::Routine) => {}
            (Some(Place::Routine(at)), Priority::Urgent) => {
                self.routine.remove(&(at, key.clone()));
                self.urgent_back(key);
            }
            (None, Priority::Urgent) => self.urgent_back(key),
            (None, Priority::Routine) => {
                let at = written_at.map_or(now, |w| w + ROUTINE_EVERY);
                self.routine.insert((at, key.clone()));
                self.queued.insert(key.clone(), Place::Routine(at));
            }
        }
    }

    fn urgent_back(&mut self, key: &Key) {
        self.urgent.push_back(key.clone());
        self.queued.insert(key.clone(), Place::Urgent);
    }

    /// The next key to write at `now`, or when the next one is due (`None`: nothing queued).
    pub(crate) fn pop(&mut self, now: Instant) -> Result<Key, Option<Instant>> {
        if let Some(key) = self.urgent.pop_front() {
            self.queued.remove(&key);
            return Ok(key);
        }
        match self.routine.first().cloned() {
            Some((at, key)) if at <= now => {
                self.routine.remove(&(at, key.clone()));
                self.queued.remove(&key);
                Ok(key)
            }
            Some((at, _)) => Err(Some(at)),
            None => Err(None),
        }
    }

    pub(crate) fn remove(&mut self, key: &Key) {
        match self.queued.remove(key) {
            Some(Place::Urgent) => self.urgent.retain(|k| k != key),
            Some(Place::Routine(at)) => {
                self.routine.remove(&(at, key.clone()));
            }
            None => {}
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Key {
        format!("ns/t{n}")
    }

    #[test]
    fn a_first_status_goes_ahead_of_thousands_of_routine_rewrites() {
        let t0 = Instant::now();
        let mut q = WriteQueue::default();
        for n in 0..5000 {
            q.push(&key(n), Priority::Routine, None, t0);
        }
        q.push(&key(9999), Priority::Urgent, None, t0);
        assert_eq!(q.pop(t0), Ok(key(9999)));
        assert_eq!(q.pop(t0), Ok(key(0)), "then the longest waiting");
        assert_eq!(q.len(), 4999);
    }

    #[test]
    fn routine_rewrites_of_a_task_coalesce_and_wait_their_turn() {
        let t0 = Instant::now();
        let mut q = WriteQueue::default();
        // Written just now: its next routine rewrite is ROUTINE_EVERY later, however many
        // runs come in between.
        for _ in 0..10 {
            q.push(&key(1), Priority::Routine, Some(t0), t0);
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(t0), Err(Some(t0 + ROUTINE_EVERY)));
        // Written long ago: due at once, ahead of the one written recently.
        q.push(&key(2), Priority::Routine, Some(t0 - ROUTINE_EVERY * 3), t0);
        assert_eq!(q.pop(t0), Ok(key(2)));
        assert_eq!(q.pop(t0 + ROUTINE_EVERY), Ok(key(1)));
        assert_eq!(q.pop(t0 + ROUTINE_EVERY), Err(None));
    }

    #[test]
    fn a_condition_change_jumps_ahead_of_its_own_routine_rewrite_once() {
        let t0 = Instant::now();
        let mut q = WriteQueue::default();
        q.push(&key(1), Priority::Routine, Some(t0), t0);
        q.push(&key(2), Priority::Urgent, None, t0);
        q.push(&key(1), Priority::Urgent, Some(t0), t0);
        q.push(&key(1), Priority::Routine, Some(t0), t0);
        assert_eq!(q.pop(t0), Ok(key(2)));
        assert_eq!(q.pop(t0), Ok(key(1)));
        assert_eq!(q.pop(t0 + ROUTINE_EVERY * 2), Err(None), "written once");
        q.push(&key(3), Priority::Urgent, None, t0);
        q.remove(&key(3));
        assert_eq!(q.pop(t0), Err(None));
    }
}
