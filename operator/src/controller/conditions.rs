//! Status conditions computed from observed state; a transition time changes only when the
//! condition's status does, as every Kubernetes controller does it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's status; `Unknown` when its check did not run (API conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    True,
    False,
    Unknown,
}

impl From<bool> for Status {
    fn from(ok: bool) -> Self {
        if ok { Status::True } else { Status::False }
    }
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition without its transition time yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    pub type_: &'static str,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

impl Observed {
    pub(crate) fn new(
        type_: &'static str,
        status: impl Into<Status>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: status.into(),
            reason,
            message: message.into(),
        }
    }
}

/// Builds the condition list, keeping `lastTransitionTime` of conditions whose status did not
/// change so an unchanged object gets an identical status (and no write).
pub(crate) fn merge(
    previous: &[Condition],
    observed: Vec<Observed>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    observed
        .into_iter()
        .map(|o| {
            let status = o.status.as_str().to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.to_string(),
                message: o.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// An object whose status carries conditions; `merge` starts from these.
pub(crate) trait Conditioned {
    /// The conditions of the last written status (none before the first).
    fn conditions(&self) -> &[Condition];
}

macro_rules! conditioned {
    ($($kind:ty),*) => {$(
        impl Conditioned for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
            }
        }
    )*};
}
conditioned!(
    crate::api::redis_cache::RedisCache,
    crate::api::worker_pool::WorkerPool,
    crate::api::periodic_task::PeriodicTask
);

/// Whether the controller of a Deployment or StatefulSet has seen its newest template
/// (`observedGeneration`) and moved `want` pods to it.
pub(crate) fn rolled_out(
    generation: Option<i64>,
    observed_generation: Option<i64>,
    updated_replicas: Option<i32>,
    want: i32,
) -> bool {
    observed_generation.unwrap_or(0) >= generation.unwrap_or(0)
        && updated_replicas.unwrap_or(0) >= want
}

/// Whether a condition of `type_` is True.
pub(crate) fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition of `type_` (tests assert on it).
#[cfg(test)]
pub(crate) fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = merge(
            &[],
            vec![Observed::new("Ready", false, "Pending", "waiting")],
            Some(1),
            ts(100),
        );
        let second = merge(
            &first,
            vec![Observed::new("Ready", false, "Pending", "still waiting")],
            Some(1),
            ts(200),
        );
        assert_eq!(second[0].last_transition_time, Time(ts(100)));
        assert_eq!(second[0].message, "still waiting");
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let first = merge(
            &[],
            vec![Observed::new("Ready", false, "Pending", "")],
            Some(1),
            ts(100),
        );
        let second = merge(
            &first,
            vec![Observed::new("Ready", true, "Ready", "")],
            Some(2),
            ts(200),
        );
        assert_eq!(second[0].last_transition_time, Time(ts(200)));
        assert_eq!(second[0].status, "True");
        assert_eq!(second[0].observed_generation, Some(2));
        assert!(is_true(&second, "Ready"));
    }
}
