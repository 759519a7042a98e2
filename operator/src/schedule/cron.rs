//! Standard five-field cron, read as a Kubernetes CronJob reads it (robfig/cron v3
//! `ParseStandard`).
//!
//! - Fields `minute hour day-of-month month day-of-week`, separated by whitespace. Each is a
//!   comma list of `*`, `?` (same as `*`), `a`, `a-b`, `*/N`, `a-b/N` or `a/N` (= `a-max/N`).
//!   Ranges do not wrap. Month and weekday names are the exact three-letter English
//!   abbreviations, case-insensitive (`jan`, `MON`).
//! - Day of week is 0-6 with 0 = Sunday; `7` is refused, as a CronJob refuses it (Vixie
//!   cron would read it as Sunday).
//! - Day of month and day of week combine with OR when both are restricted, AND when either
//!   starts with `*` or `?` without a step greater than 1 (robfig's rule: `*/2` counts as
//!   restricted). `0 0 13 * 5` fires on every 13th and on every Friday.
//! - Macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`,
//!   written alone: with blanks around it (`" @hourly"`) a macro is refused, as robfig
//!   refuses it; blanks around five fields are ignored, as robfig ignores them. `@every` is
//!   refused (use an `every` schedule), and so are `TZ=`/`CRON_TZ=` prefixes (the time zone
//!   is a separate setting, as in Kubernetes).
//! - Stricter than robfig: empty list elements (`1,,2`) are errors rather than ignored, and a
//!   day of month that never occurs in the selected months (`0 0 30 2 *`) is a parse error
//!   rather than a schedule that silently never fires.
//!
//! Next fire (time zones and DST): the earliest instant strictly after the given one whose
//! local wall-clock time in the schedule's zone matches the fields. A wall time inside a
//! spring-forward gap does not exist and never fires (New York `0 2 * * *` skips
//! 2012-03-11); a wall time that occurs twice at fall-back fires at both instants (New York
//! `0 1 * * *` fires at 01:00-04:00 and at 01:00-05:00 on 2012-11-04). robfig/cron v3's
//! `SpecSchedule.Next` (what a CronJob uses) gives the same instants for zones whose clocks
//! move by one hour away from midnight, and its DST vectors (New York, São Paulo) are tests
//! here. It does not for the others: it steps through wall time by whole hours and days and
//! patches the day step when midnight is skipped, so in zones whose DST change falls at
//! midnight (Asunción, Havana, Gaza, Tehran, São Paulo before 2019) or moves the clock by 30
//! or 45 minutes (Lord Howe, Chatham) its slot near the change can differ from ours. Ours is
//! the cron reading, every matching local instant and nothing else; a CronJob's is an
//! artifact of its stepping. This also differs from Celery's crontab on purpose: a `cron`
//! user expects cron behaviour. The search looks 400 years ahead (robfig gives up after 5),
//! so `0 0 29 2 *` finds 2104-02-29 from 2097.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, MappedLocalTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use thiserror::Error;

use super::calendar::{Calendar, DayRule, search_limit};
use super::fields::{Domain, FieldError, NameMatch, Names, bit, parse_step};
use super::tz::offset_seconds;

/// One of the five cron fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    pub fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// Value domain, and the largest value `*` and `a/N` reach.
    fn domain(self) -> (Domain, u32) {
        let (min, max, names, star_max) = match self {
            CronField::Minute => (0, 59, Names::None, 59),
            CronField::Hour => (0, 23, Names::None, 23),
            CronField::DayOfMonth => (1, 31, Names::None, 31),
            CronField::Month => (1, 12, Names::Months, 12),
            CronField::DayOfWeek => (0, 6, Names::Weekdays, 6),
        };
        let domain = Domain {
            min,
            max,
            names,
            name_match: NameMatch::Exact,
        };
        (domain, star_max)
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const FIELDS: [CronField; 5] = [
    CronField::Minute,
    CronField::Hour,
    CronField::DayOfMonth,
    CronField::Month,
    CronField::DayOfWeek,
];

/// Why a cron expression was rejected. Display is one line naming the field and value.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CronError {
    #[error("invalid cron expression: it is empty")]
    Empty,
    #[error("invalid cron {field} \"{value}\": {reason}")]
    Field {
        field: CronField,
        value: String,
        reason: FieldError,
    },
    #[error(
        "invalid cron expression \"{input}\": expected 5 fields \"minute hour day-of-month month day-of-week\", found {found}"
    )]
    FieldCount { input: String, found: usize },
    #[error(
        "invalid cron expression \"{0}\": unknown macro (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
    )]
    UnknownMacro(String),
    #[error("invalid cron expression {0:?}: a macro must be written without blanks around it")]
    BlanksAroundMacro(String),
    #[error("invalid cron expression \"{0}\": @every is not supported here, use an every schedule")]
    EveryMacro(String),
    #[error(
        "invalid cron expression \"{0}\": TZ= and CRON_TZ= prefixes are not supported, set the time zone separately"
    )]
    TzPrefix(String),
    #[error(
        "invalid cron expression \"{input}\": day-of-month \"{day_of_month}\" never occurs in month \"{month}\""
    )]
    NeverOccurs {
        input: String,
        day_of_month: String,
        month: String,
    },
}

/// A parsed standard cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    input: String,
    calendar: Calendar,
}

impl Cron {
    /// Parse a five-field expression (blanks around it are ignored) or a macro (alone).
    pub fn parse(input: &str) -> Result<Self, CronError> {
        let expr = input.trim();
        if expr.is_empty() {
            return Err(CronError::Empty);
        }
        if expr.starts_with('@') && expr != input {
            return Err(CronError::BlanksAroundMacro(input.to_string()));
        }
        if expr.starts_with("TZ=") || expr.starts_with("CRON_TZ=") {
            return Err(CronError::TzPrefix(input.to_string()));
        }
        let expanded = if expr.starts_with('@') {
            // Same expansions as robfig's descriptors, star bits included.
            match expr {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ if expr.starts_with("@every") => {
                    return Err(CronError::EveryMacro(input.to_string()));
                }
                _ => return Err(CronError::UnknownMacro(input.to_string())),
            }
        } else {
            expr
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [_, _, day_of_month, month, _] = parts[..] else {
            return Err(CronError::FieldCount {
                input: input.to_string(),
                found: parts.len(),
            });
        };
        let mut sets = [(0u64, false); 5];
        for (slot, (field, spec)) in sets.iter_mut().zip(FIELDS.iter().zip(parts.iter())) {
            *slot = parse_field(*field, spec).map_err(|reason| CronError::Field {
                field: *field,
                value: spec.to_string(),
                reason,
            })?;
        }
        let [
            (minutes, _),
            (hours, _),
            (days_of_month, dom_star),
            (months, _),
            (days_of_week, dow_star),
        ] = sets;
        let day_rule = if dom_star || dow_star {
            DayRule::Both
        } else {
            DayRule::Either
        };
        let calendar = Calendar {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_rule,
        };
        // With OR the weekdays alone give dates; with AND the day of month must exist.
        if day_rule == DayRule::Both && !calendar.has_real_date() {
            return Err(CronError::NeverOccurs {
                input: input.to_string(),
                day_of_month: day_of_month.to_string(),
                month: month.to_string(),
            });
        }
        Ok(Cron {
            input: input.to_string(),
            calendar,
        })
    }

    /// The earliest instant strictly after `after` whose wall-clock time in `tz` matches;
    /// `None` if there is none within 400 years.
    pub fn next_after(&self, after: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Tz>> {
        let local = after.with_timezone(tz);
        let wall = local.naive_local();
        let ahead = self.first_after_wall(wall, after, tz);
        let repeated = self.second_pass(&local, after, tz);
        match (ahead, repeated) {
            (Some(a), Some(b)) => Some(if b < a { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Earliest matching instant after `after` among wall times later than `wall`.
    fn first_after_wall(
        &self,
        mut wall: NaiveDateTime,
        after: DateTime<Utc>,
        tz: &Tz,
    ) -> Option<DateTime<Tz>> {
        let last = search_limit(wall.date());
        loop {
            wall = self.calendar.next_wall_after(wall, last)?;
            match tz.from_local_datetime(&wall) {
                MappedLocalTime::Single(at) if at > after => return Some(at),
                MappedLocalTime::Ambiguous(first, second) => {
                    if first > after {
                        return Some(first);
                    }
                    if second > after {
                        return Some(second);
                    }
                }
                // Inside a spring-forward gap the wall time never happens: skipped.
                _ => {}
            }
        }
    }

    /// If `local` is in the first pass of a fall-back overlap, wall times at or before its
    /// own come round once more, one shift later; the earliest matching one of those.
    fn second_pass(
        &self,
        local: &DateTime<Tz>,
        after: DateTime<Utc>,
        tz: &Tz,
    ) -> Option<DateTime<Tz>> {
        let wall = local.naive_local();
        let MappedLocalTime::Ambiguous(first, second) = tz.from_local_datetime(&wall) else {
            return None;
        };
        if offset_seconds(&first) != offset_seconds(local) {
            return None;
        }
        // Only wall times within `shift` before `wall` repeat after `after`.
        let shift = offset_seconds(&first) - offset_seconds(&second);
        let mut candidate = wall.checked_sub_signed(TimeDelta::seconds(i64::from(shift)))?;
        loop {
            candidate = self.calendar.next_wall_after(candidate, wall.date())?;
            if candidate > wall {
                return None;
            }
            if let MappedLocalTime::Ambiguous(_, later) = tz.from_local_datetime(&candidate)
                && later > after
            {
                return Some(later);
            }
        }
    }
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cron::parse(s)
    }
}

/// The expression as written.
impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.input)
    }
}

/// One field: its value set, and whether it counts as unrestricted (robfig's star bit).
fn parse_field(field: CronField, spec: &str) -> Result<(u64, bool), FieldError> {
    let (domain, star_max) = field.domain();
    if spec.is_empty() {
        return Err(FieldError::Empty);
    }
    let mut bits = 0u64;
    let mut star = false;
    for part in spec.split(',') {
        if part.is_empty() {
            return Err(FieldError::EmptyElement);
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step)?)),
            None => (part, None),
        };
        let (start, end, is_star) = if range == "*" || range == "?" {
            (domain.min, star_max, true)
        } else if let Some((low, high)) = range.split_once('-') {
            if low.is_empty() {
                return Err(FieldError::Negative);
            }
            if high.is_empty() {
                return Err(FieldError::IncompleteRange(range.to_string()));
            }
            (domain.value(low)?, domain.value(high)?, false)
        } else {
            let value = domain.value(range)?;
            // robfig: `a/N` means `a-max/N`.
            let end = if step.is_some() { star_max } else { value };
            (value, end, false)
        };
        if start > end {
            return Err(FieldError::ReversedRange { start, end });
        }
        let step = step.unwrap_or(1);
        star |= is_star && step == 1;
        let step = usize::try_from(step).unwrap_or(usize::MAX);
        for v in (start..=end).step_by(step) {
            bits |= bit(v);
        }
    }
    Ok((bits, star))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::fields::members;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn cron(s: &str) -> Cron {
        Cron::parse(s).expect("valid cron")
    }

    fn fires(expr: &str, tz: Tz, after: &str, n: usize) -> Vec<String> {
        let c = cron(expr);
        let mut t = utc(after);
        let mut out = Vec::new();
        for _ in 0..n {
            let fire = c.next_after(t, &tz).expect("fires");
            out.push(fire.to_rfc3339());
            t = fire.with_timezone(&Utc);
        }
        out
    }

    fn next(expr: &str, after: &str) -> String {
        fires(expr, Tz::UTC, after, 1).remove(0)
    }

    fn set(field: CronField, spec: &str) -> Vec<u32> {
        members(parse_field(field, spec).expect("valid field").0)
    }

    fn err(s: &str) -> String {
        Cron::parse(s).expect_err("invalid cron").to_string()
    }

    use CronField::*;

    #[test]
    fn field_syntax() {
        assert_eq!(set(Minute, "*/15"), vec![0, 15, 30, 45]);
        assert_eq!(set(Minute, "5/15"), vec![5, 20, 35, 50]);
        assert_eq!(set(Minute, "20-35/15"), vec![20, 35]);
        assert_eq!(set(Minute, "1,2,5-7"), vec![1, 2, 5, 6, 7]);
        assert_eq!(set(Hour, "?"), (0..=23).collect::<Vec<_>>());
        assert_eq!(set(DayOfMonth, "*/10"), vec![1, 11, 21, 31]);
        assert_eq!(set(Month, "jan,MAR-may"), vec![1, 3, 4, 5]);
        assert_eq!(set(DayOfWeek, "mon-fri"), vec![1, 2, 3, 4, 5]);
        assert_eq!(set(DayOfWeek, "Mon/2"), vec![1, 3, 5]);
        assert_eq!(set(DayOfWeek, "*"), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(set(DayOfWeek, "0-6/2"), vec![0, 2, 4, 6]);
    }

    #[test]
    fn star_bit_decides_and_or() {
        let rule = |s: &str| cron(s).calendar.day_rule;
        assert_eq!(rule("0 0 13 * 5"), DayRule::Either);
        assert_eq!(rule("0 0 * * 5"), DayRule::Both);
        assert_eq!(rule("0 0 13 * *"), DayRule::Both);
        assert_eq!(rule("0 0 13 * ?"), DayRule::Both);
        assert_eq!(rule("0 0 */2 * sun"), DayRule::Either);
        assert_eq!(rule("0 0 */1 * sun"), DayRule::Both);
        assert_eq!(rule("0 0 1-31 * mon"), DayRule::Either);
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2024-09-13 is a Friday; 2024-10-13 a Sunday.
        assert_eq!(
            fires("0 0 13 * 5", Tz::UTC, "2024-09-01T00:00:00Z", 7),
            vec![
                "2024-09-06T00:00:00+00:00",
                "2024-09-13T00:00:00+00:00",
                "2024-09-20T00:00:00+00:00",
                "2024-09-27T00:00:00+00:00",
                "2024-10-04T00:00:00+00:00",
                "2024-10-11T00:00:00+00:00",
                "2024-10-13T00:00:00+00:00"
            ]
        );
        // One starred field: AND.
        assert_eq!(
            fires("0 0 * * 5", Tz::UTC, "2024-09-01T00:00:00Z", 2),
            vec!["2024-09-06T00:00:00+00:00", "2024-09-13T00:00:00+00:00"]
        );
        // `1-31` is restricted, so with a weekday it still means every day.
        assert_eq!(
            fires("0 0 1-31 * mon", Tz::UTC, "2024-09-01T00:00:00Z", 2),
            vec!["2024-09-02T00:00:00+00:00", "2024-09-03T00:00:00+00:00"]
        );
    }

    #[test]
    fn robfig_activation_vectors() {
        // (instant, spec, fires exactly then) from robfig/cron v3 spec_test.go.
        let cases = [
            ("2012-07-09T15:00:00Z", "0/15 * * * *", true),
            ("2012-07-09T15:45:00Z", "0/15 * * * *", true),
            ("2012-07-09T15:40:00Z", "0/15 * * * *", false),
            ("2012-07-09T15:05:00Z", "5/15 * * * *", true),
            ("2012-07-09T15:20:00Z", "5/15 * * * *", true),
            ("2012-07-09T15:50:00Z", "5/15 * * * *", true),
            ("2012-07-15T15:00:00Z", "0/15 * * Jul *", true),
            ("2012-07-15T15:00:00Z", "0/15 * * Jun *", false),
            ("2012-07-15T08:30:00Z", "30 08 ? Jul Sun", true),
            ("2012-07-15T08:30:00Z", "30 08 15 Jul ?", true),
            ("2012-07-16T08:30:00Z", "30 08 ? Jul Sun", false),
            ("2012-07-16T08:30:00Z", "30 08 15 Jul ?", false),
            ("2012-07-09T15:00:00Z", "@hourly", true),
            ("2012-07-09T15:04:00Z", "@hourly", false),
            ("2012-07-09T15:00:00Z", "@daily", false),
            ("2012-07-09T00:00:00Z", "@daily", true),
            ("2012-07-09T00:00:00Z", "@midnight", true),
            ("2012-07-09T00:00:00Z", "@weekly", false),
            ("2012-07-08T00:00:00Z", "@weekly", true),
            ("2012-07-08T01:00:00Z", "@weekly", false),
            ("2012-07-08T00:00:00Z", "@monthly", false),
            ("2012-07-01T00:00:00Z", "@monthly", true),
            ("2012-01-01T00:00:00Z", "@yearly", true),
            ("2012-01-01T00:00:00Z", "@annually", true),
            ("2012-07-01T00:00:00Z", "@yearly", false),
            ("2012-07-15T00:00:00Z", "* * 1,15 * Sun", true),
            ("2012-06-15T00:00:00Z", "* * 1,15 * Sun", true),
            ("2012-08-01T00:00:00Z", "* * 1,15 * Sun", true),
            ("2012-07-15T00:00:00Z", "* * */10 * Sun", true),
            ("2012-07-15T00:00:00Z", "* * * * Mon", false),
            ("2012-07-09T00:00:00Z", "* * 1,15 * *", false),
            ("2012-07-15T00:00:00Z", "* * 1,15 * *", true),
            ("2012-07-15T00:00:00Z", "* * */2 * Sun", true),
        ];
        for (at, spec, expected) in cases {
            let at = utc(at);
            let fire = cron(spec).next_after(at - TimeDelta::seconds(1), &Tz::UTC);
            assert_eq!(
                fire.map(|f| f.with_timezone(&Utc)) == Some(at),
                expected,
                "{spec} at {at}"
            );
        }
    }

    #[test]
    fn robfig_next_vectors() {
        let cases = [
            (
                "2012-07-09T14:45:00Z",
                "0/15 * * * *",
                "2012-07-09T15:00:00+00:00",
            ),
            (
                "2012-07-09T14:59:00Z",
                "0/15 * * * *",
                "2012-07-09T15:00:00+00:00",
            ),
            (
                "2012-07-09T14:59:59Z",
                "0/15 * * * *",
                "2012-07-09T15:00:00+00:00",
            ),
            (
                "2012-07-09T15:45:00Z",
                "20-35/15 * * * *",
                "2012-07-09T16:20:00+00:00",
            ),
            (
                "2012-07-09T23:46:00Z",
                "*/15 * * * *",
                "2012-07-10T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:45:00Z",
                "20-35/15 * * * *",
                "2012-07-10T00:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "20-35/15 1/2 * * *",
                "2012-07-10T01:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "20-35/15 10-12 * * *",
                "2012-07-10T10:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "20-35/15 1/2 */2 * *",
                "2012-07-11T01:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "20-35/15 * 9-20 * *",
                "2012-07-10T00:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "20-35/15 * 9-20 Jul *",
                "2012-07-10T00:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 9 Apr-Oct ?",
                "2012-08-09T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 */5 Apr,Aug,Oct Mon",
                "2012-08-01T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 */5 Oct Mon",
                "2012-10-01T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 * Feb Mon",
                "2013-02-04T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 * Feb Mon/2",
                "2013-02-01T00:00:00+00:00",
            ),
            (
                "2012-12-31T23:59:45Z",
                "* * * * *",
                "2013-01-01T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 29 Feb ?",
                "2016-02-29T00:00:00+00:00",
            ),
        ];
        for (after, spec, expected) in cases {
            assert_eq!(next(spec, after), expected, "{spec} after {after}");
        }
    }

    #[test]
    fn every_fifteen_minutes() {
        assert_eq!(
            fires("*/15 * * * *", Tz::UTC, "2024-01-01T10:50:00Z", 4),
            vec![
                "2024-01-01T11:00:00+00:00",
                "2024-01-01T11:15:00+00:00",
                "2024-01-01T11:30:00+00:00",
                "2024-01-01T11:45:00+00:00"
            ]
        );
    }

    #[test]
    fn macros() {
        let after = "2024-05-15T10:20:00Z";
        assert_eq!(next("@hourly", after), "2024-05-15T11:00:00+00:00");
        assert_eq!(next("@daily", after), "2024-05-16T00:00:00+00:00");
        assert_eq!(next("@midnight", after), "2024-05-16T00:00:00+00:00");
        // 2024-05-19 is a Sunday.
        assert_eq!(next("@weekly", after), "2024-05-19T00:00:00+00:00");
        assert_eq!(next("@monthly", after), "2024-06-01T00:00:00+00:00");
        assert_eq!(next("@yearly", after), "2025-01-01T00:00:00+00:00");
        assert_eq!(next("@annually", after), "2025-01-01T00:00:00+00:00");
        assert_eq!(next("  0 * * * * ", after), "2024-05-15T11:00:00+00:00");
    }

    #[test]
    fn what_a_cronjob_refuses_is_refused() {
        for (input, reason) in [
            (" @hourly", "without blanks"),
            ("@hourly ", "without blanks"),
            ("0 0 * * 7", "7 is out of range 0-6"),
            ("0 0 * * 5-7", "out of range 0-6"),
        ] {
            let err = Cron::parse(input).expect_err(input).to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            fires("0 9 * jan-mar MON-fri", Tz::UTC, "2024-03-29T09:00:00Z", 2),
            // Friday 2024-03-29, then the next weekday in Jan-Mar is in 2025.
            vec!["2025-01-01T09:00:00+00:00", "2025-01-02T09:00:00+00:00"]
        );
        assert_eq!(
            next("0 0 * * sun", "2024-05-15T00:00:00Z"),
            "2024-05-19T00:00:00+00:00"
        );
        assert_eq!(
            err("0 0 * * tuesday"),
            "invalid cron day-of-week \"tuesday\": \"tuesday\" is not a number or a weekday name"
        );
        assert_eq!(
            err("0 0 * january *"),
            "invalid cron month \"january\": \"january\" is not a number or a month name"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err("0 25 * * *"),
            "invalid cron hour \"25\": 25 is out of range 0-23"
        );
        assert_eq!(
            err("60 0 * * *"),
            "invalid cron minute \"60\": 60 is out of range 0-59"
        );
        assert_eq!(
            err("0 0 0 * *"),
            "invalid cron day-of-month \"0\": 0 is out of range 1-31"
        );
        assert_eq!(
            err("0 0 * 13 *"),
            "invalid cron month \"13\": 13 is out of range 1-12"
        );
        assert_eq!(
            err("0 0 * * 8"),
            "invalid cron day-of-week \"8\": 8 is out of range 0-6"
        );
        assert_eq!(
            err("0 0 * * XYZ"),
            "invalid cron day-of-week \"XYZ\": \"XYZ\" is not a number or a weekday name"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "invalid cron minute \"*/0\": step must be at least 1"
        );
        assert_eq!(
            err("0 5-2 * * *"),
            "invalid cron hour \"5-2\": range 5-2 is reversed (start is after end)"
        );
        assert_eq!(
            err("1,,2 * * * *"),
            "invalid cron minute \"1,,2\": empty element in the comma-separated list"
        );
        assert_eq!(
            err("-5 * * * *"),
            "invalid cron minute \"-5\": negative numbers are not supported"
        );
        assert_eq!(
            err("* * * *"),
            "invalid cron expression \"* * * *\": expected 5 fields \"minute hour day-of-month month day-of-week\", found 4"
        );
        assert_eq!(
            err("xyz"),
            "invalid cron expression \"xyz\": expected 5 fields \"minute hour day-of-month month day-of-week\", found 1"
        );
        assert!(err("0 0 0 * * *").contains("found 6"));
        assert_eq!(err(""), "invalid cron expression: it is empty");
        assert_eq!(err("   "), "invalid cron expression: it is empty");
        assert_eq!(
            err("@fortnightly"),
            "invalid cron expression \"@fortnightly\": unknown macro (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
        );
        assert!(matches!(
            Cron::parse("@Daily"),
            Err(CronError::UnknownMacro(_))
        ));
        assert!(matches!(
            Cron::parse("@every 1h"),
            Err(CronError::EveryMacro(_))
        ));
        assert!(matches!(
            Cron::parse("CRON_TZ=Europe/Berlin 0 0 * * *"),
            Err(CronError::TzPrefix(_))
        ));
        assert!(matches!(
            Cron::parse("TZ=UTC 0 0 * * *"),
            Err(CronError::TzPrefix(_))
        ));
        for bad in [
            "*-5 * * * *",
            "1-2-3 * * * *",
            "1/2/3 * * * *",
            "L * * * *",
            "0 0 * * 1#2",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn impossible_days_are_rejected() {
        assert_eq!(
            err("0 0 30 2 *"),
            "invalid cron expression \"0 0 30 2 *\": day-of-month \"30\" never occurs in month \"2\""
        );
        assert!(Cron::parse("0 0 31 apr,jun,sep,nov *").is_err());
        assert!(Cron::parse("0 0 31 4,5 *").is_ok());
        assert!(Cron::parse("0 0 29 2 *").is_ok());
        // With a weekday as well, OR applies and the weekdays of February still fire.
        assert_eq!(
            next("0 0 30 2 mon", "2024-01-31T00:00:00Z"),
            "2024-02-05T00:00:00+00:00"
        );
    }

    #[test]
    fn searches_past_robfig_five_years() {
        assert_eq!(
            next("0 0 29 2 *", "2097-03-01T00:00:00Z"),
            "2104-02-29T00:00:00+00:00"
        );
    }

    #[test]
    fn whitespace_and_display() {
        let c = cron(" 0\t9  * *  1-5 ");
        assert_eq!(c.to_string(), " 0\t9  * *  1-5 ");
        assert_eq!(c.calendar, cron("0 9 * * 1-5").calendar);
        assert_eq!(
            "@hourly".parse::<Cron>().map(|c| c.to_string()),
            Ok("@hourly".into())
        );
    }

    // DST: robfig/cron v3 vectors (America/New_York), then Europe/Berlin.

    #[test]
    fn new_york_spring_forward_skips_missing_times() {
        let ny = Tz::America__New_York;
        assert_eq!(
            fires("30 2 11 Mar *", ny, "2012-03-11T00:00:00-05:00", 1),
            vec!["2013-03-11T02:30:00-04:00"]
        );
        assert_eq!(
            fires("0 * * * *", ny, "2012-03-11T00:00:00-05:00", 4),
            vec![
                "2012-03-11T01:00:00-05:00",
                "2012-03-11T03:00:00-04:00",
                "2012-03-11T04:00:00-04:00",
                "2012-03-11T05:00:00-04:00"
            ]
        );
        assert_eq!(
            fires("0 1 * * *", ny, "2012-03-11T00:00:00-05:00", 2),
            vec!["2012-03-11T01:00:00-05:00", "2012-03-12T01:00:00-04:00"]
        );
        assert_eq!(
            fires("0 2 * * *", ny, "2012-03-11T00:00:00-05:00", 1),
            vec!["2012-03-12T02:00:00-04:00"]
        );
    }

    #[test]
    fn new_york_fall_back_repeats_times() {
        let ny = Tz::America__New_York;
        assert_eq!(
            fires("30 2 04 Nov *", ny, "2012-11-04T00:00:00-04:00", 1),
            vec!["2012-11-04T02:30:00-05:00"]
        );
        assert_eq!(
            fires("30 1 04 Nov *", ny, "2012-11-04T01:45:00-04:00", 1),
            vec!["2012-11-04T01:30:00-05:00"]
        );
        assert_eq!(
            fires("0 * * * *", ny, "2012-11-04T00:00:00-04:00", 3),
            vec![
                "2012-11-04T01:00:00-04:00",
                "2012-11-04T01:00:00-05:00",
                "2012-11-04T02:00:00-05:00"
            ]
        );
        assert_eq!(
            fires("0 1 * * *", ny, "2012-11-04T00:00:00-04:00", 3),
            vec![
                "2012-11-04T01:00:00-04:00",
                "2012-11-04T01:00:00-05:00",
                "2012-11-05T01:00:00-05:00"
            ]
        );
        assert_eq!(
            fires("0 2 * * *", ny, "2012-11-04T00:00:00-04:00", 2),
            vec!["2012-11-04T02:00:00-05:00", "2012-11-05T02:00:00-05:00"]
        );
        assert_eq!(
            fires("0 3 * * *", ny, "2012-11-04T00:00:00-04:00", 2),
            vec!["2012-11-04T03:00:00-05:00", "2012-11-05T03:00:00-05:00"]
        );
    }

    #[test]
    fn sao_paulo_midnight_gap() {
        // robfig/cron issue 157: DST there began at midnight.
        let sp = Tz::America__Sao_Paulo;
        assert_eq!(
            fires("0 9 10 * *", sp, "2018-10-17T05:00:00-04:00", 1),
            vec!["2018-11-10T09:00:00-02:00"]
        );
        assert_eq!(
            fires("0 9 22 * *", sp, "2018-02-14T05:00:00-05:00", 1),
            vec!["2018-02-22T09:00:00-03:00"]
        );
        // The skipped midnight itself is skipped.
        assert_eq!(
            fires("0 0 * * *", sp, "2018-11-03T12:00:00-03:00", 1),
            vec!["2018-11-05T00:00:00-02:00"]
        );
    }

    #[test]
    fn berlin_spring_forward_skips_missing_times() {
        let berlin = Tz::Europe__Berlin;
        assert_eq!(
            fires("30 2 * * *", berlin, "2024-03-30T02:30:00+01:00", 2),
            vec!["2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]
        );
        assert_eq!(
            fires("*/30 * * * *", berlin, "2024-03-31T01:00:00+01:00", 3),
            vec![
                "2024-03-31T01:30:00+01:00",
                "2024-03-31T03:00:00+02:00",
                "2024-03-31T03:30:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_repeats_times() {
        let berlin = Tz::Europe__Berlin;
        assert_eq!(
            fires("30 2 * * *", berlin, "2024-10-26T02:30:00+02:00", 3),
            vec![
                "2024-10-27T02:30:00+02:00",
                "2024-10-27T02:30:00+01:00",
                "2024-10-28T02:30:00+01:00"
            ]
        );
        assert_eq!(
            fires("0,45 * * * *", berlin, "2024-10-27T01:50:00+02:00", 5),
            vec![
                "2024-10-27T02:00:00+02:00",
                "2024-10-27T02:45:00+02:00",
                "2024-10-27T02:00:00+01:00",
                "2024-10-27T02:45:00+01:00",
                "2024-10-27T03:00:00+01:00"
            ]
        );
        // From inside the first pass, an earlier wall time's second pass comes next.
        assert_eq!(
            fires("15 2 * * *", berlin, "2024-10-27T02:40:00+02:00", 2),
            vec!["2024-10-27T02:15:00+01:00", "2024-10-28T02:15:00+01:00"]
        );
    }

    #[test]
    fn fires_are_strictly_increasing_and_every_matching_instant_fires() {
        let c = cron("*/10 * * * *");
        for tz in [
            Tz::Europe__Berlin,
            Tz::America__New_York,
            Tz::Australia__Lord_Howe,
        ] {
            // Across a whole year every 10 minutes of real time must fire exactly once.
            let start = utc("2024-01-01T00:00:00Z");
            let mut t = start;
            let mut count = 0;
            while t < utc("2025-01-01T00:00:00Z") {
                let fire = c.next_after(t, &tz).expect("fires").with_timezone(&Utc);
                assert_eq!(fire - t, TimeDelta::minutes(10), "{tz} after {t}");
                t = fire;
                count += 1;
            }
            assert_eq!(count, 366 * 24 * 6, "{tz}");
        }
    }
}
