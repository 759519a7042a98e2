//! Kubernetes `Time` and chrono instants, both ways, at the microsecond resolution both keep.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub(crate) fn to_time(t: DateTime<Utc>) -> Option<Time> {
    Timestamp::from_microsecond(t.timestamp_micros())
        .ok()
        .map(Time)
}

pub(crate) fn from_time(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t.0.as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_survive_the_round_trip() {
        let t = DateTime::from_timestamp(1_900_000_000, 123_456_000).expect("t");
        let time = to_time(t).expect("in range");
        assert_eq!(time.0.as_microsecond(), 1_900_000_000_123_456);
        assert_eq!(from_time(&time), Some(t));
    }
}
