//! The JSON that `beat_export.py` prints: a Celery app's beat schedule, entry by entry.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The format tag the exporter writes; another tag is refused rather than misread.
pub(crate) const FORMAT: &str = "celery-operator/beat-export/v1";

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct Export {
    pub(crate) format: String,
    /// The app's `timezone`.
    pub(crate) timezone: String,
    pub(crate) entries: Vec<Entry>,
}

/// One schedule entry as `celery beat` holds it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// `beat_schedule` or `django_celery_beat`.
    pub(crate) source: String,
    pub(crate) task: Option<String>,
    pub(crate) schedule: ExportedSchedule,
    #[serde(default)]
    pub(crate) args: Option<Value>,
    #[serde(default)]
    pub(crate) kwargs: Option<Value>,
    #[serde(default)]
    pub(crate) options: BTreeMap<String, Value>,
    /// django-celery-beat's headers column (beat_schedule entries carry theirs in options).
    #[serde(default)]
    pub(crate) headers: Option<Value>,
    #[serde(default = "enabled")]
    pub(crate) enabled: bool,
    #[serde(default)]
    pub(crate) one_off: bool,
    #[serde(default)]
    pub(crate) start_time: Option<String>,
    #[serde(default)]
    pub(crate) end_time: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// What the exporter could not put into JSON.
    #[serde(default)]
    pub(crate) errors: Vec<String>,
}

fn enabled() -> bool {
    true
}

/// A schedule: exactly one of every_seconds, crontab, clocked, solar or unsupported.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(crate) struct ExportedSchedule {
    pub(crate) every_seconds: Option<f64>,
    pub(crate) crontab: Option<ExportedCrontab>,
    /// django-celery-beat's clocked schedule: one RFC 3339 instant.
    pub(crate) clocked: Option<String>,
    /// Celery's solar schedule, as Python holds it (the event is checked when mapping).
    pub(crate) solar: Option<ExportedSolar>,
    /// The zone a crontab is read in.
    pub(crate) timezone: Option<String>,
    /// A schedule kind PeriodicTask has no counterpart for, as Python prints it.
    pub(crate) unsupported: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(crate) struct ExportedSolar {
    pub(crate) event: String,
    pub(crate) latitude: f64,
    pub(crate) longitude: f64,
}

/// Celery's crontab fields in its own string forms.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(crate) struct ExportedCrontab {
    pub(crate) minute: String,
    pub(crate) hour: String,
    pub(crate) day_of_week: String,
    pub(crate) day_of_month: String,
    pub(crate) month_of_year: String,
}
