//! Wall-clock matching: which local dates and minutes a parsed crontab or cron selects, and
//! the search for the next such minute. Time zones and DST are the callers' business.

use chrono::{Datelike, Months, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::fields::{bit, next_set};

/// How far ahead a search looks. Dates repeat with their weekdays every 400 Gregorian years,
/// so a schedule that matches no date within that span never matches any.
pub(crate) const SEARCH_YEARS: u32 = 400;

/// Longest month length, February counted as 29 (a date that occurs in some year is valid).
const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// How the day-of-month and day-of-week sets combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DayRule {
    /// Both must match (Celery always; cron when either field is `*`).
    Both,
    /// Either may match (cron when both fields are restricted).
    Either,
}

/// The value sets of a five-field schedule, as bit masks (bit `v` set = value `v` selected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Calendar {
    pub minutes: u64,
    pub hours: u64,
    pub days_of_month: u64,
    pub months: u64,
    /// 0 = Sunday.
    pub days_of_week: u64,
    pub day_rule: DayRule,
}

impl Calendar {
    pub(super) fn date_matches(&self, date: NaiveDate) -> bool {
        if self.months & bit(date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & bit(date.day()) != 0;
        let dow = self.days_of_week & bit(date.weekday().num_days_from_sunday()) != 0;
        match self.day_rule {
            DayRule::Both => dom && dow,
            DayRule::Either => dom || dow,
        }
    }

    /// Whether some selected day of month exists in some selected month (Feb 29 counts).
    pub(super) fn has_real_date(&self) -> bool {
        (1..=12u32).any(|month| {
            self.months & bit(month) != 0
                && (1..=MAX_DAYS[month as usize - 1]).any(|day| self.days_of_month & bit(day) != 0)
        })
    }

    /// First selected time of day strictly after `after`, or the first of the day if `None`.
    fn first_time(&self, after: Option<NaiveTime>) -> Option<NaiveTime> {
        let (hour, minute) = match after {
            None => (next_set(self.hours, 0)?, next_set(self.minutes, 0)?),
            Some(t) => {
                let same_hour = (self.hours & bit(t.hour()) != 0)
                    .then(|| next_set(self.minutes, t.minute() + 1))
                    .flatten();
                match same_hour {
                    Some(minute) => (t.hour(), minute),
                    None => (
                        next_set(self.hours, t.hour() + 1)?,
                        next_set(self.minutes, 0)?,
                    ),
                }
            }
        };
        NaiveTime::from_hms_opt(hour, minute, 0)
    }

    /// The first selected wall-clock minute strictly after `after`, looking at dates up to
    /// and including `last`.
    pub(super) fn next_wall_after(
        &self,
        after: NaiveDateTime,
        last: NaiveDate,
    ) -> Option<NaiveDateTime> {
        let mut date = after.date();
        let mut from = Some(after.time());
        while date <= last {
            if self.months & bit(date.month()) == 0 {
                // Skip the whole month rather than walking its days.
                date = NaiveDate::from_ymd_opt(date.year(), date.month(), 1)?
                    .checked_add_months(Months::new(1))?;
                from = None;
                continue;
            }
            if self.date_matches(date)
                && let Some(time) = self.first_time(from)
            {
                return Some(date.and_time(time));
            }
            date = date.succ_opt()?;
            from = None;
        }
        None
    }
}

/// The last date a search starting on `from` looks at.
pub(crate) fn search_limit(from: NaiveDate) -> NaiveDate {
    from.checked_add_months(Months::new(12 * SEARCH_YEARS))
        .unwrap_or(NaiveDate::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(from: u32, to: u32) -> u64 {
        (from..=to).fold(0, |acc, v| acc | bit(v))
    }

    fn every_minute() -> Calendar {
        Calendar {
            minutes: all(0, 59),
            hours: all(0, 23),
            days_of_month: all(1, 31),
            months: all(1, 12),
            days_of_week: all(0, 6),
            day_rule: DayRule::Both,
        }
    }

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("test time")
    }

    #[test]
    fn next_minute_is_strictly_after() {
        let cal = every_minute();
        let last = search_limit(at("2024-01-01 00:00:00").date());
        assert_eq!(
            cal.next_wall_after(at("2024-01-01 10:15:00"), last),
            Some(at("2024-01-01 10:16:00"))
        );
        assert_eq!(
            cal.next_wall_after(at("2024-01-01 10:15:59"), last),
            Some(at("2024-01-01 10:16:00"))
        );
        assert_eq!(
            cal.next_wall_after(at("2024-12-31 23:59:00"), last),
            Some(at("2025-01-01 00:00:00"))
        );
    }

    #[test]
    fn day_rules() {
        let mut cal = every_minute();
        cal.days_of_month = bit(13);
        cal.days_of_week = bit(5);
        // 2024-09-13 is a Friday, 2024-09-06 a Friday, 2024-10-13 a Sunday.
        let friday_13 = NaiveDate::from_ymd_opt(2024, 9, 13).expect("date");
        let friday = NaiveDate::from_ymd_opt(2024, 9, 6).expect("date");
        let sunday_13 = NaiveDate::from_ymd_opt(2024, 10, 13).expect("date");
        assert!(cal.date_matches(friday_13));
        assert!(!cal.date_matches(friday));
        assert!(!cal.date_matches(sunday_13));
        cal.day_rule = DayRule::Either;
        assert!(cal.date_matches(friday_13));
        assert!(cal.date_matches(friday));
        assert!(cal.date_matches(sunday_13));
    }

    #[test]
    fn real_dates() {
        let mut cal = every_minute();
        cal.days_of_month = bit(30);
        cal.months = bit(2);
        assert!(!cal.has_real_date());
        cal.days_of_month = bit(29);
        assert!(cal.has_real_date());
        cal.days_of_month = bit(31);
        cal.months = bit(4) | bit(6) | bit(9) | bit(11);
        assert!(!cal.has_real_date());
        cal.months |= bit(5);
        assert!(cal.has_real_date());
    }

    #[test]
    fn search_stops_at_the_limit() {
        let mut cal = every_minute();
        cal.days_of_month = bit(29);
        cal.months = bit(2);
        let start = at("2097-03-01 00:00:00");
        // 2100 is not a leap year: the next Feb 29 is in 2104.
        assert_eq!(
            cal.next_wall_after(start, search_limit(start.date())),
            Some(at("2104-02-29 00:00:00"))
        );
        let short = NaiveDate::from_ymd_opt(2103, 12, 31).expect("date");
        assert_eq!(cal.next_wall_after(start, short), None);
    }
}
