//! Deterministic task ids: one per (PeriodicTask, schedule slot).
//!
//! Every replica, restart or retry computes the same id for the same slot, so the
//! atomic publish ("push only if the slot's dedupe key is new") fires each slot once,
//! and the id doubles as the Celery result key.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use uuid::Uuid;

use super::validate::{Field, ValidationError};

/// Namespace of task ids: `uuid5(NAMESPACE_DNS, "celeryoperator.io")`
/// = `5634723c-6faa-5579-9771-509017b0cdd2`. Changing it changes every id.
pub(crate) const TASK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5634723c_6faa_5579_9771_509017b0cdd2);

/// Longest accepted object uid (Kubernetes uids are 36-character UUIDs).
pub(crate) const MAX_UID_LEN: usize = 128;

/// The v5 name of a slot: `<uid>/<slot as RFC 3339 UTC, 9 fraction digits, Z>`, e.g.
/// `0b8e3d2a-.../2030-01-02T03:04:05.000000000Z`. UTC with fixed width makes the same
/// instant give the same name whatever zone the schedule is evaluated in.
pub(crate) fn slot_name<Tz: TimeZone>(object_uid: &str, slot: &DateTime<Tz>) -> String {
    let slot = slot
        .with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Nanos, true);
    format!("{object_uid}/{slot}")
}

/// The task id of `slot` for the object with `metadata.uid` = `object_uid`:
/// UUID v5 of [`slot_name`] in [`TASK_ID_NAMESPACE`].
///
/// The uid (not namespace/name) keys it, so a deleted and recreated object starts
/// fresh. An empty uid, or one with `/` or control characters, is refused: it would
/// let two objects share ids and suppress each other's runs.
pub fn task_id_for_slot<Tz: TimeZone>(
    object_uid: &str,
    slot: &DateTime<Tz>,
) -> Result<Uuid, ValidationError> {
    if object_uid.is_empty() {
        return Err(ValidationError::new(Field::Uid, "must not be empty"));
    }
    if object_uid.len() > MAX_UID_LEN {
        return Err(ValidationError::new(
            Field::Uid,
            format!("is longer than {MAX_UID_LEN} bytes"),
        ));
    }
    if object_uid.chars().any(|c| c == '/' || c.is_control()) {
        return Err(ValidationError::new(
            Field::Uid,
            format!("{object_uid:?} must not contain '/' or control characters"),
        ));
    }
    Ok(Uuid::new_v5(
        &TASK_ID_NAMESPACE,
        slot_name(object_uid, slot).as_bytes(),
    ))
}

/// Where the pushes of one instant are marked done: a hash of task id -> `1`,
/// `<global_key_prefix>celery-operator:slots:<slot as in [`slot_name`]>`. One hash per
/// instant lets one script call check and mark hundreds of pushes with two commands. The
/// transport's prefix applies so that all keys of one app share it (Redis ACL key patterns,
/// shared databases).
pub fn slot_marks_key<Tz: TimeZone>(global_key_prefix: &str, slot: &DateTime<Tz>) -> String {
    let slot = slot
        .with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Nanos, true);
    format!("{global_key_prefix}celery-operator:slots:{slot}")
}

/// Where a task's run-now requests are marked done (they belong to no instant):
/// `<global_key_prefix>celery-operator:run-now:<uid>`.
pub fn run_now_marks_key(global_key_prefix: &str, object_uid: &str) -> String {
    format!("{global_key_prefix}celery-operator:run-now:{object_uid}")
}

/// The hash counting every task's pushes (uid -> count) during one window of time:
/// `<global_key_prefix>celery-operator:run-counts:<window>`. A window's hash expires after
/// the next window, so the counts of deleted tasks go with it.
pub fn run_counts_key(global_key_prefix: &str, window: i64) -> String {
    format!("{global_key_prefix}celery-operator:run-counts:{window}")
}

/// Keys of operators before the per-instant hashes: a slot marked by one
/// (`celery-operator:slot:<task id>`) and a task's count (`celery-operator:runs:<uid>`).
/// They are still read, so an upgrade that hands a slot over from an older operator pushes
/// it once and keeps counting.
pub(crate) const LEGACY_SLOT_KEY: &str = "celery-operator:slot:";
pub(crate) const LEGACY_RUNS_KEY: &str = "celery-operator:runs:";

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, FixedOffset};

    const UID: &str = "0b8e3d2a-1111-4222-8333-444455556666";

    fn slot() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn namespace_is_derived_as_documented() {
        let derived = Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"celeryoperator.io");
        assert_eq!(TASK_ID_NAMESPACE, derived);
    }

    #[test]
    fn ids_are_v5_and_match_python() {
        let id = task_id_for_slot(UID, &slot()).unwrap();
        assert_eq!(id.get_version_num(), 5);
        // uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_DNS, 'celeryoperator.io'),
        //            UID + '/2030-01-02T03:04:05.000000000Z')
        assert_eq!(id.to_string(), "68662e61-dfe1-5333-b0be-6544229c2d07");
        assert_eq!(
            slot_name(UID, &slot()),
            format!("{UID}/2030-01-02T03:04:05.000000000Z")
        );
    }

    #[test]
    fn ids_are_deterministic_and_zone_independent() {
        let a = task_id_for_slot(UID, &slot()).unwrap();
        assert_eq!(a, task_id_for_slot(UID, &slot()).unwrap());
        let berlin = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            a,
            task_id_for_slot(UID, &slot().with_timezone(&berlin)).unwrap()
        );
    }

    #[test]
    fn ids_differ_per_slot_and_per_object() {
        let a = task_id_for_slot(UID, &slot()).unwrap();
        let next_ns = task_id_for_slot(UID, &(slot() + Duration::nanoseconds(1))).unwrap();
        let next_min = task_id_for_slot(UID, &(slot() + Duration::minutes(1))).unwrap();
        let other = task_id_for_slot("0b8e3d2a-1111-4222-8333-444455556667", &slot()).unwrap();
        let ids = [a, next_ns, next_min, other];
        for (i, x) in ids.iter().enumerate() {
            for y in &ids[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn bad_uids_are_refused() {
        for bad in ["", "a/b", "a\nb"] {
            let err = task_id_for_slot(bad, &slot()).unwrap_err();
            assert_eq!(err.field, Field::Uid);
            assert!(err.to_string().starts_with("invalid uid: "), "{err}");
        }
        assert!(task_id_for_slot(&"u".repeat(MAX_UID_LEN + 1), &slot()).is_err());
    }

    #[test]
    fn mark_and_count_keys() {
        assert_eq!(
            slot_marks_key("", &slot()),
            "celery-operator:slots:2030-01-02T03:04:05.000000000Z"
        );
        let berlin = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(
            slot_marks_key("app1:", &slot().with_timezone(&berlin)),
            "app1:celery-operator:slots:2030-01-02T03:04:05.000000000Z"
        );
        assert_eq!(
            run_now_marks_key("app1:", UID),
            format!("app1:celery-operator:run-now:{UID}")
        );
        assert_eq!(
            run_counts_key("app1:", 2_900),
            "app1:celery-operator:run-counts:2900"
        );
    }
}
