//! Field syntax shared by the Celery crontab and the standard cron parsers: numbers, weekday
//! and month names, steps, value sets as bit masks, and the errors a field can raise.

use thiserror::Error;

/// Why one field of a crontab or cron expression was rejected.
///
/// The message is a short phrase; the schedule error wrapping it names the field and its value.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FieldError {
    #[error("value is empty")]
    Empty,
    #[error("empty element in the comma-separated list")]
    EmptyElement,
    #[error("{value} is out of range {min}-{max}")]
    OutOfRange { value: String, min: u32, max: u32 },
    #[error("negative numbers are not supported")]
    Negative,
    #[error("\"{token}\" is not {expected}")]
    NotAValue {
        token: String,
        expected: &'static str,
    },
    #[error("missing step after \"/\"")]
    MissingStep,
    #[error("step \"{0}\" is not a whole number")]
    InvalidStep(String),
    #[error("step must be at least 1")]
    ZeroStep,
    #[error("range \"{0}\" has no end")]
    IncompleteRange(String),
    #[error("a step needs \"*\" or a range before it (e.g. */5 or 1-9/2)")]
    StepWithoutRange,
    #[error("range {start}-{end} is reversed (start is after end)")]
    ReversedRange { start: u32, end: u32 },
}

const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Which names a field accepts besides numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Names {
    None,
    /// `sun`=0 .. `sat`=6.
    Weekdays,
    /// `jan`=1 .. `dec`=12.
    Months,
}

/// How a name is compared with the three-letter table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameMatch {
    /// Celery: only the first three letters count, so `tuesday` and `Tues` are Tuesday.
    FirstThree,
    /// robfig/cron: the whole token must be one of the three-letter names.
    Exact,
}

impl Names {
    fn lookup(self, token: &str, how: NameMatch) -> Option<u32> {
        let (table, first): (&[&str], u32) = match self {
            Names::None => return None,
            Names::Weekdays => (&WEEKDAYS, 0),
            Names::Months => (&MONTHS, 1),
        };
        let key = match how {
            NameMatch::FirstThree => token.get(..3)?,
            NameMatch::Exact => token,
        }
        .to_ascii_lowercase();
        let index = table.iter().position(|name| *name == key)?;
        u32::try_from(index).ok().map(|i| i + first)
    }

    fn expected(self) -> &'static str {
        match self {
            Names::None => "a number",
            Names::Weekdays => "a number or a weekday name",
            Names::Months => "a number or a month name",
        }
    }
}

/// The values one field may take and how its names are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Domain {
    pub min: u32,
    pub max: u32,
    pub names: Names,
    pub name_match: NameMatch,
}

impl Domain {
    /// One value: ASCII digits or a name, within `min..=max`.
    pub(super) fn value(&self, token: &str) -> Result<u32, FieldError> {
        if token.starts_with('-') {
            return Err(FieldError::Negative);
        }
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            // Digits only, so a parse failure can only mean "too large".
            return token
                .parse::<u32>()
                .ok()
                .filter(|v| (self.min..=self.max).contains(v))
                .ok_or_else(|| FieldError::OutOfRange {
                    value: token.to_string(),
                    min: self.min,
                    max: self.max,
                });
        }
        // Letters only: Celery would also take `mon1` as Monday, which hides typos.
        if !token.is_empty()
            && token.bytes().all(|b| b.is_ascii_alphabetic())
            && let Some(v) = self.names.lookup(token, self.name_match)
        {
            return Ok(v);
        }
        Err(FieldError::NotAValue {
            token: token.to_string(),
            expected: self.names.expected(),
        })
    }
}

/// The `N` of `.../N`: a whole number of at least 1.
pub(crate) fn parse_step(step: &str) -> Result<u32, FieldError> {
    if step.is_empty() {
        return Err(FieldError::MissingStep);
    }
    if !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldError::InvalidStep(step.to_string()));
    }
    // A step too large for u32 still just selects the first value of its range.
    let n = step.parse::<u32>().unwrap_or(u32::MAX);
    if n == 0 {
        return Err(FieldError::ZeroStep);
    }
    Ok(n)
}

/// The bit standing for value `v` in a field's value set (all values are below 64).
pub(crate) const fn bit(v: u32) -> u64 {
    1 << v
}

/// The smallest value `>= from` in `bits`.
pub(crate) fn next_set(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// The values of a set, ascending (for tests and messages).
#[cfg(test)]
pub(crate) fn members(bits: u64) -> Vec<u32> {
    (0..64).filter(|v| bits & bit(*v) != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOW: Domain = Domain {
        min: 0,
        max: 6,
        names: Names::Weekdays,
        name_match: NameMatch::FirstThree,
    };
    const MONTH_EXACT: Domain = Domain {
        min: 1,
        max: 12,
        names: Names::Months,
        name_match: NameMatch::Exact,
    };
    const HOUR: Domain = Domain {
        min: 0,
        max: 23,
        names: Names::None,
        name_match: NameMatch::Exact,
    };

    #[test]
    fn numbers_within_range() {
        assert_eq!(HOUR.value("0"), Ok(0));
        assert_eq!(HOUR.value("23"), Ok(23));
        assert_eq!(HOUR.value("007"), Ok(7));
        assert_eq!(
            HOUR.value("24"),
            Err(FieldError::OutOfRange {
                value: "24".into(),
                min: 0,
                max: 23
            })
        );
        assert_eq!(
            HOUR.value("99999999999999999999")
                .map_err(|e| e.to_string()),
            Err("99999999999999999999 is out of range 0-23".into())
        );
        assert_eq!(HOUR.value("-3"), Err(FieldError::Negative));
    }

    #[test]
    fn celery_names_match_first_three_letters_case_insensitively() {
        assert_eq!(DOW.value("sun"), Ok(0));
        assert_eq!(DOW.value("tuesday"), Ok(2));
        assert_eq!(DOW.value("Tues"), Ok(2));
        assert_eq!(DOW.value("FRI"), Ok(5));
        assert_eq!(DOW.value("Saturday"), Ok(6));
        for bad in ["su", "xyz", "mon1", "mo n", ""] {
            assert!(DOW.value(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            DOW.value("funday").map_err(|e| e.to_string()),
            Err("\"funday\" is not a number or a weekday name".into())
        );
    }

    #[test]
    fn exact_names_need_the_three_letters_only() {
        assert_eq!(MONTH_EXACT.value("jan"), Ok(1));
        assert_eq!(MONTH_EXACT.value("DEC"), Ok(12));
        assert!(MONTH_EXACT.value("january").is_err());
        // Names belong to their own field only.
        assert_eq!(
            HOUR.value("mon").map_err(|e| e.to_string()),
            Err("\"mon\" is not a number".into())
        );
    }

    #[test]
    fn steps() {
        assert_eq!(parse_step("5"), Ok(5));
        assert_eq!(parse_step("0"), Err(FieldError::ZeroStep));
        assert_eq!(parse_step(""), Err(FieldError::MissingStep));
        assert_eq!(parse_step("x"), Err(FieldError::InvalidStep("x".into())));
        assert_eq!(parse_step("99999999999"), Ok(u32::MAX));
    }

    #[test]
    fn bit_sets() {
        let bits = bit(3) | bit(10) | bit(59);
        assert_eq!(next_set(bits, 0), Some(3));
        assert_eq!(next_set(bits, 3), Some(3));
        assert_eq!(next_set(bits, 4), Some(10));
        assert_eq!(next_set(bits, 60), None);
        assert_eq!(next_set(bits, 64), None);
        assert_eq!(members(bits), vec![3, 10, 59]);
    }
}
