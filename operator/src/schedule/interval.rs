//! `every` schedules: a fixed interval such as `10s` or `1h15m40s`, with slots anchored at a
//! start instant so they never drift.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;

/// Largest interval in seconds: what a chrono `TimeDelta` can hold.
const MAX_SECONDS: i64 = i64::MAX / 1000;

/// Units from largest to smallest: (suffix, seconds).
const UNITS: [(&str, i64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

/// Why an interval string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid every \"{input}\": {kind}")]
pub struct IntervalError {
    pub input: String,
    pub kind: IntervalErrorKind,
}

/// The problem with an interval string.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IntervalErrorKind {
    #[error("the interval is empty (e.g. 10s, 90m, 1h15m40s)")]
    Empty,
    #[error("\"{0}\" has no unit (use d, h, m or s)")]
    MissingUnit(String),
    #[error("unit \"{0}\" has no number before it")]
    MissingNumber(String),
    #[error("unknown unit \"{0}\" (use d, h, m or s)")]
    UnknownUnit(String),
    #[error("unit \"{0}\" is finer than the 1s resolution")]
    SubSecond(String),
    #[error("fractions are not supported, use smaller units (e.g. 1h30m, not 1.5h)")]
    Fraction,
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("unit \"{0}\" appears more than once")]
    RepeatedUnit(String),
    #[error("units must go from largest to smallest (d, h, m, s)")]
    UnitOrder,
    #[error("the interval must be at least 1s")]
    Zero,
    #[error("the interval is too large")]
    Overflow,
}

/// A positive whole number of seconds, written with the units `d`, `h`, `m`, `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    seconds: i64,
}

impl Interval {
    /// Parse `10s`, `90m`, `1h15m40s`, `1d12h`: one or more `<digits><unit>` groups, units
    /// d/h/m/s each at most once and from largest to smallest; the total must be >= 1s.
    pub fn parse(input: &str) -> Result<Self, IntervalError> {
        let fail = |kind| IntervalError {
            input: input.to_string(),
            kind,
        };
        if input.is_empty() {
            return Err(fail(IntervalErrorKind::Empty));
        }
        let mut rest = input;
        let mut total: i64 = 0;
        let mut previous_rank: Option<usize> = None;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (number, after) = rest.split_at(digits);
            let letters: usize = after
                .chars()
                .take_while(|c| c.is_alphabetic())
                .map(char::len_utf8)
                .sum();
            let (unit, tail) = after.split_at(letters);
            if unit.is_empty() {
                return Err(fail(match after.chars().next() {
                    None => IntervalErrorKind::MissingUnit(number.to_string()),
                    Some('.') if !number.is_empty() => IntervalErrorKind::Fraction,
                    Some(c) => IntervalErrorKind::UnexpectedChar(c),
                }));
            }
            if number.is_empty() {
                return Err(fail(IntervalErrorKind::MissingNumber(unit.to_string())));
            }
            let Some(rank) = UNITS.iter().position(|(suffix, _)| *suffix == unit) else {
                return Err(fail(match unit {
                    "ms" | "us" | "µs" | "μs" | "ns" => {
                        IntervalErrorKind::SubSecond(unit.to_string())
                    }
                    _ => IntervalErrorKind::UnknownUnit(unit.to_string()),
                }));
            };
            match previous_rank {
                Some(prev) if prev == rank => {
                    return Err(fail(IntervalErrorKind::RepeatedUnit(unit.to_string())));
                }
                Some(prev) if prev > rank => return Err(fail(IntervalErrorKind::UnitOrder)),
                _ => previous_rank = Some(rank),
            }
            let seconds = number
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_mul(UNITS[rank].1))
                .and_then(|s| s.checked_add(total))
                .filter(|s| *s <= MAX_SECONDS)
                .ok_or_else(|| fail(IntervalErrorKind::Overflow))?;
            total = seconds;
            rest = tail;
        }
        if total == 0 {
            return Err(fail(IntervalErrorKind::Zero));
        }
        Ok(Interval { seconds: total })
    }

    /// Length in seconds (at least 1).
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    pub fn as_time_delta(&self) -> TimeDelta {
        // MAX_SECONDS keeps this in range; the fallback is unreachable.
        TimeDelta::try_seconds(self.seconds).unwrap_or(TimeDelta::MAX)
    }
}

impl FromStr for Interval {
    type Err = IntervalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Interval::parse(s)
    }
}

/// Normalised form: `90m` prints as `1h30m`.
impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.seconds;
        for (suffix, size) in UNITS {
            if rest >= size {
                write!(f, "{}{suffix}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

/// An interval schedule: slots at `anchor + k * interval` for k = 0, 1, 2, ...
///
/// Slots are computed from the anchor, never from the previous fire, so latency or downtime
/// cannot make them drift. The anchor itself is the first slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Every {
    interval: Interval,
    anchor: DateTime<Utc>,
}

impl Every {
    pub fn new(interval: Interval, anchor: DateTime<Utc>) -> Self {
        Every { interval, anchor }
    }

    pub fn interval(&self) -> Interval {
        self.interval
    }

    pub fn anchor(&self) -> DateTime<Utc> {
        self.anchor
    }

    /// The first slot strictly after `after`; `None` past chrono's date range.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if after < self.anchor {
            return Some(self.anchor);
        }
        // Exact integer arithmetic in nanoseconds: no float rounding, no drift.
        let elapsed = after.signed_duration_since(self.anchor);
        let elapsed_ns =
            i128::from(elapsed.num_seconds()) * 1_000_000_000 + i128::from(elapsed.subsec_nanos());
        let period_ns = i128::from(self.interval.seconds) * 1_000_000_000;
        let k = elapsed_ns / period_ns + 1;
        let offset = i64::try_from(k.checked_mul(i128::from(self.interval.seconds))?).ok()?;
        self.anchor
            .checked_add_signed(TimeDelta::try_seconds(offset)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> i64 {
        Interval::parse(s).expect("valid interval").seconds()
    }

    fn kind(s: &str) -> IntervalErrorKind {
        Interval::parse(s).expect_err("invalid interval").kind
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_units() {
        assert_eq!(secs("10s"), 10);
        assert_eq!(secs("1s"), 1);
        assert_eq!(secs("90m"), 5_400);
        assert_eq!(secs("1h15m40s"), 4_540);
        assert_eq!(secs("1d"), 86_400);
        assert_eq!(secs("2d3h"), 183_600);
        assert_eq!(secs("0h1s"), 1);
        assert_eq!(secs("010s"), 10);
        assert_eq!(secs("1h90m"), 9_000);
        assert_eq!("5m".parse::<Interval>().map(|i| i.seconds()), Ok(300));
        assert_eq!(
            Interval::parse("1h15m40s").map(|i| i.as_time_delta()),
            Ok(TimeDelta::seconds(4_540))
        );
    }

    #[test]
    fn displays_normalised() {
        let shown = |s: &str| Interval::parse(s).expect("valid").to_string();
        assert_eq!(shown("90m"), "1h30m");
        assert_eq!(shown("1h15m40s"), "1h15m40s");
        assert_eq!(shown("86400s"), "1d");
        assert_eq!(shown("10s"), "10s");
    }

    #[test]
    fn rejects_bad_intervals() {
        assert_eq!(kind(""), IntervalErrorKind::Empty);
        assert_eq!(kind("0s"), IntervalErrorKind::Zero);
        assert_eq!(kind("0h0m0s"), IntervalErrorKind::Zero);
        assert_eq!(kind("10"), IntervalErrorKind::MissingUnit("10".into()));
        assert_eq!(kind("1h30"), IntervalErrorKind::MissingUnit("30".into()));
        assert_eq!(kind("h"), IntervalErrorKind::MissingNumber("h".into()));
        assert_eq!(kind("10x"), IntervalErrorKind::UnknownUnit("x".into()));
        assert_eq!(kind("10S"), IntervalErrorKind::UnknownUnit("S".into()));
        assert_eq!(kind("1w"), IntervalErrorKind::UnknownUnit("w".into()));
        assert_eq!(kind("500ms"), IntervalErrorKind::SubSecond("ms".into()));
        assert_eq!(kind("5µs"), IntervalErrorKind::SubSecond("µs".into()));
        assert_eq!(kind("1.5h"), IntervalErrorKind::Fraction);
        assert_eq!(kind("-5s"), IntervalErrorKind::UnexpectedChar('-'));
        assert_eq!(kind("+5s"), IntervalErrorKind::UnexpectedChar('+'));
        assert_eq!(kind(" 5s"), IntervalErrorKind::UnexpectedChar(' '));
        assert_eq!(kind("5s "), IntervalErrorKind::UnexpectedChar(' '));
        assert_eq!(kind("1h 5m"), IntervalErrorKind::UnexpectedChar(' '));
        assert_eq!(kind("1m1m"), IntervalErrorKind::RepeatedUnit("m".into()));
        assert_eq!(kind("1s1m"), IntervalErrorKind::UnitOrder);
        assert_eq!(kind("99999999999999999999s"), IntervalErrorKind::Overflow);
        assert_eq!(kind("9999999999999999d"), IntervalErrorKind::Overflow);
    }

    #[test]
    fn error_messages_name_the_problem() {
        let message = |s: &str| Interval::parse(s).expect_err("invalid").to_string();
        assert_eq!(
            message("10x"),
            "invalid every \"10x\": unknown unit \"x\" (use d, h, m or s)"
        );
        assert_eq!(
            message("0s"),
            "invalid every \"0s\": the interval must be at least 1s"
        );
        assert_eq!(
            message("100ms"),
            "invalid every \"100ms\": unit \"ms\" is finer than the 1s resolution"
        );
    }

    #[test]
    fn slots_are_anchored() {
        let every = Every::new(
            Interval::parse("10s").expect("valid"),
            utc("2024-01-01T12:00:00Z"),
        );
        // Before the anchor: the anchor is the first slot.
        assert_eq!(
            every.next_after(utc("2023-06-01T00:00:00Z")),
            Some(utc("2024-01-01T12:00:00Z"))
        );
        // Strictly after: a slot instant itself is not returned again.
        assert_eq!(
            every.next_after(utc("2024-01-01T12:00:00Z")),
            Some(utc("2024-01-01T12:00:10Z"))
        );
        assert_eq!(
            every.next_after(utc("2024-01-01T12:00:09.999Z")),
            Some(utc("2024-01-01T12:00:10Z"))
        );
        assert_eq!(
            every.next_after(utc("2024-01-01T12:00:10Z")),
            Some(utc("2024-01-01T12:00:20Z"))
        );
        // A year later the slots are still on the anchor's 10-second grid.
        assert_eq!(
            every.next_after(utc("2025-01-01T12:00:03Z")),
            Some(utc("2025-01-01T12:00:10Z"))
        );
    }

    #[test]
    fn no_drift_over_many_slots() {
        let anchor = utc("2024-02-29T23:59:59.250Z");
        let every = Every::new(Interval::parse("1h15m40s").expect("valid"), anchor);
        let mut t = anchor;
        for k in 1..=10_000i64 {
            t = every.next_after(t).expect("in range");
            assert_eq!(t, anchor + TimeDelta::seconds(4_540 * k));
        }
        // Jumping far ahead gives the same grid as stepping.
        let far = every.next_after(anchor + TimeDelta::seconds(4_540 * 10_000 - 1));
        assert_eq!(far, Some(t));
    }

    #[test]
    fn end_of_time() {
        let every = Every::new(
            Interval::parse("1d").expect("valid"),
            utc("2024-01-01T00:00:00Z"),
        );
        assert_eq!(every.next_after(DateTime::<Utc>::MAX_UTC), None);
    }
}
