//! When a PeriodicTask fires: pure functions, no Kubernetes, no Redis.
//!
//! A [`Schedule`] is one of five kinds plus a time zone:
//! - [`Every`]: a fixed [`Interval`] (`10s`, `1h15m40s`) anchored at a start instant; slots
//!   are `start + k * interval`, so they never drift.
//! - [`Crontab`]: Celery's crontab, with Celery's semantics (AND of the day fields, wrapping
//!   ranges, names by their first three letters, Celery's DST rules).
//! - [`Cron`]: standard five-field cron as a Kubernetes CronJob reads it (OR of the day fields
//!   when both are restricted, `@hourly`-style macros, robfig/cron DST behaviour).
//! - `At`: one instant (django-celery-beat's clocked schedule).
//! - [`Solar`]: Celery's `solar(event, lat, lon)`, computed the way Celery computes it.
//!
//! [`Schedule::next_after`] gives the first fire strictly after an instant, carrying the
//! schedule's UTC offset so it prints in RFC 3339 with that offset; [`Schedule::upcoming`]
//! iterates over the following ones. Searches look at most 400 years ahead (a full Gregorian
//! cycle), so they always end; a day of month that can never occur (30 Feb) is refused when
//! parsing.

mod calendar;
pub mod cli;
mod cron;
mod crontab;
mod fields;
#[cfg(test)]
mod fuzz;
mod interval;
mod solar;
mod tz;

use std::iter::FusedIterator;

/// The shape of an [`Interval`] for CRD schemas: units in the order d, h, m, s, each at most
/// once, so `kubectl apply` refuses `500ms`, `1.5s` or `10` (the parser still refuses `0s`).
pub const INTERVAL_PATTERN: &str = "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$";
/// CEL beside [`INTERVAL_PATTERN`] where zero means nothing (RE2 has no lookahead).
pub const NONZERO_INTERVAL_RULE: &str = "self.matches('[1-9]')";

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use thiserror::Error;

pub use cron::{Cron, CronError, CronField};
pub use crontab::{Crontab, CrontabError, CrontabField};
pub use fields::FieldError;
pub use interval::{Every, Interval, IntervalError, IntervalErrorKind};
pub use solar::{Solar, SolarError, SolarEvent, SolarSpec};
pub use tz::{TzError, parse_tz};

/// Any reason a schedule could not be built. Display is one line.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Interval(#[from] IntervalError),
    #[error(transparent)]
    Crontab(#[from] CrontabError),
    #[error(transparent)]
    Cron(#[from] CronError),
    #[error(transparent)]
    TimeZone(#[from] TzError),
    #[error(transparent)]
    Solar(#[from] SolarError),
    /// Not exactly one of `every`, `crontab`, `cron`, `at`, `solar` was set; holds what was
    /// found.
    #[error("invalid schedule: set exactly one of every, crontab, cron, at or solar (found {0})")]
    Source(String),
}

/// What a schedule fires on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    Every(Every),
    Crontab(Crontab),
    Cron(Cron),
    At(DateTime<Utc>),
    Solar(Solar),
}

/// A schedule and the time zone it is read in (only presentation for `Every`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    kind: ScheduleKind,
    tz: Tz,
}

/// The five crontab fields as written in a PeriodicTask; `None` means `*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrontabFields<'a> {
    pub minute: Option<&'a str>,
    pub hour: Option<&'a str>,
    pub day_of_week: Option<&'a str>,
    pub day_of_month: Option<&'a str>,
    pub month_of_year: Option<&'a str>,
}

impl CrontabFields<'_> {
    pub fn parse(&self) -> Result<Crontab, CrontabError> {
        Crontab::new(
            self.minute.unwrap_or("*"),
            self.hour.unwrap_or("*"),
            self.day_of_week.unwrap_or("*"),
            self.day_of_month.unwrap_or("*"),
            self.month_of_year.unwrap_or("*"),
        )
    }
}

/// The `schedule` field of a PeriodicTask as written: exactly one of these must be set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScheduleSpec<'a> {
    pub every: Option<&'a str>,
    pub crontab: Option<CrontabFields<'a>>,
    pub cron: Option<&'a str>,
    pub at: Option<DateTime<Utc>>,
    pub solar: Option<SolarSpec>,
}

impl Schedule {
    pub fn new(kind: ScheduleKind, tz: Tz) -> Self {
        Schedule { kind, tz }
    }

    /// Build from a PeriodicTask's fields. `time_zone` is an IANA name (default UTC);
    /// `anchor` is where `every` slots start (the task's startTime, else its creation).
    pub fn from_spec(
        spec: &ScheduleSpec<'_>,
        time_zone: Option<&str>,
        anchor: DateTime<Utc>,
    ) -> Result<Self, ScheduleError> {
        let tz = time_zone.map(parse_tz).transpose()?.unwrap_or(Tz::UTC);
        let kind = match (spec.every, spec.crontab, spec.cron, spec.at, spec.solar) {
            (Some(every), None, None, None, None) => {
                ScheduleKind::Every(Every::new(Interval::parse(every)?, anchor))
            }
            (None, Some(fields), None, None, None) => ScheduleKind::Crontab(fields.parse()?),
            (None, None, Some(cron), None, None) => ScheduleKind::Cron(Cron::parse(cron)?),
            (None, None, None, Some(at), None) => ScheduleKind::At(at),
            (None, None, None, None, Some(solar)) => ScheduleKind::Solar(Solar::from_spec(&solar)?),
            _ => {
                let found: Vec<&str> = [
                    spec.every.map(|_| "every"),
                    spec.crontab.map(|_| "crontab"),
                    spec.cron.map(|_| "cron"),
                    spec.at.map(|_| "at"),
                    spec.solar.map(|_| "solar"),
                ]
                .into_iter()
                .flatten()
                .collect();
                let found = if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(" and ")
                };
                return Err(ScheduleError::Source(found));
            }
        };
        Ok(Schedule { kind, tz })
    }

    pub fn kind(&self) -> &ScheduleKind {
        &self.kind
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first fire strictly after `after`, in the schedule's time zone. `None` when there
    /// is none within 400 years or before the end of chrono's date range.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
        match &self.kind {
            ScheduleKind::Every(every) => {
                every.next_after(after).map(|at| at.with_timezone(&self.tz))
            }
            ScheduleKind::Crontab(crontab) => crontab.next_after(after, &self.tz),
            ScheduleKind::Cron(cron) => cron.next_after(after, &self.tz),
            ScheduleKind::At(at) => (*at > after).then(|| at.with_timezone(&self.tz)),
            ScheduleKind::Solar(solar) => {
                solar.next_after(after).map(|at| at.with_timezone(&self.tz))
            }
        }
    }

    /// The fires strictly after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>) -> Upcoming<'_> {
        Upcoming {
            schedule: self,
            cursor: Some(after),
        }
    }
}

/// Iterator over a schedule's fires, from [`Schedule::upcoming`].
#[derive(Clone, Debug)]
pub struct Upcoming<'a> {
    schedule: &'a Schedule,
    cursor: Option<DateTime<Utc>>,
}

impl Iterator for Upcoming<'_> {
    type Item = DateTime<Tz>;

    fn next(&mut self) -> Option<Self::Item> {
        let fire = self.schedule.next_after(self.cursor?);
        self.cursor = fire.map(|at| at.with_timezone(&Utc));
        fire
    }
}

impl FusedIterator for Upcoming<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn lines(schedule: &Schedule, after: &str, n: usize) -> Vec<String> {
        schedule
            .upcoming(utc(after))
            .take(n)
            .map(|at| at.to_rfc3339())
            .collect()
    }

    #[test]
    fn every_is_anchored_and_shown_in_the_zone() {
        let spec = ScheduleSpec {
            every: Some("90m"),
            ..Default::default()
        };
        let schedule =
            Schedule::from_spec(&spec, Some("Europe/Berlin"), utc("2024-03-31T00:15:00Z"))
                .expect("valid");
        assert_eq!(
            lines(&schedule, "2024-03-31T00:00:00Z", 3),
            vec![
                "2024-03-31T01:15:00+01:00",
                "2024-03-31T03:45:00+02:00",
                "2024-03-31T05:15:00+02:00"
            ]
        );
    }

    #[test]
    fn crontab_fields_default_to_star() {
        let spec = ScheduleSpec {
            crontab: Some(CrontabFields {
                minute: Some("0"),
                hour: Some("*/3,8-12"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let schedule =
            Schedule::from_spec(&spec, None, utc("2024-01-01T00:00:00Z")).expect("valid");
        assert_eq!(schedule.time_zone(), Tz::UTC);
        assert_eq!(
            lines(&schedule, "2024-05-01T06:30:00Z", 4),
            vec![
                "2024-05-01T08:00:00+00:00",
                "2024-05-01T09:00:00+00:00",
                "2024-05-01T10:00:00+00:00",
                "2024-05-01T11:00:00+00:00"
            ]
        );
    }

    #[test]
    fn cron_in_a_zone() {
        let spec = ScheduleSpec {
            cron: Some("0 9 * * mon-fri"),
            ..Default::default()
        };
        let schedule =
            Schedule::from_spec(&spec, Some("America/New_York"), utc("2024-01-01T00:00:00Z"))
                .expect("valid");
        // 2024-03-08 is a Friday; DST starts on Sunday the 10th.
        assert_eq!(
            lines(&schedule, "2024-03-08T15:00:00Z", 2),
            vec!["2024-03-11T09:00:00-04:00", "2024-03-12T09:00:00-04:00"]
        );
    }

    #[test]
    fn exactly_one_source() {
        let anchor = utc("2024-01-01T00:00:00Z");
        let none = Schedule::from_spec(&ScheduleSpec::default(), None, anchor);
        assert_eq!(
            none.map_err(|e| e.to_string()),
            Err(
                "invalid schedule: set exactly one of every, crontab, cron, at or solar (found none)"
                    .into()
            )
        );
        let two = ScheduleSpec {
            every: Some("10s"),
            cron: Some("* * * * *"),
            ..Default::default()
        };
        assert_eq!(
            Schedule::from_spec(&two, None, anchor).map_err(|e| e.to_string()),
            Err(
                "invalid schedule: set exactly one of every, crontab, cron, at or solar (found every and cron)"
                    .into()
            )
        );
        let sunset = SolarSpec {
            event: SolarEvent::Sunset,
            latitude: 52.52,
            longitude: 13.405,
        };
        let both = ScheduleSpec {
            at: Some(anchor),
            solar: Some(sunset),
            ..Default::default()
        };
        assert_eq!(
            Schedule::from_spec(&both, None, anchor).map_err(|e| e.to_string()),
            Err(
                "invalid schedule: set exactly one of every, crontab, cron, at or solar (found at and solar)"
                    .into()
            )
        );
        let solar = ScheduleSpec {
            solar: Some(sunset),
            ..Default::default()
        };
        let berlin = Schedule::from_spec(&solar, Some("Europe/Berlin"), anchor).expect("valid");
        let next = berlin.next_after(anchor).expect("a sunset");
        assert_eq!(
            next.to_rfc3339(),
            "2024-01-01T16:02:19+01:00",
            "Celery: 15:02:19.73 UTC; the zone only changes how it is shown"
        );
        let far_north = ScheduleSpec {
            solar: Some(SolarSpec {
                latitude: 90.5,
                ..sunset
            }),
            ..Default::default()
        };
        assert_eq!(
            Schedule::from_spec(&far_north, None, anchor).map_err(|e| e.to_string()),
            Err("invalid solar latitude 90.5: must be between -90 and 90".into())
        );
    }

    #[test]
    fn errors_pass_through_on_one_line() {
        let anchor = utc("2024-01-01T00:00:00Z");
        let bad_hour = ScheduleSpec {
            crontab: Some(CrontabFields {
                hour: Some("25"),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            Schedule::from_spec(&bad_hour, None, anchor).map_err(|e| e.to_string()),
            Err("invalid crontab hour \"25\": 25 is out of range 0-23".into())
        );
        let bad_zone = ScheduleSpec {
            every: Some("10s"),
            ..Default::default()
        };
        assert!(matches!(
            Schedule::from_spec(&bad_zone, Some("Moon/Base"), anchor),
            Err(ScheduleError::TimeZone(_))
        ));
        let bad_every = ScheduleSpec {
            every: Some("10"),
            ..Default::default()
        };
        assert!(matches!(
            Schedule::from_spec(&bad_every, None, anchor),
            Err(ScheduleError::Interval(_))
        ));
    }

    #[test]
    fn at_fires_once_and_then_never() {
        let spec = ScheduleSpec {
            at: Some(utc("2026-12-24T18:00:00Z")),
            ..Default::default()
        };
        let schedule =
            Schedule::from_spec(&spec, Some("Europe/Berlin"), utc("2026-01-01T00:00:00Z"))
                .expect("valid");
        assert_eq!(
            lines(&schedule, "2026-12-01T00:00:00Z", 3),
            vec!["2026-12-24T19:00:00+01:00"]
        );
        assert_eq!(schedule.next_after(utc("2026-12-24T18:00:00Z")), None);
    }

    #[test]
    fn upcoming_ends_with_time_itself() {
        let schedule = Schedule::new(
            ScheduleKind::Every(Every::new(
                Interval::parse("1d").expect("valid"),
                DateTime::<Utc>::MAX_UTC - chrono::TimeDelta::hours(36),
            )),
            Tz::UTC,
        );
        let mut it = schedule.upcoming(DateTime::<Utc>::MAX_UTC - chrono::TimeDelta::days(3));
        assert!(it.next().is_some());
        assert!(it.next().is_some());
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }
}
