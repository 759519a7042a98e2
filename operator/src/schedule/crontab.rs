//! Celery's `crontab` schedule with Celery's semantics (celery/schedules.py), as described in
//! `operator/tests/data/celery-wire/SPEC.md` section 4.
//!
//! - Fields `minute` 0-59, `hour` 0-23, `dayOfWeek` 0-6 (0 = Sunday, 7 is invalid),
//!   `dayOfMonth` 1-31, `monthOfYear` 1-12; each defaults to `*`.
//! - Each field is a comma list of `*`, `*/N`, `a-b`, `a-b/N` or a single value. `*/N` counts
//!   from the field's minimum; `a-b` with `b < a` wraps (`11-1` hours = 11..23,0,1) and a step
//!   applies to the wrapped list (`55-5/3` minutes = 55,58,1,4).
//! - Names: weekdays in `dayOfWeek`, months in `monthOfYear`, read by their first three letters,
//!   case-insensitive (`tuesday`, `Tue`, `mar`). Unlike Celery, names are refused in other
//!   fields and must be letters only.
//! - Month AND day-of-month AND day-of-week must all match (`0 0 13 * fri` = Friday the 13th).
//! - A day-of-month that never occurs in the selected months (30 Feb) is a parse error.
//! - Next fire: the first matching wall-clock minute after the instant's local wall-clock time
//!   in the schedule's time zone. A time inside a spring-forward gap fires at the same wall
//!   time shifted by the gap (Berlin 02:30 -> 03:30+02:00); a time that occurs twice fires
//!   once, at its first occurrence.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use thiserror::Error;

use super::calendar::{Calendar, DayRule, search_limit};
use super::fields::{Domain, FieldError, NameMatch, Names, bit, parse_step};
use super::tz::resolve_celery;

/// One of the five crontab fields, named as in the PeriodicTask spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrontabField {
    Minute,
    Hour,
    DayOfWeek,
    DayOfMonth,
    MonthOfYear,
}

impl CrontabField {
    pub fn name(self) -> &'static str {
        match self {
            CrontabField::Minute => "minute",
            CrontabField::Hour => "hour",
            CrontabField::DayOfWeek => "dayOfWeek",
            CrontabField::DayOfMonth => "dayOfMonth",
            CrontabField::MonthOfYear => "monthOfYear",
        }
    }

    fn domain(self) -> Domain {
        let (min, max, names) = match self {
            CrontabField::Minute => (0, 59, Names::None),
            CrontabField::Hour => (0, 23, Names::None),
            CrontabField::DayOfWeek => (0, 6, Names::Weekdays),
            CrontabField::DayOfMonth => (1, 31, Names::None),
            CrontabField::MonthOfYear => (1, 12, Names::Months),
        };
        Domain {
            min,
            max,
            names,
            name_match: NameMatch::FirstThree,
        }
    }
}

impl fmt::Display for CrontabField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a crontab was rejected. Display is one line naming the field and value.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CrontabError {
    #[error("invalid crontab {field} \"{value}\": {reason}")]
    Field {
        field: CrontabField,
        value: String,
        reason: FieldError,
    },
    #[error(
        "invalid crontab \"{input}\": expected 5 fields \"minute hour dayOfMonth monthOfYear dayOfWeek\" separated by single spaces, found {found}"
    )]
    FieldCount { input: String, found: usize },
    #[error(
        "invalid crontab: dayOfMonth \"{day_of_month}\" never occurs in monthOfYear \"{month_of_year}\""
    )]
    NeverOccurs {
        day_of_month: String,
        month_of_year: String,
    },
}

/// A parsed Celery crontab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crontab {
    minute: String,
    hour: String,
    day_of_week: String,
    day_of_month: String,
    month_of_year: String,
    calendar: Calendar,
}

impl Crontab {
    /// Celery's `crontab(minute, hour, day_of_week, day_of_month, month_of_year)`, in that
    /// argument order.
    pub fn new(
        minute: &str,
        hour: &str,
        day_of_week: &str,
        day_of_month: &str,
        month_of_year: &str,
    ) -> Result<Self, CrontabError> {
        let calendar = Calendar {
            minutes: parse_field(CrontabField::Minute, minute)?,
            hours: parse_field(CrontabField::Hour, hour)?,
            days_of_week: parse_field(CrontabField::DayOfWeek, day_of_week)?,
            days_of_month: parse_field(CrontabField::DayOfMonth, day_of_month)?,
            months: parse_field(CrontabField::MonthOfYear, month_of_year)?,
            day_rule: DayRule::Both,
        };
        if !calendar.has_real_date() {
            return Err(CrontabError::NeverOccurs {
                day_of_month: day_of_month.to_string(),
                month_of_year: month_of_year.to_string(),
            });
        }
        Ok(Crontab {
            minute: minute.to_string(),
            hour: hour.to_string(),
            day_of_week: day_of_week.to_string(),
            day_of_month: day_of_month.to_string(),
            month_of_year: month_of_year.to_string(),
            calendar,
        })
    }

    /// Celery's `crontab.from_string("m h dom mon dow")`: exactly five fields separated by
    /// single spaces (so a double space is an empty field, and an error).
    pub fn from_string(input: &str) -> Result<Self, CrontabError> {
        let fields: Vec<&str> = input.split(' ').collect();
        let [minute, hour, day_of_month, month_of_year, day_of_week] = fields[..] else {
            return Err(CrontabError::FieldCount {
                input: input.to_string(),
                found: fields.len(),
            });
        };
        Crontab::new(minute, hour, day_of_week, day_of_month, month_of_year)
    }

    /// The first fire strictly after `after`, in `tz`; `None` if there is none within 400
    /// years (cannot happen for a parsed crontab before the year 262000).
    pub fn next_after(&self, after: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Tz>> {
        let mut wall = after.with_timezone(tz).naive_local();
        let last = search_limit(wall.date());
        loop {
            wall = self.calendar.next_wall_after(wall, last)?;
            // Skipping instants not after `after` is what makes a repeated (fall-back) wall
            // time fire only once: its second pass maps to instants already passed.
            if let Some(fire) = resolve_celery(tz, wall)
                && fire.naive_utc() > after.naive_utc()
            {
                return Some(fire);
            }
        }
    }
}

impl FromStr for Crontab {
    type Err = CrontabError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Crontab::from_string(s)
    }
}

/// The `from_string` form, fields as written.
impl fmt::Display for Crontab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week
        )
    }
}

fn parse_field(field: CrontabField, spec: &str) -> Result<u64, CrontabError> {
    parse_set(spec, field.domain()).map_err(|reason| CrontabError::Field {
        field,
        value: spec.to_string(),
        reason,
    })
}

/// Celery's `crontab_parser(max_, min_).parse(spec)` for values `domain.min..=domain.max`.
pub(crate) fn parse_set(spec: &str, domain: Domain) -> Result<u64, FieldError> {
    if spec.is_empty() {
        return Err(FieldError::Empty);
    }
    let mut bits = 0;
    for part in spec.split(',') {
        if part.is_empty() {
            return Err(FieldError::EmptyElement);
        }
        for v in expand_part(part, domain)? {
            bits |= bit(v);
        }
    }
    Ok(bits)
}

fn expand_part(part: &str, domain: Domain) -> Result<Vec<u32>, FieldError> {
    let (range, step) = match part.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step)?)),
        None => (part, None),
    };
    let values: Vec<u32> = if range == "*" {
        (domain.min..=domain.max).collect()
    } else if let Some((start, end)) = range.split_once('-') {
        if start.is_empty() {
            return Err(FieldError::Negative);
        }
        if end.is_empty() {
            return Err(FieldError::IncompleteRange(range.to_string()));
        }
        let (start, end) = (domain.value(start)?, domain.value(end)?);
        if end < start {
            // Wraps past the maximum: 11-1 on hours is 11..23 then 0..1.
            (start..=domain.max).chain(domain.min..=end).collect()
        } else {
            (start..=end).collect()
        }
    } else if step.is_some() {
        // Celery has no `a/N` form (robfig/cron reads it as a-max/N).
        return Err(FieldError::StepWithoutRange);
    } else {
        vec![domain.value(range)?]
    };
    let step = usize::try_from(step.unwrap_or(1)).unwrap_or(usize::MAX);
    Ok(values.into_iter().step_by(step).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::fields::members;

    fn field(f: CrontabField, spec: &str) -> Vec<u32> {
        members(parse_set(spec, f.domain()).expect("valid field"))
    }

    fn field_err(f: CrontabField, spec: &str) -> String {
        parse_field(f, spec).expect_err("invalid field").to_string()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn cron(minute: &str, hour: &str, dow: &str, dom: &str, month: &str) -> Crontab {
        Crontab::new(minute, hour, dow, dom, month).expect("valid crontab")
    }

    /// `n` fires after `after` in `tz`, as RFC 3339 strings.
    fn fires(c: &Crontab, tz: Tz, after: &str, n: usize) -> Vec<String> {
        let mut t = utc(after);
        let mut out = Vec::new();
        for _ in 0..n {
            let fire = c.next_after(t, &tz).expect("fires");
            out.push(fire.to_rfc3339());
            t = fire.with_timezone(&Utc);
        }
        out
    }

    fn next(c: &Crontab, after: &str) -> String {
        fires(c, Tz::UTC, after, 1).remove(0)
    }

    use CrontabField::*;

    // SPEC.md section 4 parser vectors.

    #[test]
    fn spec_star_and_wrapping_ranges() {
        assert_eq!(field(Hour, "*"), (0..=23).collect::<Vec<_>>());
        assert_eq!(field(DayOfMonth, "*"), (1..=31).collect::<Vec<_>>());
        assert_eq!(
            field(Hour, "11-1"),
            vec![0, 1, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
        );
    }

    #[test]
    fn spec_steps() {
        assert_eq!(field(Minute, "2-10/5"), vec![2, 7]);
        assert_eq!(field(Minute, "55-5/3"), vec![1, 4, 55, 58]);
        // Celery's own vector uses a 1-based 60-value parser.
        let one_based = Domain {
            min: 1,
            max: 60,
            names: Names::None,
            name_match: NameMatch::FirstThree,
        };
        assert_eq!(
            members(parse_set("55-5/3", one_based).expect("valid")),
            vec![1, 4, 55, 58]
        );
        assert_eq!(
            field(Minute, "2-4/3,*/5,0-21/4"),
            vec![
                0, 2, 4, 5, 8, 10, 12, 15, 16, 20, 25, 30, 35, 40, 45, 50, 55
            ]
        );
    }

    #[test]
    fn spec_day_of_week_field() {
        assert_eq!(field(DayOfWeek, "tuesday,sunday,fri"), vec![0, 2, 5]);
        assert_eq!(field(DayOfWeek, "mon-fri"), vec![1, 2, 3, 4, 5]);
        assert_eq!(field(DayOfWeek, "*/2"), vec![0, 2, 4, 6]);
        assert_eq!(field(DayOfWeek, "sun"), vec![0]);
        assert_eq!(field(DayOfWeek, "SAT-Mon"), vec![0, 1, 6]);
        assert_eq!(
            field_err(DayOfWeek, "7"),
            "invalid crontab dayOfWeek \"7\": 7 is out of range 0-6"
        );
    }

    #[test]
    fn spec_day_of_month_and_month() {
        assert_eq!(field(DayOfMonth, "*/5"), vec![1, 6, 11, 16, 21, 26, 31]);
        assert_eq!(
            field_err(DayOfMonth, "0"),
            "invalid crontab dayOfMonth \"0\": 0 is out of range 1-31"
        );
        assert_eq!(
            field_err(DayOfMonth, "32"),
            "invalid crontab dayOfMonth \"32\": 32 is out of range 1-31"
        );
        assert_eq!(field(MonthOfYear, "2-12/2"), vec![2, 4, 6, 8, 10, 12]);
        assert_eq!(
            field_err(MonthOfYear, "13"),
            "invalid crontab monthOfYear \"13\": 13 is out of range 1-12"
        );
        assert_eq!(field(MonthOfYear, "Mar"), vec![3]);
        assert_eq!(field(MonthOfYear, "aug-oct"), vec![8, 9, 10]);
        assert_eq!(field(MonthOfYear, "November,dec-feb"), vec![1, 2, 11, 12]);
    }

    #[test]
    fn spec_errors() {
        assert_eq!(
            field_err(Minute, "*/0"),
            "invalid crontab minute \"*/0\": step must be at least 1"
        );
        assert_eq!(
            field_err(Minute, "-20"),
            "invalid crontab minute \"-20\": negative numbers are not supported"
        );
        assert_eq!(
            field_err(Minute, "1,,2"),
            "invalid crontab minute \"1,,2\": empty element in the comma-separated list"
        );
        assert_eq!(
            field_err(Minute, ""),
            "invalid crontab minute \"\": value is empty"
        );
        assert_eq!(
            field_err(Hour, "25"),
            "invalid crontab hour \"25\": 25 is out of range 0-23"
        );
        assert_eq!(
            field_err(Hour, "5/2"),
            "invalid crontab hour \"5/2\": a step needs \"*\" or a range before it (e.g. */5 or 1-9/2)"
        );
        assert_eq!(
            field_err(Hour, "*/"),
            "invalid crontab hour \"*/\": missing step after \"/\""
        );
        assert_eq!(
            field_err(Hour, "1-"),
            "invalid crontab hour \"1-\": range \"1-\" has no end"
        );
        assert_eq!(
            field_err(Hour, "mon"),
            "invalid crontab hour \"mon\": \"mon\" is not a number"
        );
        assert_eq!(
            field_err(DayOfWeek, "1-2-3"),
            "invalid crontab dayOfWeek \"1-2-3\": \"2-3\" is not a number or a weekday name"
        );
        for bad in [",", "1,", "*/x", "1-5/0", "?", "L", "5 ", "0x10", "1-90"] {
            assert!(parse_field(Minute, bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn impossible_days_are_rejected() {
        let err = Crontab::new("0", "0", "*", "30", "2").expect_err("30 Feb");
        assert_eq!(
            err.to_string(),
            "invalid crontab: dayOfMonth \"30\" never occurs in monthOfYear \"2\""
        );
        assert!(Crontab::new("0", "0", "*", "31", "apr,jun,sep,nov").is_err());
        assert!(Crontab::new("0", "0", "*", "30-31", "feb").is_err());
        assert!(Crontab::new("0", "0", "*", "31", "4,5").is_ok());
        assert!(Crontab::new("0", "0", "*", "29", "2").is_ok());
    }

    #[test]
    fn from_string_takes_five_single_spaced_fields() {
        let c = Crontab::from_string("30 14 18 * mon").expect("valid");
        assert_eq!(c, cron("30", "14", "mon", "18", "*"));
        assert_eq!(c.to_string(), "30 14 18 * mon");
        assert_eq!(
            "*/5 * * * *".parse::<Crontab>(),
            Ok(cron("*/5", "*", "*", "*", "*"))
        );
        assert_eq!(
            Crontab::from_string("0 0 * *")
                .expect_err("4 fields")
                .to_string(),
            "invalid crontab \"0 0 * *\": expected 5 fields \"minute hour dayOfMonth monthOfYear dayOfWeek\" separated by single spaces, found 4"
        );
        assert!(matches!(
            Crontab::from_string("0  0 * * *"),
            Err(CrontabError::FieldCount { found: 6, .. })
        ));
        assert!(matches!(
            Crontab::from_string("0\t0 * * *"),
            Err(CrontabError::FieldCount { found: 4, .. })
        ));
        assert!(matches!(
            Crontab::from_string(" 0 0 * *"),
            Err(CrontabError::Field {
                field: Minute,
                reason: FieldError::Empty,
                ..
            })
        ));
        assert!(matches!(
            Crontab::from_string("0 0 * * 7"),
            Err(CrontabError::Field {
                field: DayOfWeek,
                ..
            })
        ));
    }

    // SPEC.md section 4 next-run vectors (UTC unless stated).

    #[test]
    fn spec_next_every_minute() {
        let c = cron("*", "*", "*", "*", "*");
        assert_eq!(
            next(&c, "2010-09-11T14:59:15Z"),
            "2010-09-11T15:00:00+00:00"
        );
        assert_eq!(
            next(&c, "2010-09-11T15:00:00Z"),
            "2010-09-11T15:01:00+00:00"
        );
    }

    #[test]
    fn spec_next_minute_list_and_hour() {
        let c = cron("5,42", "12", "*", "*", "*");
        assert_eq!(
            next(&c, "2010-09-11T14:30:15Z"),
            "2010-09-12T12:05:00+00:00"
        );
        assert_eq!(
            next(&c, "2010-09-12T12:05:00Z"),
            "2010-09-12T12:42:00+00:00"
        );
    }

    #[test]
    fn spec_next_day_of_week() {
        let c = cron("30", "14", "sat", "*", "*");
        assert_eq!(
            next(&c, "2010-09-11T14:30:15Z"),
            "2010-09-18T14:30:00+00:00"
        );
    }

    #[test]
    fn spec_next_day_of_week_and_day_of_month() {
        let c = cron("30", "14", "mon", "18", "*");
        assert_eq!(
            next(&c, "2010-01-18T14:30:15Z"),
            "2010-10-18T14:30:00+00:00"
        );
    }

    #[test]
    fn spec_next_leap_day() {
        let c = cron("30", "14", "*", "29", "2");
        assert_eq!(
            next(&c, "2012-02-29T14:30:00Z"),
            "2016-02-29T14:30:00+00:00"
        );
        // 2100 is not a leap year.
        assert_eq!(
            next(&c, "2096-03-01T00:00:00Z"),
            "2104-02-29T14:30:00+00:00"
        );
    }

    #[test]
    fn spec_next_all_day_fields() {
        let c = cron("5,42", "*", "fri,sat", "29", "2-10");
        assert_eq!(
            next(&c, "2010-01-28T14:30:15Z"),
            "2010-05-29T00:05:00+00:00"
        );
    }

    #[test]
    fn spec_next_paris_across_fall_back() {
        let c = cron("0", "9", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::Europe__Paris, "2017-10-28T09:00:00+02:00", 2),
            vec!["2017-10-29T09:00:00+01:00", "2017-10-30T09:00:00+01:00"]
        );
    }

    #[test]
    fn friday_the_13th_needs_both_day_fields() {
        let c = Crontab::from_string("0 0 13 * fri").expect("valid");
        assert_eq!(
            fires(&c, Tz::UTC, "2024-01-01T00:00:00Z", 3),
            vec![
                "2024-09-13T00:00:00+00:00",
                "2024-12-13T00:00:00+00:00",
                "2025-06-13T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn wrapping_hours_fire_in_order() {
        let c = cron("0", "22-1", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::UTC, "2024-05-01T21:30:00Z", 5),
            vec![
                "2024-05-01T22:00:00+00:00",
                "2024-05-01T23:00:00+00:00",
                "2024-05-02T00:00:00+00:00",
                "2024-05-02T01:00:00+00:00",
                "2024-05-02T22:00:00+00:00"
            ]
        );
    }

    #[test]
    fn design_example_hours() {
        // DESIGN.md: minute=0, hour='*/3,8-12'.
        let c = cron("0", "*/3,8-12", "*", "*", "*");
        assert_eq!(
            members(c.calendar.hours),
            vec![0, 3, 6, 8, 9, 10, 11, 12, 15, 18, 21]
        );
    }

    // DST, Celery style: gaps shift forward, repeated times fire once.

    #[test]
    fn berlin_spring_forward_shifts_by_the_gap() {
        let c = cron("30", "2", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::Europe__Berlin, "2024-03-30T02:30:00+01:00", 3),
            vec![
                "2024-03-31T03:30:00+02:00",
                "2024-04-01T02:30:00+02:00",
                "2024-04-02T02:30:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_spring_forward_hourly_has_no_duplicates() {
        let c = cron("0,30", "*", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::Europe__Berlin, "2024-03-31T01:00:00+01:00", 4),
            vec![
                "2024-03-31T01:30:00+01:00",
                "2024-03-31T03:00:00+02:00",
                "2024-03-31T03:30:00+02:00",
                "2024-03-31T04:00:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_once_at_first_occurrence() {
        let c = cron("30", "2", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::Europe__Berlin, "2024-10-26T02:30:00+02:00", 2),
            vec!["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]
        );
        let half_hourly = cron("*/30", "*", "*", "*", "*");
        assert_eq!(
            fires(
                &half_hourly,
                Tz::Europe__Berlin,
                "2024-10-27T01:45:00+02:00",
                4
            ),
            vec![
                "2024-10-27T02:00:00+02:00",
                "2024-10-27T02:30:00+02:00",
                "2024-10-27T03:00:00+01:00",
                "2024-10-27T03:30:00+01:00"
            ]
        );
        // An instant inside the second pass waits for the next new wall time.
        assert_eq!(
            fires(
                &half_hourly,
                Tz::Europe__Berlin,
                "2024-10-27T02:10:00+01:00",
                1
            ),
            vec!["2024-10-27T03:00:00+01:00"]
        );
    }

    #[test]
    fn new_york_spring_forward_shifts_by_the_gap() {
        let c = cron("30", "2", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::America__New_York, "2024-03-09T12:00:00-05:00", 2),
            vec!["2024-03-10T03:30:00-04:00", "2024-03-11T02:30:00-04:00"]
        );
    }

    #[test]
    fn new_york_fall_back_fires_once_at_first_occurrence() {
        let c = cron("30", "1", "*", "*", "*");
        assert_eq!(
            fires(&c, Tz::America__New_York, "2024-11-02T12:00:00-04:00", 2),
            vec!["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]
        );
        let hourly = cron("0", "*", "*", "*", "*");
        assert_eq!(
            fires(
                &hourly,
                Tz::America__New_York,
                "2024-11-03T00:30:00-04:00",
                3
            ),
            vec![
                "2024-11-03T01:00:00-04:00",
                "2024-11-03T02:00:00-05:00",
                "2024-11-03T03:00:00-05:00"
            ]
        );
    }

    #[test]
    fn fires_are_strictly_increasing() {
        let c = cron("*/7", "*", "*", "*", "*");
        for tz in [
            Tz::Europe__Berlin,
            Tz::America__New_York,
            Tz::Australia__Lord_Howe,
        ] {
            let mut t = utc("2024-03-01T00:00:00Z");
            for _ in 0..20_000 {
                let fire = c.next_after(t, &tz).expect("fires").with_timezone(&Utc);
                assert!(fire > t, "{tz}: {fire} not after {t}");
                t = fire;
            }
        }
    }
}
