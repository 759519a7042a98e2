//! Redis list keys of a Celery queue, as kombu's Redis transport names them.
//!
//! kombu emulates priorities with one list per priority step: a message of priority
//! `p` goes to the list of the largest step `<= p`, and workers `BRPOP` the step lists
//! in step order, so on Redis 0 is the highest priority. A publisher must use the same
//! steps, separator and key prefix as the workers, or its messages are never read.

use super::validate::{self, Field, MAX_PRIORITY, ValidationError};

/// kombu's default `priority_steps`.
pub(crate) const DEFAULT_PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];
/// kombu's default `sep` between the queue name and the step.
pub(crate) const DEFAULT_SEPARATOR: &str = "\x06\x16";

/// The worker-side transport options that shape key names
/// (`broker_transport_options` = `priority_steps`, `sep`, `global_keyprefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Ascending priority steps; a step of 0 maps to the bare queue name.
    pub priority_steps: Vec<u8>,
    /// Put between queue name and step in the key name.
    pub separator: String,
    /// Prepended to every key kombu touches, the queue lists included (kombu prefixes
    /// `LPUSH`, `LLEN` and every `BRPOP` key).
    pub global_key_prefix: String,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            priority_steps: DEFAULT_PRIORITY_STEPS.to_vec(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            global_key_prefix: String::new(),
        }
    }
}

impl TransportOptions {
    /// Rejects settings a worker cannot run with: empty steps (kombu indexes into them),
    /// steps out of order (kombu bisects them) and an empty separator (workers split the
    /// popped key on it, and Python refuses an empty separator).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.priority_steps.is_empty() {
            return Err(ValidationError::new(
                Field::PrioritySteps,
                "must not be empty",
            ));
        }
        if self.priority_steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ValidationError::new(
                Field::PrioritySteps,
                format!("{:?} must be strictly ascending", self.priority_steps),
            ));
        }
        if self.separator.is_empty() {
            return Err(ValidationError::new(Field::Separator, "must not be empty"));
        }
        Ok(())
    }

    /// The queue name is valid and cannot be confused with a step key: workers strip
    /// everything from the last separator off the popped key to find the queue.
    pub fn check_queue(&self, queue: &str) -> Result<(), ValidationError> {
        validate::validate_queue_name(queue)?;
        if !self.separator.is_empty() && queue.contains(self.separator.as_str()) {
            return Err(ValidationError::new(
                Field::Queue,
                format!(
                    "{queue:?} contains the transport separator {:?}",
                    self.separator
                ),
            ));
        }
        Ok(())
    }

    /// The step a message of `priority` lands in: kombu clamps to 0..=9, then takes
    /// `steps[bisect_right(steps, p) - 1]`.
    pub fn step_for_priority(&self, priority: u8) -> u8 {
        self.kombu_step(priority.min(MAX_PRIORITY))
    }

    /// kombu's `Channel.priority(n)` without clamping. Python's index `-1` wraps, so a
    /// priority below the first step goes to the LAST step; mirrored on purpose.
    fn kombu_step(&self, n: u8) -> u8 {
        let steps = &self.priority_steps;
        // bisect.bisect_right, literally, so unsorted steps behave as on the worker too.
        let (mut lo, mut hi) = (0, steps.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match steps.get(mid) {
                Some(step) if n < *step => hi = mid,
                _ => lo = mid + 1,
            }
        }
        let index = lo.checked_sub(1).or_else(|| steps.len().checked_sub(1));
        index.and_then(|i| steps.get(i)).copied().unwrap_or(0)
    }

    /// kombu's `_q_for_pri` for an already-mapped step, with the global prefix.
    fn key_for_step(&self, queue: &str, step: u8) -> String {
        // kombu tests `if pri:`, so step 0 is the bare queue name.
        if step == 0 {
            format!("{}{queue}", self.global_key_prefix)
        } else {
            format!("{}{queue}{}{step}", self.global_key_prefix, self.separator)
        }
    }

    /// The Redis list a message of `priority` for `queue` is `LPUSH`ed to.
    pub fn queue_key(&self, queue: &str, priority: u8) -> String {
        self.key_for_step(queue, self.step_for_priority(priority))
    }

    /// Every list of `queue`, in the order workers pop them (highest priority first).
    /// Queue depth is the sum of their `LLEN`s.
    pub fn queue_keys(&self, queue: &str) -> Vec<String> {
        self.priority_steps
            .iter()
            .map(|step| self.key_for_step(queue, self.kombu_step(*step)))
            .collect()
    }

    /// The keys of a worker's `BRPOP` over `queues`: steps outer, queues inner.
    pub fn brpop_keys(&self, queues: &[&str]) -> Vec<String> {
        self.priority_steps
            .iter()
            .flat_map(|step| {
                queues
                    .iter()
                    .map(move |queue| self.key_for_step(queue, self.kombu_step(*step)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keys_match_the_observed_table() {
        // SPEC.md section 2: 0,1 -> celery; 3,5 -> \x06\x163; 6,7 -> \x06\x166; 9 -> \x06\x169.
        let opts = TransportOptions::default();
        let expected = [
            "celery",
            "celery",
            "celery",
            "celery\x06\x163",
            "celery\x06\x163",
            "celery\x06\x163",
            "celery\x06\x166",
            "celery\x06\x166",
            "celery\x06\x166",
            "celery\x06\x169",
        ];
        for (priority, key) in expected.iter().enumerate() {
            let priority = u8::try_from(priority).unwrap();
            assert_eq!(
                opts.queue_key("celery", priority),
                *key,
                "priority {priority}"
            );
        }
        // Clamped to 9 like kombu.
        assert_eq!(opts.queue_key("celery", 200), "celery\x06\x169");
        assert_eq!(opts.queue_key("myqueue", 5).as_bytes(), b"myqueue\x06\x163");
    }

    #[test]
    fn queue_keys_in_pop_order() {
        let opts = TransportOptions::default();
        assert_eq!(
            opts.queue_keys("myqueue"),
            [
                "myqueue",
                "myqueue\x06\x163",
                "myqueue\x06\x166",
                "myqueue\x06\x169"
            ]
        );
    }

    #[test]
    fn brpop_keys_match_the_worker_capture() {
        // monitor_worker_idle.txt: a worker consuming celery,myqueue.
        let opts = TransportOptions::default();
        assert_eq!(
            opts.brpop_keys(&["celery", "myqueue"]),
            [
                "celery",
                "myqueue",
                "celery\x06\x163",
                "myqueue\x06\x163",
                "celery\x06\x166",
                "myqueue\x06\x166",
                "celery\x06\x169",
                "myqueue\x06\x169",
            ]
        );
    }

    #[test]
    fn prefix_and_separator_apply_to_every_key() {
        let opts = TransportOptions {
            priority_steps: vec![0, 5],
            separator: ":".into(),
            global_key_prefix: "app1:".into(),
        };
        assert_eq!(opts.queue_key("q", 0), "app1:q");
        assert_eq!(opts.queue_key("q", 4), "app1:q");
        assert_eq!(opts.queue_key("q", 7), "app1:q:5");
        assert_eq!(opts.queue_keys("q"), ["app1:q", "app1:q:5"]);
        assert_eq!(
            opts.brpop_keys(&["a", "b"]),
            ["app1:a", "app1:b", "app1:a:5", "app1:b:5"]
        );
    }

    #[test]
    fn steps_without_zero_follow_kombu() {
        // kombu: steps[bisect(steps, 0) - 1] == steps[-1], the last step.
        let opts = TransportOptions {
            priority_steps: vec![2, 5],
            ..TransportOptions::default()
        };
        assert_eq!(opts.queue_key("q", 0), "q\x06\x165");
        assert_eq!(opts.queue_key("q", 1), "q\x06\x165");
        assert_eq!(opts.queue_key("q", 2), "q\x06\x162");
        assert_eq!(opts.queue_key("q", 9), "q\x06\x165");
        // The worker never pops the bare name with these steps.
        assert_eq!(opts.queue_keys("q"), ["q\x06\x162", "q\x06\x165"]);
        for p in 0..=9 {
            assert!(opts.queue_keys("q").contains(&opts.queue_key("q", p)));
        }
    }

    #[test]
    fn every_step_of_ten_steps() {
        let opts = TransportOptions {
            priority_steps: (0..=9).collect(),
            ..TransportOptions::default()
        };
        assert_eq!(opts.queue_key("q", 0), "q");
        for p in 1..=9 {
            assert_eq!(opts.queue_key("q", p), format!("q\x06\x16{p}"));
        }
    }

    #[test]
    fn options_validation_names_the_field() {
        TransportOptions::default().validate().unwrap();
        let empty = TransportOptions {
            priority_steps: vec![],
            ..TransportOptions::default()
        };
        assert_eq!(
            empty.validate().unwrap_err().to_string(),
            "invalid transport.priority_steps: must not be empty"
        );
        // No panic on empty steps either.
        assert_eq!(empty.queue_key("q", 3), "q");
        let unsorted = TransportOptions {
            priority_steps: vec![0, 6, 3],
            ..TransportOptions::default()
        };
        assert!(
            unsorted
                .validate()
                .unwrap_err()
                .to_string()
                .contains("strictly ascending")
        );
        let dup = TransportOptions {
            priority_steps: vec![0, 3, 3],
            ..TransportOptions::default()
        };
        assert_eq!(dup.validate().unwrap_err().field, Field::PrioritySteps);
        let nosep = TransportOptions {
            separator: String::new(),
            ..TransportOptions::default()
        };
        assert_eq!(
            nosep.validate().unwrap_err().to_string(),
            "invalid transport.separator: must not be empty"
        );
    }

    #[test]
    fn queue_must_not_contain_the_separator() {
        let opts = TransportOptions {
            separator: ".".into(),
            ..TransportOptions::default()
        };
        opts.check_queue("fast").unwrap();
        let err = opts.check_queue("my.queue").unwrap_err();
        assert_eq!(err.field, Field::Queue);
        assert!(err.to_string().contains("separator"), "{err}");
        assert_eq!(opts.check_queue("").unwrap_err().field, Field::Queue);
    }
}
