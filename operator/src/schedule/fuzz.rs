//! Property tests of the schedule parsers, which read input from anyone who may create a
//! PeriodicTask: any input is refused or parsed without a panic, and what parses fires at
//! strictly increasing instants. `PROPTEST_CASES` sets how many cases run (the default is
//! the short run of `make test`; `scripts/fuzz.sh` runs them for minutes).

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

/// Cron and crontab fields: mostly well-formed lists, so most cases get deep into the
/// parsers and the fire search, and the rest pieces mixed with arbitrary characters.
fn field() -> impl Strategy<Value = String> {
    let item = "\\*|[0-9]{1,2}|\\*/[1-9][0-9]?|[0-9]{1,2}-[0-9]{1,2}(/[1-9])?|(mon|tue|sun|jan|mar|dec)(-(fri|sat|jun))?";
    let list = proptest::collection::vec(item, 1..4).prop_map(|v| v.join(","));
    let piece = prop_oneof![
        "[0-9]{1,3}",
        Just("*".to_owned()),
        Just("/".to_owned()),
        Just("-".to_owned()),
        Just(",".to_owned()),
        Just("?".to_owned()),
        "(mon|tue|sun|SAT|jan|dec|fun|L|W|#)",
        ".{0,2}",
    ];
    let pieces = proptest::collection::vec(piece, 1..6).prop_map(|v| v.concat());
    prop_oneof![3 => list, 1 => pieces]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("UTC".to_owned()),
        Just("Europe/Berlin".to_owned()),
        // Zones whose DST changes at midnight or by 30 or 45 minutes.
        Just("America/Asuncion".to_owned()),
        Just("America/Havana".to_owned()),
        Just("Asia/Tehran".to_owned()),
        Just("Australia/Lord_Howe".to_owned()),
        Just("Pacific/Chatham".to_owned()),
        "[A-Za-z_/+-]{0,20}",
        ".{0,8}",
    ]
}

/// From 1970 to 2100.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800).prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("in range"))
}

fn fires_in_order(schedule: &Schedule, after: DateTime<Utc>) -> Result<(), TestCaseError> {
    let mut cursor = after;
    for _ in 0..5 {
        let Some(next) = schedule.next_after(cursor) else {
            break;
        };
        let next = next.with_timezone(&Utc);
        prop_assert!(next > cursor, "{next} is not after {cursor}");
        cursor = next;
    }
    Ok(())
}

proptest! {
    #[test]
    fn a_crontab_parses_or_is_refused_and_fires_in_order(
        minute in field(), hour in field(), dow in field(), dom in field(), month in field(),
        tz in zone(), after in instant(),
    ) {
        let fields = CrontabFields {
            minute: Some(&minute),
            hour: Some(&hour),
            day_of_week: Some(&dow),
            day_of_month: Some(&dom),
            month_of_year: Some(&month),
        };
        let spec = ScheduleSpec { crontab: Some(fields), ..Default::default() };
        if let Ok(s) = Schedule::from_spec(&spec, Some(&tz), after) {
            fires_in_order(&s, after)?;
        }
    }

    #[test]
    fn a_cron_expression_parses_or_is_refused_and_fires_in_order(
        fields in proptest::collection::vec(field(), 1..8),
        separator in prop_oneof![Just(" "), Just("  "), Just("\t")],
        r#macro in "@[a-z]{0,9}",
        use_macro in any::<bool>(),
        tz in zone(), after in instant(),
    ) {
        let expr = if use_macro { r#macro } else { fields.join(separator) };
        let spec = ScheduleSpec { cron: Some(&expr), ..Default::default() };
        if let Ok(s) = Schedule::from_spec(&spec, Some(&tz), after) {
            fires_in_order(&s, after)?;
        }
    }

    #[test]
    fn an_interval_parses_or_is_refused_and_fires_in_order(
        every in prop_oneof!["([0-9]{1,20}[dhms]){1,5}", "[0-9dhms.+-]{0,12}", ".{0,16}"],
        anchor in instant(), after in instant(),
    ) {
        let spec = ScheduleSpec { every: Some(&every), ..Default::default() };
        if let Ok(s) = Schedule::from_spec(&spec, None, anchor) {
            fires_in_order(&s, after)?;
        }
    }

    #[test]
    fn a_time_zone_name_parses_or_is_refused(name in zone()) {
        let _ = parse_tz(&name);
    }
}
