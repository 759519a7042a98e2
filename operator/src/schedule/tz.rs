//! Time zones: IANA names, and turning a local wall-clock time into an instant across DST
//! changes.

use chrono::{DateTime, MappedLocalTime, NaiveDateTime, Offset, TimeDelta, TimeZone};
use chrono_tz::Tz;
use thiserror::Error;

/// A time zone name that is not in the IANA database compiled into chrono-tz.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid time zone \"{name}\": not an IANA time zone name (e.g. Europe/Berlin or UTC)")]
pub struct TzError {
    pub name: String,
}

/// Parse an IANA time zone name such as `Europe/Berlin` (case-sensitive, like Kubernetes).
pub fn parse_tz(name: &str) -> Result<Tz, TzError> {
    name.parse::<Tz>().map_err(|_| TzError {
        name: name.to_string(),
    })
}

/// UTC offset of an instant in seconds.
pub(crate) fn offset_seconds(at: &DateTime<Tz>) -> i32 {
    at.offset().fix().local_minus_utc()
}

/// Celery's reading of a wall-clock time: a time that does not exist (spring-forward gap)
/// is read with the offset in force before the gap, so it lands the gap's length later
/// (Berlin 02:30 -> 03:30+02:00); a time that occurs twice (fall-back) is its first
/// occurrence. `None` only if the time is out of chrono's range.
pub(crate) fn resolve_celery(tz: &Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    match tz.from_local_datetime(&wall) {
        MappedLocalTime::Single(at) => Some(at),
        MappedLocalTime::Ambiguous(first, _) => Some(first),
        MappedLocalTime::None => {
            let before = offset_before_gap(tz, wall)?;
            let instant = wall.checked_sub_signed(TimeDelta::seconds(i64::from(before)))?;
            Some(tz.from_utc_datetime(&instant))
        }
    }
}

/// Offset (seconds) of the last wall-clock time before the gap containing `wall`.
fn offset_before_gap(tz: &Tz, wall: NaiveDateTime) -> Option<i32> {
    // Gaps are at most a day long (Pacific/Apia skipped 2011-12-30), so two days suffice.
    for hours in 1..=48 {
        let probe = wall.checked_sub_signed(TimeDelta::hours(hours))?;
        match tz.from_local_datetime(&probe) {
            MappedLocalTime::Single(at) => return Some(offset_seconds(&at)),
            MappedLocalTime::Ambiguous(_, later) => return Some(offset_seconds(&later)),
            MappedLocalTime::None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("test time")
    }

    #[test]
    fn names() {
        assert_eq!(parse_tz("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse_tz("UTC"), Ok(Tz::UTC));
        let err = parse_tz("Mars/Olympus").expect_err("unknown zone");
        assert_eq!(
            err.to_string(),
            "invalid time zone \"Mars/Olympus\": not an IANA time zone name (e.g. Europe/Berlin or UTC)"
        );
        assert!(parse_tz("").is_err());
        assert!(parse_tz("europe/berlin").is_err());
    }

    #[test]
    fn celery_gap_and_overlap() {
        let berlin = Tz::Europe__Berlin;
        let spring = resolve_celery(&berlin, wall("2024-03-31 02:30")).expect("resolves");
        assert_eq!(spring.to_rfc3339(), "2024-03-31T03:30:00+02:00");
        let fall = resolve_celery(&berlin, wall("2024-10-27 02:30")).expect("resolves");
        assert_eq!(fall.to_rfc3339(), "2024-10-27T02:30:00+02:00");
        let plain = resolve_celery(&berlin, wall("2024-07-01 12:00")).expect("resolves");
        assert_eq!(plain.to_rfc3339(), "2024-07-01T12:00:00+02:00");

        let new_york = Tz::America__New_York;
        let spring = resolve_celery(&new_york, wall("2024-03-10 02:15")).expect("resolves");
        assert_eq!(spring.to_rfc3339(), "2024-03-10T03:15:00-04:00");
        let fall = resolve_celery(&new_york, wall("2024-11-03 01:15")).expect("resolves");
        assert_eq!(fall.to_rfc3339(), "2024-11-03T01:15:00-04:00");
    }

    #[test]
    fn a_skipped_day() {
        // Samoa moved across the date line: 2011-12-30 never happened in Apia.
        let apia = Tz::Pacific__Apia;
        let at = resolve_celery(&apia, wall("2011-12-30 12:00")).expect("resolves");
        assert_eq!(at.to_rfc3339(), "2011-12-31T12:00:00+14:00");
    }
}
