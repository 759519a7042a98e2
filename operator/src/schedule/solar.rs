//! Celery's `solar` schedule (celery/schedules.py, class `solar`): a task that runs when the
//! Sun reaches an event (dawn, sunrise, noon, sunset, dusk) at a latitude and longitude.
//!
//! Celery asks PyEphem for the instant: an `ephem.Observer` with the coordinates, elevation 0,
//! **pressure 0** (no refraction model; the event's horizon angle stands for it: `-0:34` for
//! sunrise and sunset, measured at the Sun's upper limb, `-6`/`-12`/`-18` at its centre for
//! the twilights, `0` for noon) and `next_rising`/`next_setting`/`next_transit` of `Sun()`.
//! To fire when Celery would, this module ports the parts of PyEphem 4.2 and its libastro that
//! those calls run, operation by operation, rather than a textbook approximation:
//! - the Sun's place: VSOP87D Earth series as truncated in libastro (406 terms) with the FK5
//!   correction, mean obliquity, IAU 1980 nutation, Montenbruck's annual aberration,
//!   libastro's ΔT, topocentric parallax, apparent sidereal time;
//! - rising and setting: PyEphem's `_find_rise_or_set` (hour-angle steps; it decides which
//!   event and whether the day has one); noon: `_compute_transit`, a secant search. PyEphem
//!   stops once a step is under 0.1 s, which leaves its answer that far from the converged
//!   instant and dependent on where the search started; this module finishes the iteration
//!   so that an event found again from any start is the same instant (see
//!   `Observer::next_event`).
//!
//! Against Celery 5.7.0 with ephem 4.2.1 (`operator/tests/data/solar`: eight places from the
//! equator to 78 degrees, every event, 2026) all 20960 fires come on the same days, every
//! instant within 0.35 s of Celery's (mostly under 0.1 s), and 20952 in Celery's minute; the
//! other 8 are Celery instants a fraction of a second after a minute boundary.
//!
//! Days without the event (polar day or night, e.g. no sunrise in Tromsø in December, no
//! astronomical dusk in Berlin in June): PyEphem raises `CircumpolarError` and Celery 5.7
//! retries from the next anti-transit (solar midnight), so the day is skipped and the task
//! runs on the next day that has the event. [`Solar::next_after`] does the same, looking at
//! most 400 days ahead, then answers `None`. Celery 5.7 instead gives up after 366 days and
//! runs the task at the instant its search stopped; Celery 5.3 to 5.6 raise `TypeError` on
//! such a day (`ephem.Date + timedelta`), so beat cannot schedule the task at all.
//!
//! Rounding: a fire is the event's instant truncated to the whole second, and the event
//! belongs to that second: `next_after(fire)` is the next day's.
//!
//! The port of PyEphem and libastro (the sun, search and table code below) is under their
//! license: Copyright (c) 2020 Elwood Downey (libastro, from XEphem); Copyright (c) 2013-2021
//! Brandon Rhodes (PyEphem).
//!
//! Permission is hereby granted, free of charge, to any person obtaining a copy of this
//! software and associated documentation files (the "Software"), to deal in the Software
//! without restriction, including without limitation the rights to use, copy, modify, merge,
//! publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
//! to whom the Software is furnished to do so, subject to the following conditions:
//!
//! The above copyright notice and this permission notice shall be included in all copies or
//! substantial portions of the Software.
//!
//! THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
//! INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
//! PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
//! FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
//! OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
//! DEALINGS IN THE SOFTWARE.
// The VSOP87 tables hold phases such as 3.14 and 3.1416 that are data, not an approximate π.
#![allow(clippy::approx_constant)]

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Timelike, Utc};
use thiserror::Error;

/// How many searches [`Solar::next_after`] makes. Each but one (an event refound in the
/// second of `after`) moves on by a circuit of the sky, a day, so this covers more than a
/// year, and an event that occurs at all recurs within a year.
const MAX_SEARCH_STEPS: usize = 400;

/// A solar event, named as in Celery.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SolarEvent {
    DawnAstronomical,
    DawnNautical,
    DawnCivil,
    Sunrise,
    SolarNoon,
    Sunset,
    DuskCivil,
    DuskNautical,
    DuskAstronomical,
}

/// Which PyEphem search Celery calls for an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Rising,
    Setting,
    Transit,
}

impl SolarEvent {
    /// Every event, in the order of a day.
    pub const ALL: [SolarEvent; 9] = [
        SolarEvent::DawnAstronomical,
        SolarEvent::DawnNautical,
        SolarEvent::DawnCivil,
        SolarEvent::Sunrise,
        SolarEvent::SolarNoon,
        SolarEvent::Sunset,
        SolarEvent::DuskCivil,
        SolarEvent::DuskNautical,
        SolarEvent::DuskAstronomical,
    ];

    /// Celery's name for the event.
    pub fn as_str(self) -> &'static str {
        match self {
            SolarEvent::DawnAstronomical => "dawn_astronomical",
            SolarEvent::DawnNautical => "dawn_nautical",
            SolarEvent::DawnCivil => "dawn_civil",
            SolarEvent::Sunrise => "sunrise",
            SolarEvent::SolarNoon => "solar_noon",
            SolarEvent::Sunset => "sunset",
            SolarEvent::DuskCivil => "dusk_civil",
            SolarEvent::DuskNautical => "dusk_nautical",
            SolarEvent::DuskAstronomical => "dusk_astronomical",
        }
    }

    /// Celery's name, exactly (case matters, as in Celery).
    pub fn parse(name: &str) -> Result<Self, SolarError> {
        SolarEvent::ALL
            .into_iter()
            .find(|event| event.as_str() == name)
            .ok_or_else(|| SolarError::Event(name.to_string()))
    }

    /// Celery's `_horizons`, in degrees as ephem reads `'-0:34'` (minus 34 arc minutes).
    fn horizon_degrees(self) -> f64 {
        match self {
            SolarEvent::DawnAstronomical | SolarEvent::DuskAstronomical => -18.0,
            SolarEvent::DawnNautical | SolarEvent::DuskNautical => -12.0,
            SolarEvent::DawnCivil | SolarEvent::DuskCivil => -6.0,
            SolarEvent::Sunrise | SolarEvent::Sunset => -(34.0 / 60.0),
            SolarEvent::SolarNoon => 0.0,
        }
    }

    /// Celery's `_use_center_l`: twilights use the Sun's centre, sunrise and sunset its upper
    /// limb (noon ignores it).
    fn use_center(self) -> bool {
        matches!(
            self,
            SolarEvent::DawnAstronomical
                | SolarEvent::DawnNautical
                | SolarEvent::DawnCivil
                | SolarEvent::DuskCivil
                | SolarEvent::DuskNautical
                | SolarEvent::DuskAstronomical
        )
    }

    /// Celery's `_methods`.
    fn method(self) -> Method {
        match self {
            SolarEvent::DawnAstronomical
            | SolarEvent::DawnNautical
            | SolarEvent::DawnCivil
            | SolarEvent::Sunrise => Method::Rising,
            SolarEvent::SolarNoon => Method::Transit,
            SolarEvent::Sunset
            | SolarEvent::DuskCivil
            | SolarEvent::DuskNautical
            | SolarEvent::DuskAstronomical => Method::Setting,
        }
    }
}

impl fmt::Display for SolarEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SolarEvent {
    type Err = SolarError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SolarEvent::parse(s)
    }
}

/// Why a solar schedule was refused. Display is one line; values are kept as text so the
/// error stays `Eq` (a refused coordinate may be NaN).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SolarError {
    #[error(
        "invalid solar event \"{0}\": must be one of dawn_astronomical, dawn_nautical, \
         dawn_civil, sunrise, solar_noon, sunset, dusk_civil, dusk_nautical, dusk_astronomical"
    )]
    Event(String),
    #[error("invalid solar latitude {0}: must be between -90 and 90")]
    Latitude(String),
    #[error("invalid solar longitude {0}: must be between -180 and 180")]
    Longitude(String),
}

/// `schedule.solar` as written, Celery's `solar(event, lat, lon)` arguments.
#[derive(
    Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct SolarSpec {
    /// The event, by Celery's name: `dawn_astronomical` (Sun's centre 18 degrees below the
    /// horizon), `dawn_nautical` (12), `dawn_civil` (6), `sunrise` (upper limb on the
    /// horizon), `solar_noon`, `sunset`, `dusk_civil`, `dusk_nautical`, `dusk_astronomical`.
    pub event: SolarEvent,
    /// Degrees north (negative south), -90 to 90.
    #[schemars(range(min = -90.0, max = 90.0))]
    pub latitude: f64,
    /// Degrees east (negative west), -180 to 180.
    #[schemars(range(min = -180.0, max = 180.0))]
    pub longitude: f64,
}

/// Celery's `solar(event, lat, lon)`: degrees north and east.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solar {
    event: SolarEvent,
    latitude: f64,
    longitude: f64,
}

// `new` refuses NaN, so `==` on the coordinates is an equivalence.
impl Eq for Solar {}

impl Solar {
    /// Celery's bounds, ends included: latitude -90..=90, longitude -180..=180. NaN is refused
    /// too (Celery accepts it and then fails at every check).
    pub fn new(event: SolarEvent, latitude: f64, longitude: f64) -> Result<Self, SolarError> {
        if !(-90.0..=90.0).contains(&latitude) {
            return Err(SolarError::Latitude(latitude.to_string()));
        }
        if !(-180.0..=180.0).contains(&longitude) {
            return Err(SolarError::Longitude(longitude.to_string()));
        }
        Ok(Solar {
            event,
            latitude,
            longitude,
        })
    }

    pub fn from_spec(spec: &SolarSpec) -> Result<Self, SolarError> {
        Solar::new(spec.event, spec.latitude, spec.longitude)
    }

    pub fn event(&self) -> SolarEvent {
        self.event
    }

    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// The first fire strictly after `after`: the next event as Celery computes it from
    /// `last_run_at = after`, truncated to the whole second. An event in `after`'s own second,
    /// or less than 10 ms into the next, is the one that fired at `after`, so passing the
    /// previous fire gives the next day's. Days without the event are skipped; `None` when it
    /// does not occur within 400 days (sunrise exactly at a pole) or past chrono's range.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_instant(after).and_then(utc_second)
    }

    /// The ephem date of the event [`Solar::next_after`] fires at.
    fn next_instant(&self, after: DateTime<Utc>) -> Option<f64> {
        let observer = Observer::new(self);
        let earliest = after.timestamp() as f64 + 1.0;
        let mut start = ephem_date(after);
        for _ in 0..MAX_SEARCH_STEPS {
            match observer.next_event(self.event, start) {
                Ok(found) => {
                    // A fire is its event's whole second, so an event in `after`'s second has
                    // fired already (the caller passes the previous fire). Found again from
                    // elsewhere it may have moved a little (microseconds when settled, as
                    // much as ephem's slack when not), so a little into the next second
                    // still counts as that one.
                    let guard = if found.settled {
                        SETTLED_GUARD
                    } else {
                        UNSETTLED_GUARD
                    };
                    if (found.at - UNIX_EPOCH) * 86_400.0 >= earliest + guard {
                        return Some(found.at);
                    }
                    // Search on from just past it, as beat does from its last run.
                    start = found.at + SECOND;
                }
                // Celery's `_next_event`: no such event in this circuit of the sky, so try
                // again from the next solar midnight.
                Err(Circumpolar) => start = observer.transit(start, PI, PRECISION),
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Time: ephem counts days (f64) from 1899-12-31 12:00 UT, its "Dublin Julian date".

/// ephem's date of the Unix epoch.
const UNIX_EPOCH: f64 = 25567.5;
/// J2000.0 in ephem's days.
const J2000: f64 = 2451545.0 - 2415020.0;
const HOUR: f64 = 1.0 / 24.0;
const MINUTE: f64 = HOUR / 60.0;
const SECOND: f64 = MINUTE / 60.0;
/// PyEphem's `default_newton_precision`: searches stop within a tenth of a second.
const PRECISION: f64 = SECOND / 10.0;
/// Where [`Observer::next_event`] stops instead: 10 microseconds, ten times the resolution
/// of an ephem date.
const POLISHED: f64 = SECOND / 1e5;
/// How far into the second after `after` an event is still taken for the one that fired at
/// `after`, in seconds: converged instants from different starts differ by microseconds,
/// ephem's unconverged ones by up to its slack.
const SETTLED_GUARD: f64 = 0.01;
const UNSETTLED_GUARD: f64 = 1.0;
const TAU: f64 = 2.0 * PI;
/// PyEphem's `tiny` (1/360 arc second): a transit this close counts as the current one.
const TINY: f64 = PI / 180.0 / 60.0 / 60.0 / 360.0;
/// PyEphem's markers for a target hour angle that does not exist.
const SLIGHTLY_LESS_THAN_ZERO: f64 = -1e-15;
const SLIGHTLY_MORE_THAN_PI: f64 = PI + 1e-15;

/// Whether a target hour angle is one of PyEphem's markers: the Sun never crosses.
fn is_marker(abs_target_ha: f64) -> bool {
    abs_target_ha == SLIGHTLY_MORE_THAN_PI || abs_target_ha == SLIGHTLY_LESS_THAN_ZERO
}

/// `ephem.Date(datetime)`: the calendar day, then hours, minutes, seconds and microseconds
/// added one by one as libastro does.
fn ephem_date(at: DateTime<Utc>) -> f64 {
    let day = at.timestamp().div_euclid(86_400);
    let mut date = day as f64 + UNIX_EPOCH;
    date += f64::from(at.hour()) / 24.0;
    date += f64::from(at.minute()) / (24.0 * 60.0);
    date += f64::from(at.second()) / (24.0 * 60.0 * 60.0);
    // A leap second (nanos >= 1e9) has no place in ephem's UT; count it as the second's end.
    let micros = (at.nanosecond() / 1000).min(999_999);
    date += f64::from(micros) / (24.0 * 60.0 * 60.0 * 1_000_000.0);
    date
}

/// An ephem date truncated to the whole second; `None` outside chrono's range.
fn utc_second(date: f64) -> Option<DateTime<Utc>> {
    let seconds = ((date - UNIX_EPOCH) * 86_400.0).floor();
    if !seconds.is_finite() || seconds.abs() > 1e15 {
        return None;
    }
    DateTime::from_timestamp(seconds as i64, 0)
}

/// Python's float `%` (the result takes the divisor's sign), which PyEphem relies on.
fn py_mod(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r == 0.0 {
        0.0f64.copysign(b)
    } else if (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

/// libastro's `range`: into 0..r.
fn range(v: f64, r: f64) -> f64 {
    v - r * (v / r).floor()
}

/// PyEphem's `_plusminus_pi`.
fn plusminus_pi(angle: f64) -> f64 {
    py_mod(angle - PI, TAU) - PI
}

/// PyEphem's `Angle.znorm`: into (-pi, pi].
fn znorm(radians: f64) -> f64 {
    if radians <= -PI {
        (radians + PI) % (2.0 * PI) + PI
    } else if radians > PI {
        (radians - PI) % (2.0 * PI) - PI
    } else {
        radians
    }
}

fn degrad(x: f64) -> f64 {
    x * PI / 180.0
}

fn raddeg(x: f64) -> f64 {
    x * 180.0 / PI
}

fn hrrad(x: f64) -> f64 {
    degrad(x * 15.0)
}

fn radhr(x: f64) -> f64 {
    raddeg(x) / 15.0
}

// ---------------------------------------------------------------------------------------------
// The searches (PyEphem's Observer methods, ephem/__init__.py).

/// An event's instant (ephem date) and whether it is the converged one.
#[derive(Clone, Copy, Debug)]
struct Found {
    at: f64,
    settled: bool,
}

/// PyEphem's `CircumpolarError`: the Sun does not cross the horizon in this circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Circumpolar;

/// What Celery's `ephem.Observer` holds, in radians: lat and lon are set from `str(value)`,
/// which ephem reads as degrees and divides by `raddeg(1)`.
struct Observer {
    lat: f64,
    lon: f64,
    horizon: f64,
    use_center: bool,
}

/// The Sun as PyEphem's `Sun().compute(observer)` leaves it, in radians.
struct SunPlace {
    /// Topocentric hour angle, 0..2pi (`ha`).
    ha: f64,
    /// Topocentric apparent declination (`dec`).
    dec: f64,
    /// Geocentric apparent right ascension (`g_ra`).
    g_ra: f64,
    /// Apparent semi-diameter (`radius`), from libastro's single-precision size.
    radius: f64,
    /// Local apparent sidereal time (`Observer.sidereal_time()`).
    lst: f64,
}

impl Observer {
    fn new(solar: &Solar) -> Self {
        let per_radian = raddeg(1.0);
        Observer {
            lat: solar.latitude / per_radian,
            lon: solar.longitude / per_radian,
            horizon: solar.event.horizon_degrees() / per_radian,
            use_center: solar.event.use_center(),
        }
    }

    /// Celery's `getattr(cal, method)(sun, start=start)`, then carried to convergence.
    ///
    /// PyEphem stops once a step is under 0.1 s, so its answer depends on where the search
    /// started by up to about that much (0.35 s seen where the steps shrink slowly); a fire
    /// found again from its own second could then land in the next second and fire twice.
    /// Finishing the same iteration gives the instant every start agrees on to microseconds.
    /// PyEphem still decides which event it is and whether the day has one.
    fn next_event(&self, event: SolarEvent, start: f64) -> Result<Found, Circumpolar> {
        let found = match event.method() {
            Method::Rising => self.rise_or_set(start, true),
            Method::Setting => self.rise_or_set(start, false),
            Method::Transit => {
                return Ok(Found {
                    at: self.transit(start, 0.0, POLISHED),
                    settled: true,
                });
            }
        }?;
        Ok(match self.polish(found, event.method() == Method::Rising) {
            Some(at) => Found { at, settled: true },
            None => Found {
                at: found,
                settled: false,
            },
        })
    }

    /// More of `_find_rise_or_set`'s steps from its answer, until one is under [`POLISHED`];
    /// `None` where they do not settle (the Sun grazing the horizon).
    fn polish(&self, found: f64, rising: bool) -> Option<f64> {
        let mut date = found;
        for _ in 0..20 {
            let (abs_target_ha, difference) = self.to_go(date, rising);
            if is_marker(abs_target_ha) {
                return None;
            }
            let bump = plusminus_pi(difference) / TAU;
            if bump.abs() > MINUTE {
                return None;
            }
            date += bump;
            if bump.abs() < POLISHED {
                return Some(date);
            }
        }
        None
    }

    /// `_find_rise_or_set` with direction +1: step the date by the hour angle still to go,
    /// recomputing the target hour angle (it moves with the declination) each time.
    fn rise_or_set(&self, start: f64, rising: bool) -> Result<f64, Circumpolar> {
        let mut date = start;
        let mut first = true;
        let mut abs_target_ha = 0.0;
        for _ in 0..7 {
            let difference;
            (abs_target_ha, difference) = self.to_go(date, rising);
            let bump = if first {
                let mut bump = py_mod(difference, TAU) / TAU;
                // Already at the event: the next one is wanted.
                if bump.abs() < PRECISION {
                    bump += 1.0;
                }
                bump
            } else {
                plusminus_pi(difference) / TAU
            };
            if bump.abs() < PRECISION {
                break;
            }
            date += bump;
            first = false;
        }
        // PyEphem judges by the last target only, so a day is skipped only if its final
        // step still finds no crossing.
        if is_marker(abs_target_ha) {
            return Err(Circumpolar);
        }
        Ok(date)
    }

    /// One step of `_find_rise_or_set` at `date`: the target hour angle's size (or a marker)
    /// and the target minus the Sun's hour angle. The target is the crossing of the horizon
    /// by the Sun's centre, or by its upper limb for sunrise and sunset.
    fn to_go(&self, date: f64, rising: bool) -> (f64, f64) {
        let sun = self.sun(date);
        let mut horizon = self.horizon;
        if !self.use_center {
            horizon -= sun.radius;
        }
        let abs_target_ha = self.target_hour_angle(sun.dec, horizon);
        // Risings are east of the meridian (negative hour angle), settings west.
        let target_ha = if rising {
            -abs_target_ha
        } else {
            abs_target_ha
        };
        (abs_target_ha, target_ha - sun.ha)
    }

    /// `_target_hour_angle`: where the Sun at `dec` is at altitude `alt`, or a marker when it
    /// is always above (pi+) or always below (0-).
    fn target_hour_angle(&self, dec: f64, alt: f64) -> f64 {
        let arg = (alt.sin() - self.lat.sin() * dec.sin()) / (self.lat.cos() * dec.cos());
        if arg < -1.0 {
            SLIGHTLY_MORE_THAN_PI
        } else if arg > 1.0 {
            SLIGHTLY_LESS_THAN_ZERO
        } else {
            arg.acos()
        }
    }

    /// `_compute_transit` with sign +1: the next time the Sun's geocentric hour angle is
    /// `offset` (0 = noon, pi = solar midnight), by the secant method, stopping at a step of
    /// `precision` (ephem's is [`PRECISION`]).
    fn transit(&self, start: f64, offset: f64, precision: f64) -> f64 {
        let sun = self.sun(start);
        let ha = sun.lst - sun.g_ra;
        let mut ha_to_move = py_mod(offset - ha, TAU);
        if ha_to_move.abs() < TINY {
            ha_to_move = TAU;
        }
        let d = start + ha_to_move / TAU;
        let f = |date: f64| {
            let sun = self.sun(date);
            znorm(offset - sun.lst + sun.g_ra)
        };
        let (mut x0, mut x1) = (d, d + MINUTE);
        let (mut f0, mut f1) = (f(x0), f(x1));
        // PyEphem's `newton` has no step limit; it converges in a handful, so a cap only
        // guards against a pathological input.
        for _ in 0..50 {
            if f1 == 0.0 || (x1 - x0).abs() <= precision || f1 == f0 {
                break;
            }
            let next = x1 + (x1 - x0) / (f0 / f1 - 1.0);
            x0 = x1;
            x1 = next;
            f0 = f1;
            f1 = f(x1);
        }
        x1
    }

    /// libastro's `sun_cir` + `cir_pos` for an observer at elevation 0 and pressure 0.
    fn sun(&self, mjd: f64) -> SunPlace {
        let mjed = mjd + delta_t(mjd) / 86400.0;
        let (lsn, bsn, rsn) = sunpos(mjed);
        let (ra, dec) = ecl_eq(mjed, bsn, lsn);
        let (ra, dec) = nut_eq(mjed, ra, dec);
        let (ra, dec) = ab_eq(mjed, ra, dec);
        let lst = hrrad(now_lst(mjd, self.lon));
        let ha_in = lst - ra;
        let rho_topo = rsn * MAU / ERAD;
        let (ha_out, dec_out) = ta_par(ha_in, dec, self.lat, rho_topo);
        let ddec = dec_out - dec;
        // libastro keeps the size in arc seconds as a float.
        let size = (raddeg(4.65242e-3 / rsn) * 3600.0 * 2.0) as f32;
        SunPlace {
            ha: ha_out,
            dec: dec + ddec,
            g_ra: ra,
            radius: f64::from(size) * 2.0 * PI / 360.0 / 60.0 / 60.0 / 2.0,
            lst,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Sun (libastro: sun.c, vsop87.c, eq_ecl.c, obliq.c, nutation.c, aberration.c, misc.c,
// utc_gst.c, parallax.c, sphcart.c, deltat.c, mjd.c).

/// Metres per astronomical unit and the Earth's equatorial radius, as libastro has them.
const MAU: f64 = 1.4959787e11;
const ERAD: f64 = 6.37816e6;
const SIDRATE: f64 = 0.9972695677;

/// `sunpos`: the Sun's geocentric ecliptic longitude, latitude (mean equinox of date) and
/// distance in AU, from the Earth's heliocentric VSOP87D place.
fn sunpos(mjed: f64) -> (f64, f64, f64) {
    let (l, b, r) = vsop87_earth(mjed);
    (range(l - PI, 2.0 * PI), -b, r)
}

/// `vsop87(mj, SUN, 0.0)`: every term of libastro's Earth table, then the FK5 correction.
fn vsop87_earth(mjed: f64) -> (f64, f64, f64) {
    let t1 = (mjed - J2000) / 365250.0;
    let mut t = [1.0; 6];
    for i in 1..6 {
        t[i] = t[i - 1] * t1;
    }
    let series = |terms: &[&[[f64; 3]]]| {
        let mut sum = 0.0;
        for (alpha, block) in terms.iter().enumerate() {
            let mut term = 0.0;
            for [a, b, c] in block.iter() {
                term += a * (b + c * t1).cos();
            }
            sum += t[alpha] * term;
        }
        sum / 1e8
    };
    let mut l = series(&[EARTH_L0, EARTH_L1, EARTH_L2, EARTH_L3, EARTH_L4, EARTH_L5]);
    let mut b = series(&[EARTH_B0, EARTH_B1, EARTH_B2]);
    let r = series(&[EARTH_R0, EARTH_R1, EARTH_R2, EARTH_R3, EARTH_R4, EARTH_R5]);
    l -= (l / (2.0 * PI)).floor() * (2.0 * PI);
    // From VSOP87's dynamical equinox to FK5.
    let l1 = l - degrad(13.97 * t[1] - 0.031 * t[2]);
    let (s1, c1) = l1.sin_cos();
    l += degrad(-0.09033 + 0.03916 * (c1 + s1) * b.tan()) / 3600.0;
    b += degrad(0.03916 * (c1 - s1)) / 3600.0;
    (l, b, r)
}

/// `obliquity`: the mean obliquity of the ecliptic (IAU).
fn obliquity(mj: f64) -> f64 {
    let t = (mj - J2000) / 36525.0;
    degrad(23.4392911 + t * (-46.8150 + t * (-0.00059 + t * 0.001813)) / 3600.0)
}

/// `ecl_eq`: ecliptic latitude and longitude to right ascension and declination, with the
/// mean obliquity (nutation comes after).
fn ecl_eq(mj: f64, lat: f64, lng: f64) -> (f64, f64) {
    let eps = obliquity(mj);
    let (seps, ceps) = (eps.sin(), eps.cos());
    // libastro's direction flag: -1 is ecliptic to equatorial.
    let sw = -1.0;
    let sy = lat.sin();
    let mut cy = lat.cos();
    if cy.abs() < 1e-20 {
        cy = 1e-20;
    }
    let ty = sy / cy;
    let cx = lng.cos();
    let sx = lng.sin();
    let sq = (sy * ceps - cy * seps * sx * sw).clamp(-1.0, 1.0);
    let dec = sq.asin();
    let mut ra = ((sx * ceps + ty * seps * sw) / cx).atan();
    if cx < 0.0 {
        ra += PI;
    }
    (range(ra, 2.0 * PI), dec)
}

/// `nutation`: IAU 1980 nutation in obliquity and in longitude, radians.
fn nutation(mj: f64) -> (f64, f64) {
    let t = (mj - J2000) / 36525.0;
    let t2 = t * t;
    let t3 = t2 * t;
    let t10 = t / 10.0;
    let mut args = [0.0; 5];
    for (arg, [c0, c1, c2, c3]) in args.iter_mut().zip(DELAUNAY) {
        let mut x = c0 + c1 * t + c2 * t2 + c3 * t3;
        x /= 3600.0 * 360.0;
        x -= x.floor();
        *arg = x * (2.0 * PI);
    }
    let (mut dpsi, mut deps) = (0.0, 0.0);
    for (multipliers, [psi, psi_t, eps, eps_t]) in NUTATION.iter() {
        let mut arg = 0.0;
        for (m, x) in multipliers.iter().zip(args) {
            arg += f64::from(*m) * x;
        }
        dpsi += (psi + psi_t * t10) * arg.sin();
        deps += (eps + eps_t * t10) * arg.cos();
    }
    (degrad(deps / 3600.0 / 1e4), degrad(dpsi / 3600.0 / 1e4))
}

/// `nut_eq`: mean to true equator and equinox of date.
fn nut_eq(mj: f64, ra: f64, dec: f64) -> (f64, f64) {
    let epsilon = obliquity(mj);
    let (deps, dpsi) = nutation(mj);
    let (se, ce) = (epsilon.sin(), epsilon.cos());
    let (sp, cp) = (dpsi.sin(), dpsi.cos());
    let (sede, cede) = ((epsilon + deps).sin(), (epsilon + deps).cos());
    let a = [
        [cp, -sp * ce, -sp * se],
        [
            cede * sp,
            cede * cp * ce + sede * se,
            cede * cp * se - sede * ce,
        ],
        [
            sede * sp,
            sede * cp * ce - cede * se,
            sede * cp * se + cede * ce,
        ],
    ];
    let (xo, yo, zo) = sphcart(ra, dec, 1.0);
    let x = a[0][0] * xo + a[0][1] * yo + a[0][2] * zo;
    let y = a[1][0] * xo + a[1][1] * yo + a[1][2] * zo;
    let z = a[2][0] * xo + a[2][1] * yo + a[2][2] * zo;
    let (mut ra, dec, _) = cartsph(x, y, z);
    if ra < 0.0 {
        ra += 2.0 * PI;
    }
    (ra, dec)
}

/// `ab_eq`: annual aberration, Montenbruck's form (libastro's default).
fn ab_eq(mj: f64, ra: f64, dec: f64) -> (f64, f64) {
    let (x, y, z) = sphcart(ra, dec, 1.0);
    let l = 2.0 * PI * (0.27908 + 100.00214 * (mj - J2000) / 36525.0);
    let cl = l.cos();
    let vx = -0.994e-4 * l.sin();
    let vy = 0.912e-4 * cl;
    let vz = 0.395e-4 * cl;
    let (ra, dec, _) = cartsph(x + vx, y + vy, z + vz);
    (ra, dec)
}

/// `now_lst`: local apparent sidereal time in hours (nutation taken at UT, as libastro does).
fn now_lst(mjd: f64, lng: f64) -> f64 {
    let day = (mjd - 0.5).floor() + 0.5;
    let hours = (mjd - day) * 24.0;
    let mut lst = range((1.0 / SIDRATE) * hours + gmst0(day), 24.0);
    lst += radhr(lng);
    let eps = obliquity(mjd);
    let (deps, dpsi) = nutation(mjd);
    lst += radhr(dpsi * (eps + deps).cos());
    range(lst, 24.0)
}

/// `gmst0`: Greenwich mean sidereal time at 0h UT of the day `mj` starts, hours.
fn gmst0(mj: f64) -> f64 {
    // libastro truncates with an int cast; days before 1900 are out of the operator's reach.
    let t = ((mj - 0.5).trunc() + 0.5 - J2000) / 36525.0;
    let x = 24110.54841 + (8640184.812866 + (0.093104 - 6.2e-6 * t) * t) * t;
    range(x / 3600.0, 24.0)
}

/// `ta_par` at elevation 0: geocentric to topocentric hour angle and declination.
fn ta_par(tha: f64, tdec: f64, phi: f64, rho: f64) -> (f64, f64) {
    let e2 = (2.0 - 1.0 / 298.257) / 298.257;
    let (sphi, cphi) = (phi.sin(), phi.cos());
    let robs = 1.0 / (1.0 - e2 * sphi * sphi).sqrt();
    let xobs = robs * cphi;
    let zobs = robs * (1.0 - e2) * sphi;
    let (x, y, z) = sphcart(-tha, tdec, rho);
    let (aha, adec, _) = cartsph(x - xobs, y, z - zobs);
    (range(-aha, 2.0 * PI), adec)
}

fn sphcart(l: f64, b: f64, r: f64) -> (f64, f64, f64) {
    let rcb = r * b.cos();
    (rcb * l.cos(), rcb * l.sin(), r * b.sin())
}

fn cartsph(x: f64, y: f64, z: f64) -> (f64, f64, f64) {
    let rho = x * x + y * y;
    if rho > 0.0 {
        (
            range(y.atan2(x), 2.0 * PI),
            z.atan2(rho.sqrt()),
            (rho + z * z).sqrt(),
        )
    } else {
        let b = if z == 0.0 {
            0.0
        } else if z > 0.0 {
            PI / 2.0
        } else {
            -PI / 2.0
        };
        (0.0, b, z.abs())
    }
}

/// `deltat`: TT - UT in seconds. Tabulated 1620-2018 with Besselian interpolation, then a
/// cubic towards Morrison and Stephenson's long-term parabola, which applies from 2118 (and,
/// a simplification of libastro's coarse table, before 1700).
fn delta_t(mj: f64) -> f64 {
    const TABSTART: f64 = 1620.0;
    const TABEND: f64 = 2018.0;
    let y = decimal_year(mj);
    if y.is_nan() {
        return 0.0;
    }
    let parabola = |y: f64| {
        let b = 0.01 * (y - 1820.0);
        32.0 * b * b - 20.0
    };
    let n = DELTA_T.len();
    let dt = |i: usize| f64::from(DELTA_T[i]);
    if y > TABEND {
        if y > TABEND + 100.0 {
            return parabola(y);
        }
        let a = 0.01 * dt(n - 1);
        let b = 0.001 * f64::from(DELTA_T[n - 1] - DELTA_T[n - 11]);
        let big_b = 0.01 * (TABEND + 100.0 - 1820.0);
        let m0 = 32.0 * big_b * big_b - 20.0;
        let m1 = 0.64 * big_b;
        let d = 2.0e-6 * (50.0 * (m1 + b) - m0 + a);
        let c = 1.0e-4 * (m0 - a - 100.0 * b - 1.0e6 * d);
        let p = y - TABEND;
        return a + p * (b + p * (c + p * d));
    }
    if y < 1700.0 {
        return parabola(y);
    }
    let floor = y.floor();
    // 1700 <= y <= 2018, so the index is inside the table.
    let iy = (floor - TABSTART) as usize;
    let mut ans = dt(iy);
    if iy + 1 < n {
        let p = y - floor;
        ans += p * (dt(iy + 1) - dt(iy));
        if iy + 2 < n {
            // Differences of the table around iy; iy >= 80 here, so k - 1 never underflows.
            let mut d = [0i32; 5];
            for (i, slot) in d.iter_mut().enumerate() {
                let k = iy + i - 2;
                if k + 1 < n {
                    *slot = i32::from(DELTA_T[k + 1]) - i32::from(DELTA_T[k]);
                }
            }
            for i in 0..4 {
                d[i] = d[i + 1] - d[i];
            }
            let mut b = 0.25 * p * (p - 1.0);
            ans += b * f64::from(d[1] + d[2]);
            for i in 0..3 {
                d[i] = d[i + 1] - d[i];
            }
            b = 2.0 * b / 3.0;
            ans += (p - 0.5) * b * f64::from(d[1]);
            if iy + 3 <= n {
                for i in 0..2 {
                    d[i] = d[i + 1] - d[i];
                }
                b = 0.125 * b * (p + 1.0) * (p - 2.0);
                ans += b * f64::from(d[0] + d[1]);
            }
        }
    }
    ans * 0.01
}

/// `mjd_year`: the year with its elapsed fraction (proleptic Gregorian).
fn decimal_year(mj: f64) -> f64 {
    let days = (mj - UNIX_EPOCH).floor();
    if !days.is_finite() || days.abs() > 1e12 {
        return f64::NAN;
    }
    let year = civil_year(days as i64);
    let e0 = days_from_civil(year, 1, 1) as f64 + UNIX_EPOCH;
    let e1 = days_from_civil(year + 1, 1, 1) as f64 + UNIX_EPOCH;
    year as f64 + (mj - e0) / (e1 - e0)
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The year of a day counted from 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_year(days: i64) -> i64 {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

// ---------------------------------------------------------------------------------------------
// Tables (libastro: nutation.c, deltat.c, vsop87_data.c).

/// Delaunay arguments (M', M, F, D, Omega) in arc seconds: constant, T, T^2, T^3.
const DELAUNAY: [[f64; 4]; 5] = [
    [485866.733, 1717915922.633, 31.310, 0.064],
    [1287099.804, 129596581.224, -0.577, -0.012],
    [335778.877, 1739527263.137, -13.257, 0.011],
    [1072261.307, 1602961601.328, -6.891, 0.019],
    [450160.280, -6962890.539, 7.455, 0.008],
];

/// IAU 1980 nutation: multipliers of the Delaunay arguments, then in 1e-4 arc seconds the
/// longitude amplitude and its change per T/10, the obliquity amplitude and its change.
const NUTATION: [([i8; 5], [f64; 4]); 106] = [
    ([0, 0, 0, 0, 1], [-171996.0, -1742.0, 92025.0, 89.0]),
    ([0, 0, 0, 0, 2], [2062.0, 2.0, -895.0, 5.0]),
    ([-2, 0, 2, 0, 1], [46.0, 0.0, -24.0, 0.0]),
    ([2, 0, -2, 0, 0], [11.0, 0.0, 0.0, 0.0]),
    ([-2, 0, 2, 0, 2], [-3.0, 0.0, 1.0, 0.0]),
    ([1, -1, 0, -1, 0], [-3.0, 0.0, 0.0, 0.0]),
    ([0, -2, 2, -2, 1], [-2.0, 0.0, 1.0, 0.0]),
    ([2, 0, -2, 0, 1], [1.0, 0.0, 0.0, 0.0]),
    ([0, 0, 2, -2, 2], [-13187.0, -16.0, 5736.0, -31.0]),
    ([0, 1, 0, 0, 0], [1426.0, -34.0, 54.0, -1.0]),
    ([0, 1, 2, -2, 2], [-517.0, 12.0, 224.0, -6.0]),
    ([0, -1, 2, -2, 2], [217.0, -5.0, -95.0, 3.0]),
    ([0, 0, 2, -2, 1], [129.0, 1.0, -70.0, 0.0]),
    ([2, 0, 0, -2, 0], [48.0, 0.0, 1.0, 0.0]),
    ([0, 0, 2, -2, 0], [-22.0, 0.0, 0.0, 0.0]),
    ([0, 2, 0, 0, 0], [17.0, -1.0, 0.0, 0.0]),
    ([0, 1, 0, 0, 1], [-15.0, 0.0, 9.0, 0.0]),
    ([0, 2, 2, -2, 2], [-16.0, 1.0, 7.0, 0.0]),
    ([0, -1, 0, 0, 1], [-12.0, 0.0, 6.0, 0.0]),
    ([-2, 0, 0, 2, 1], [-6.0, 0.0, 3.0, 0.0]),
    ([0, -1, 2, -2, 1], [-5.0, 0.0, 3.0, 0.0]),
    ([2, 0, 0, -2, 1], [4.0, 0.0, -2.0, 0.0]),
    ([0, 1, 2, -2, 1], [4.0, 0.0, -2.0, 0.0]),
    ([1, 0, 0, -1, 0], [-4.0, 0.0, 0.0, 0.0]),
    ([2, 1, 0, -2, 0], [1.0, 0.0, 0.0, 0.0]),
    ([0, 0, -2, 2, 1], [1.0, 0.0, 0.0, 0.0]),
    ([0, 1, -2, 2, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 1, 0, 0, 2], [1.0, 0.0, 0.0, 0.0]),
    ([-1, 0, 0, 1, 1], [1.0, 0.0, 0.0, 0.0]),
    ([0, 1, 2, -2, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 0, 2, 0, 2], [-2274.0, -2.0, 977.0, -5.0]),
    ([1, 0, 0, 0, 0], [712.0, 1.0, -7.0, 0.0]),
    ([0, 0, 2, 0, 1], [-386.0, -4.0, 200.0, 0.0]),
    ([1, 0, 2, 0, 2], [-301.0, 0.0, 129.0, -1.0]),
    ([1, 0, 0, -2, 0], [-158.0, 0.0, -1.0, 0.0]),
    ([-1, 0, 2, 0, 2], [123.0, 0.0, -53.0, 0.0]),
    ([0, 0, 0, 2, 0], [63.0, 0.0, -2.0, 0.0]),
    ([1, 0, 0, 0, 1], [63.0, 1.0, -33.0, 0.0]),
    ([-1, 0, 0, 0, 1], [-58.0, -1.0, 32.0, 0.0]),
    ([-1, 0, 2, 2, 2], [-59.0, 0.0, 26.0, 0.0]),
    ([1, 0, 2, 0, 1], [-51.0, 0.0, 27.0, 0.0]),
    ([0, 0, 2, 2, 2], [-38.0, 0.0, 16.0, 0.0]),
    ([2, 0, 0, 0, 0], [29.0, 0.0, -1.0, 0.0]),
    ([1, 0, 2, -2, 2], [29.0, 0.0, -12.0, 0.0]),
    ([2, 0, 2, 0, 2], [-31.0, 0.0, 13.0, 0.0]),
    ([0, 0, 2, 0, 0], [26.0, 0.0, -1.0, 0.0]),
    ([-1, 0, 2, 0, 1], [21.0, 0.0, -10.0, 0.0]),
    ([-1, 0, 0, 2, 1], [16.0, 0.0, -8.0, 0.0]),
    ([1, 0, 0, -2, 1], [-13.0, 0.0, 7.0, 0.0]),
    ([-1, 0, 2, 2, 1], [-10.0, 0.0, 5.0, 0.0]),
    ([1, 1, 0, -2, 0], [-7.0, 0.0, 0.0, 0.0]),
    ([0, 1, 2, 0, 2], [7.0, 0.0, -3.0, 0.0]),
    ([0, -1, 2, 0, 2], [-7.0, 0.0, 3.0, 0.0]),
    ([1, 0, 2, 2, 2], [-8.0, 0.0, 3.0, 0.0]),
    ([1, 0, 0, 2, 0], [6.0, 0.0, 0.0, 0.0]),
    ([2, 0, 2, -2, 2], [6.0, 0.0, -3.0, 0.0]),
    ([0, 0, 0, 2, 1], [-6.0, 0.0, 3.0, 0.0]),
    ([0, 0, 2, 2, 1], [-7.0, 0.0, 3.0, 0.0]),
    ([1, 0, 2, -2, 1], [6.0, 0.0, -3.0, 0.0]),
    ([0, 0, 0, -2, 1], [-5.0, 0.0, 3.0, 0.0]),
    ([1, -1, 0, 0, 0], [5.0, 0.0, 0.0, 0.0]),
    ([2, 0, 2, 0, 1], [-5.0, 0.0, 3.0, 0.0]),
    ([0, 1, 0, -2, 0], [-4.0, 0.0, 0.0, 0.0]),
    ([1, 0, -2, 0, 0], [4.0, 0.0, 0.0, 0.0]),
    ([0, 0, 0, 1, 0], [-4.0, 0.0, 0.0, 0.0]),
    ([1, 1, 0, 0, 0], [-3.0, 0.0, 0.0, 0.0]),
    ([1, 0, 2, 0, 0], [3.0, 0.0, 0.0, 0.0]),
    ([1, -1, 2, 0, 2], [-3.0, 0.0, 1.0, 0.0]),
    ([-1, -1, 2, 2, 2], [-3.0, 0.0, 1.0, 0.0]),
    ([-2, 0, 0, 0, 1], [-2.0, 0.0, 1.0, 0.0]),
    ([3, 0, 2, 0, 2], [-3.0, 0.0, 1.0, 0.0]),
    ([0, -1, 2, 2, 2], [-3.0, 0.0, 1.0, 0.0]),
    ([1, 1, 2, 0, 2], [2.0, 0.0, -1.0, 0.0]),
    ([-1, 0, 2, -2, 1], [-2.0, 0.0, 1.0, 0.0]),
    ([2, 0, 0, 0, 1], [2.0, 0.0, -1.0, 0.0]),
    ([1, 0, 0, 0, 2], [-2.0, 0.0, 1.0, 0.0]),
    ([3, 0, 0, 0, 0], [2.0, 0.0, 0.0, 0.0]),
    ([0, 0, 2, 1, 2], [2.0, 0.0, -1.0, 0.0]),
    ([-1, 0, 0, 0, 2], [1.0, 0.0, -1.0, 0.0]),
    ([1, 0, 0, -4, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([-2, 0, 2, 2, 2], [1.0, 0.0, -1.0, 0.0]),
    ([-1, 0, 2, 4, 2], [-2.0, 0.0, 1.0, 0.0]),
    ([2, 0, 0, -4, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([1, 1, 2, -2, 2], [1.0, 0.0, -1.0, 0.0]),
    ([1, 0, 2, 2, 1], [-1.0, 0.0, 1.0, 0.0]),
    ([-2, 0, 2, 4, 2], [-1.0, 0.0, 1.0, 0.0]),
    ([-1, 0, 4, 0, 2], [1.0, 0.0, 0.0, 0.0]),
    ([1, -1, 0, -2, 0], [1.0, 0.0, 0.0, 0.0]),
    ([2, 0, 2, -2, 1], [1.0, 0.0, -1.0, 0.0]),
    ([2, 0, 2, 2, 2], [-1.0, 0.0, 0.0, 0.0]),
    ([1, 0, 0, 2, 1], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 0, 4, -2, 2], [1.0, 0.0, 0.0, 0.0]),
    ([3, 0, 2, -2, 2], [1.0, 0.0, 0.0, 0.0]),
    ([1, 0, 2, -2, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 1, 2, 0, 1], [1.0, 0.0, 0.0, 0.0]),
    ([-1, -1, 0, 2, 1], [1.0, 0.0, 0.0, 0.0]),
    ([0, 0, -2, 0, 1], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 0, 2, -1, 2], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 1, 0, 2, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([1, 0, -2, -2, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([0, -1, 2, 0, 1], [-1.0, 0.0, 0.0, 0.0]),
    ([1, 1, 0, -2, 1], [-1.0, 0.0, 0.0, 0.0]),
    ([1, 0, -2, 2, 0], [-1.0, 0.0, 0.0, 0.0]),
    ([2, 0, 0, 2, 0], [1.0, 0.0, 0.0, 0.0]),
    ([0, 0, 2, 4, 2], [-1.0, 0.0, 0.0, 0.0]),
    ([0, 1, 0, 1, 0], [1.0, 0.0, 0.0, 0.0]),
];

/// TT - UT in hundredths of a second at the start of each year 1620..=2018 (Astronomical
/// Almanac 2020 and IERS, via libastro).
const DELTA_T: [i16; 399] = [
    12400, 11900, 11500, 11000, 10600, 10200, 9800, 9500, 9100, 8800, 8500, 8200, 7900, 7700, 7400,
    7200, 7000, 6700, 6500, 6300, 6200, 6000, 5800, 5700, 5500, 5400, 5300, 5100, 5000, 4900, 4800,
    4700, 4600, 4500, 4400, 4300, 4200, 4100, 4000, 3800, 3700, 3600, 3500, 3400, 3300, 3200, 3100,
    3000, 2800, 2700, 2600, 2500, 2400, 2300, 2200, 2100, 2000, 1900, 1800, 1700, 1600, 1500, 1400,
    1400, 1300, 1200, 1200, 1100, 1100, 1000, 1000, 1000, 900, 900, 900, 900, 900, 900, 900, 900,
    900, 900, 900, 900, 900, 900, 900, 900, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
    1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100,
    1100, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 1300, 1300, 1300, 1300, 1300,
    1300, 1300, 1400, 1400, 1400, 1400, 1400, 1400, 1400, 1500, 1500, 1500, 1500, 1500, 1500, 1500,
    1600, 1600, 1600, 1600, 1600, 1600, 1600, 1600, 1600, 1600, 1700, 1700, 1700, 1700, 1700, 1700,
    1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1700, 1600, 1600, 1600, 1600, 1500,
    1500, 1400, 1400, 1370, 1340, 1310, 1290, 1270, 1260, 1250, 1250, 1250, 1250, 1250, 1250, 1250,
    1250, 1250, 1250, 1250, 1240, 1230, 1220, 1200, 1170, 1140, 1110, 1060, 1020, 960, 910, 860,
    800, 750, 700, 660, 630, 600, 580, 570, 560, 560, 560, 570, 580, 590, 610, 620, 630, 650, 660,
    680, 690, 710, 720, 730, 740, 750, 760, 770, 770, 780, 780, 788, 782, 754, 697, 640, 602, 541,
    410, 292, 182, 161, 10, -102, -128, -269, -324, -364, -454, -471, -511, -540, -542, -520, -546,
    -546, -579, -563, -564, -580, -566, -587, -601, -619, -664, -644, -647, -609, -576, -466, -374,
    -272, -154, -2, 124, 264, 386, 537, 614, 775, 913, 1046, 1153, 1336, 1465, 1601, 1720, 1824,
    1906, 2025, 2095, 2116, 2225, 2241, 2303, 2349, 2362, 2386, 2449, 2434, 2408, 2402, 2400, 2387,
    2395, 2386, 2393, 2373, 2392, 2396, 2402, 2433, 2483, 2530, 2570, 2624, 2677, 2728, 2778, 2825,
    2871, 2915, 2957, 2997, 3036, 3072, 3107, 3135, 3168, 3218, 3268, 3315, 3359, 3400, 3447, 3503,
    3573, 3654, 3743, 3829, 3920, 4018, 4117, 4223, 4337, 4449, 4548, 4646, 4752, 4853, 4959, 5054,
    5138, 5217, 5296, 5379, 5434, 5487, 5532, 5582, 5630, 5686, 5757, 5831, 5912, 5998, 6078, 6163,
    6230, 6297, 6347, 6383, 6409, 6430, 6447, 6457, 6469, 6485, 6515, 6546, 6578, 6607, 6632, 6660,
    6691, 6728, 6764, 6810, 6859, 6897,
];

// VSOP87D (Bretagnon and Francou, Bureau des Longitudes), the Earth's heliocentric longitude
// L, latitude B (radians) and distance R (AU) for the ecliptic and equinox of date, as
// truncated in libastro: rows [A * 1e8, B, C] of A cos(B + C t), t in Julian millennia
// from J2000 (TDB), one table per power of t.
const EARTH_L0: &[[f64; 3]] = &[
    [175347045.7, 0.0, 0.0],
    [3341656.5, 4.66925680, 6283.07584999],
    [34894.3, 4.626102, 12566.151700],
    [3417.6, 2.82887, 3.52312],
    [3497.1, 2.74412, 5753.38488],
    [3135.9, 3.62767, 77713.77147],
    [2676.2, 4.41808, 7860.41939],
    [2342.7, 6.13516, 3930.20970],
    [1273.2, 2.03710, 529.69097],
    [1324.3, 0.74246, 11506.76977],
    [901.9, 2.0451, 26.2983],
    [1199.2, 1.10963, 1577.34354],
    [857.2, 3.5085, 398.1490],
    [779.8, 1.1788, 5223.6939],
    [990.2, 5.2327, 5884.9268],
    [753.1, 2.5334, 5507.5532],
    [505.3, 4.5829, 18849.2275],
    [492.4, 4.2051, 775.5226],
    [356.7, 2.9195, 0.0673],
    [284.1, 1.8987, 796.2980],
    [242.8, 0.3448, 5486.7778],
    [317.1, 5.8490, 11790.6291],
    [271.0, 0.3149, 10977.0788],
    [206.2, 4.8065, 2544.3144],
    [205.4, 1.8695, 5573.1428],
    [202.3, 2.4577, 6069.7768],
    [126.2, 1.0830, 20.7754],
    [155.5, 0.8331, 213.2991],
    [115.1, 0.6454, 0.9803],
    [102.9, 0.6360, 4694.0030],
    [101.7, 4.2668, 7.1135],
    [99.2, 6.210, 2146.165],
    [132.2, 3.4112, 2942.4634],
    [97.6, 0.681, 155.420],
    [85.1, 1.299, 6275.962],
    [74.7, 1.755, 5088.629],
    [101.9, 0.9757, 15720.8388],
    [84.7, 3.671, 71430.696],
    [73.5, 4.679, 801.821],
    [73.9, 3.503, 3154.687],
    [78.8, 3.037, 12036.461],
    [79.6, 1.808, 17260.155],
    [85.8, 5.983, 161000.686],
    [57.0, 2.784, 6286.599],
    [61.1, 1.818, 7084.897],
    [69.6, 0.833, 9437.763],
    [56.1, 4.387, 14143.495],
    [62.4, 3.978, 8827.390],
    [51.1, 0.283, 5856.478],
    [55.6, 3.470, 6279.553],
    [41.0, 5.368, 8429.241],
    [51.6, 1.333, 1748.016],
    [52.0, 0.189, 12139.554],
    [49.0, 0.487, 1194.447],
    [39.2, 6.168, 10447.388],
    [35.6, 1.776, 6812.767],
    [36.8, 6.041, 10213.286],
    [36.6, 2.570, 1059.382],
    [33.3, 0.593, 17789.846],
    [36.0, 1.709, 2352.866],
    [40.9, 2.399, 19651.048],
    [30.0, 2.740, 1349.867],
    [30.4, 0.443, 83996.847],
    [23.7, 0.485, 8031.092],
    [23.6, 2.065, 3340.612],
    [21.1, 4.148, 951.718],
    [24.7, 0.215, 3.590],
    [25.4, 3.165, 4690.480],
    [22.8, 5.222, 4705.732],
    [21.4, 1.426, 16730.464],
    [21.9, 5.556, 553.569],
    [17.5, 4.561, 135.065],
    [19.9, 5.222, 12168.003],
    [19.9, 5.775, 6309.374],
    [20.3, 0.371, 283.859],
    [14.4, 4.193, 242.729],
    [16.2, 5.988, 11769.854],
    [15.1, 4.196, 6256.778],
    [19.1, 3.822, 23581.258],
    [18.9, 5.386, 149854.400],
    [14.3, 3.724, 38.028],
    [17.9, 2.215, 13367.973],
    [12.1, 2.622, 955.600],
    [11.3, 0.177, 4164.312],
    [14.0, 4.401, 6681.225],
    [13.6, 1.889, 7632.943],
    [12.5, 1.131, 5.523],
    [10.5, 5.359, 1592.596],
    [9.8, 1.00, 11371.70],
    [9.2, 4.57, 4292.33],
    [10.3, 6.200, 6438.496],
    [12.0, 1.004, 632.784],
    [10.8, 0.327, 103.093],
    [8.4, 4.54, 25132.30],
    [10.0, 6.029, 5746.271],
    [8.4, 3.30, 7234.79],
    [8.0, 5.82, 28.45],
    [10.5, 0.939, 11926.254],
    [7.7, 3.12, 7238.68],
    [9.4, 2.62, 5760.50],
    [8.1, 6.11, 4732.03],
    [9.2, 0.48, 522.58],
    [9.8, 5.24, 27511.47],
    [7.9, 1.00, 5643.18],
    [8.1, 6.27, 426.60],
    [9.0, 5.34, 6386.17],
    [8.6, 4.17, 7058.60],
    [6.3, 4.72, 6836.65],
    [7.6, 3.97, 11499.66],
    [7.8, 2.96, 23013.54],
    [7.3, 0.61, 11513.88],
    [6.5, 5.79, 18073.70],
    [7.2, 4.00, 74.78],
    [7.3, 4.39, 316.39],
    [7.1, 0.32, 263.08],
    [6.6, 3.66, 17298.18],
    [6.8, 5.91, 90955.55],
];
const EARTH_L1: &[[f64; 3]] = &[
    [628331966747.5, 0.0, 0.0],
    [206058.9, 2.6782346, 6283.0758500],
    [4303.4, 2.63513, 12566.15170],
    [425.3, 1.5905, 3.5231],
    [109.0, 2.9662, 1577.3435],
    [93.5, 2.592, 18849.228],
    [119.3, 5.7956, 26.2983],
    [72.1, 1.138, 529.691],
    [67.8, 1.875, 398.149],
    [67.3, 4.409, 5507.553],
    [59.0, 2.888, 5223.694],
    [56.0, 2.175, 155.420],
    [45.4, 0.398, 796.298],
    [36.4, 0.466, 775.523],
    [29.0, 2.647, 7.114],
    [19.1, 1.846, 5486.778],
    [20.8, 5.341, 0.980],
    [18.5, 4.969, 213.299],
    [16.2, 0.032, 2544.314],
    [17.3, 2.991, 6275.962],
    [15.8, 1.430, 2146.165],
    [14.6, 1.205, 10977.079],
    [11.9, 3.258, 5088.629],
    [11.5, 2.075, 4694.003],
    [9.7, 4.24, 1349.87],
    [10.0, 1.303, 6286.599],
    [9.5, 2.70, 242.73],
    [12.5, 2.834, 1748.016],
    [11.8, 5.274, 1194.447],
    [8.6, 5.64, 951.72],
    [10.6, 0.766, 553.569],
    [7.6, 5.30, 2352.87],
    [5.8, 1.77, 1059.38],
    [6.4, 2.65, 9437.76],
    [5.2, 5.66, 71430.70],
    [5.3, 0.91, 3154.69],
    [6.1, 4.67, 4690.48],
    [4.3, 0.24, 6812.77],
    [5.0, 1.42, 6438.50],
    [4.3, 0.77, 10447.39],
    [5.2, 1.85, 801.82],
    [3.7, 2.00, 8031.09],
    [3.6, 2.43, 14143.50],
    [3.4, 3.86, 1592.60],
    [3.4, 0.89, 12036.46],
    [3.2, 3.19, 4705.73],
    [3.2, 0.62, 8429.24],
    [4.1, 5.24, 7084.90],
    [3.0, 6.07, 4292.33],
    [2.9, 2.32, 20.36],
    [3.5, 4.80, 6279.55],
    [2.9, 1.43, 5746.27],
    [2.7, 4.80, 7234.79],
    [2.5, 6.22, 6836.65],
    [2.7, 0.93, 5760.50],
    [3.2, 3.40, 7632.94],
    [2.3, 5.00, 17789.85],
    [2.1, 3.96, 10213.29],
    [2.1, 2.22, 5856.48],
    [2.3, 5.67, 11499.66],
    [2.1, 5.20, 11513.88],
    [1.9, 0.53, 3340.61],
    [1.9, 4.74, 83996.85],
    [2.1, 2.55, 25132.30],
    [1.8, 1.47, 4164.31],
    [1.8, 3.02, 5.52],
    [2.0, 0.91, 6256.78],
    [2.1, 2.27, 522.58],
    [1.8, 3.03, 5753.38],
    [1.6, 6.12, 5216.58],
    [1.6, 4.64, 3.29],
];
const EARTH_L2: &[[f64; 3]] = &[
    [52918.9, 0.0, 0.0],
    [8719.8, 1.07210, 6283.07585],
    [309.1, 0.8673, 12566.1517],
    [27.3, 0.053, 3.523],
    [16.3, 5.188, 26.298],
    [15.8, 3.685, 155.420],
    [9.5, 0.76, 18849.23],
    [8.9, 2.06, 77713.77],
    [7.0, 0.83, 775.52],
    [5.1, 4.66, 1577.34],
    [4.1, 1.03, 7.11],
    [3.5, 5.14, 796.30],
    [3.2, 6.05, 5507.55],
    [3.0, 1.19, 242.73],
    [2.9, 6.12, 529.69],
    [3.8, 3.44, 5573.14],
    [2.7, 0.31, 398.15],
    [2.4, 4.38, 5223.69],
    [2.5, 2.28, 553.57],
    [2.1, 3.75, 0.98],
    [1.7, 0.90, 951.72],
    [1.5, 5.76, 1349.87],
    [1.2, 2.97, 2146.17],
    [1.4, 4.36, 1748.02],
    [1.3, 3.72, 1194.45],
    [1.3, 2.95, 6438.50],
    [1.0, 5.99, 6286.60],
    [0.9, 4.80, 5088.63],
    [0.8, 3.31, 213.30],
    [1.1, 1.27, 161000.69],
    [0.8, 3.42, 5486.78],
    [1.0, 0.60, 3154.69],
    [0.9, 5.23, 7084.90],
    [0.6, 1.60, 2544.31],
    [0.7, 3.43, 4694.00],
    [0.6, 2.48, 10977.08],
    [0.7, 6.19, 4690.48],
    [0.6, 1.98, 801.82],
    [0.5, 1.44, 6836.65],
    [0.5, 2.34, 1592.60],
    [0.5, 1.31, 4292.33],
    [0.4, 0.04, 7234.79],
    [0.5, 3.81, 149854.40],
    [0.4, 4.94, 7632.94],
];
const EARTH_L3: &[[f64; 3]] = &[
    [289.2, 5.8438, 6283.0758],
    [35.0, 0.0, 0.0],
    [16.8, 5.488, 12566.152],
    [3.0, 5.20, 155.42],
    [1.3, 4.72, 3.52],
    [0.6, 5.97, 242.73],
    [0.7, 5.30, 18849.23],
    [0.4, 3.79, 553.57],
];
const EARTH_L4: &[[f64; 3]] = &[
    [114.1, 3.1416, 0.0],
    [7.7, 4.13, 6283.08],
    [0.8, 3.84, 12566.15],
    [0.4, 0.42, 155.42],
];
const EARTH_L5: &[[f64; 3]] = &[[0.9, 3.14, 0.0], [0.2, 2.77, 6283.08], [0.1, 2.01, 155.42]];
const EARTH_B0: &[[f64; 3]] = &[
    [279.6, 3.1987, 84334.6616],
    [101.6, 5.4225, 5507.5532],
    [80.4, 3.880, 5223.694],
    [43.8, 3.704, 2352.866],
    [31.9, 4.000, 1577.344],
    [22.7, 3.985, 1047.747],
    [16.4, 3.565, 5856.478],
    [18.1, 4.984, 6283.076],
    [14.4, 3.703, 9437.763],
    [14.3, 3.411, 10213.286],
    [11.2, 4.828, 14143.495],
    [10.9, 2.086, 6812.767],
    [9.7, 3.47, 4694.00],
    [10.4, 4.057, 71092.881],
    [8.8, 4.44, 5753.38],
    [8.4, 4.99, 7084.90],
    [6.9, 4.33, 6275.96],
    [9.1, 1.14, 6620.89],
    [7.2, 3.60, 529.69],
    [7.7, 5.55, 167621.58],
];
const EARTH_B1: &[[f64; 3]] = &[
    [9.0, 3.90, 5507.55],
    [6.2, 1.73, 5223.69],
    [3.8, 5.24, 2352.87],
    [2.8, 2.47, 1577.34],
    [1.8, 0.42, 6283.08],
];
const EARTH_B2: &[[f64; 3]] = &[[1.7, 1.63, 84334.66], [0.5, 2.41, 1047.75]];
const EARTH_R0: &[[f64; 3]] = &[
    [100013988.8, 0.0, 0.0],
    [1670699.6, 3.09846351, 6283.07584999],
    [13956.0, 3.055246, 12566.151700],
    [3083.7, 5.19847, 77713.77147],
    [1628.5, 1.17388, 5753.38488],
    [1575.6, 2.84685, 7860.41939],
    [924.8, 5.4529, 11506.7698],
    [542.4, 4.5641, 3930.2097],
    [472.1, 3.6610, 5884.9268],
    [328.8, 5.8998, 5223.6939],
    [346.0, 0.9637, 5507.5532],
    [306.8, 0.2987, 5573.1428],
    [174.8, 3.0119, 18849.2275],
    [243.2, 4.2735, 11790.6291],
    [211.8, 5.8471, 1577.3435],
    [185.8, 5.0219, 10977.0788],
    [109.8, 5.0551, 5486.7778],
    [98.3, 0.887, 6069.777],
    [86.5, 5.690, 15720.839],
    [85.8, 1.271, 161000.686],
    [62.9, 0.922, 529.691],
    [57.1, 2.014, 83996.847],
    [64.9, 0.273, 17260.155],
    [49.4, 3.245, 2544.314],
    [55.7, 5.242, 71430.696],
    [42.5, 6.011, 6275.962],
    [47.0, 2.578, 775.523],
    [39.0, 5.361, 4694.003],
    [44.7, 5.537, 9437.763],
    [35.7, 1.675, 12036.461],
    [31.9, 0.184, 5088.629],
    [31.8, 1.778, 398.149],
    [33.2, 0.244, 7084.897],
    [38.2, 2.393, 8827.390],
    [28.5, 1.213, 6286.599],
    [37.5, 0.830, 19651.048],
    [37.0, 4.901, 12139.554],
    [34.5, 1.843, 2942.463],
    [26.3, 4.589, 10447.388],
    [24.6, 3.787, 8429.241],
    [23.6, 0.269, 796.298],
    [27.8, 1.899, 6279.553],
    [23.9, 4.996, 5856.478],
    [20.3, 4.653, 2146.165],
    [23.3, 2.808, 14143.495],
    [22.1, 1.950, 3154.687],
    [19.5, 5.382, 2352.866],
    [18.0, 0.199, 6812.767],
    [17.2, 4.433, 10213.286],
    [16.2, 5.232, 17789.846],
    [17.3, 6.152, 16730.464],
    [13.8, 5.190, 8031.092],
    [18.8, 0.673, 149854.400],
    [18.3, 2.253, 23581.258],
    [13.6, 3.685, 4705.732],
    [13.1, 0.653, 13367.973],
    [10.4, 4.333, 11769.854],
    [10.0, 4.201, 6309.374],
    [10.2, 1.594, 4690.480],
    [7.6, 2.63, 6256.78],
    [9.7, 3.68, 27511.47],
    [6.7, 0.56, 3340.61],
    [8.7, 6.06, 1748.02],
    [7.8, 3.67, 12168.00],
    [6.6, 5.66, 11371.70],
    [7.7, 0.31, 7632.94],
    [6.6, 3.14, 801.82],
    [7.5, 5.65, 11926.25],
    [6.9, 2.92, 6681.22],
    [6.8, 1.42, 23013.54],
    [6.5, 2.65, 19804.83],
];
const EARTH_R1: &[[f64; 3]] = &[
    [103018.6, 1.1074897, 6283.0758500],
    [1721.2, 1.06442, 12566.15170],
    [702.2, 3.1416, 0.0],
    [32.3, 1.022, 18849.228],
    [30.8, 2.844, 5507.553],
    [25.0, 1.319, 5223.694],
    [18.5, 1.424, 1577.344],
    [10.1, 5.914, 10977.079],
    [8.6, 0.27, 5486.78],
    [8.7, 1.42, 6275.96],
    [5.1, 1.69, 5088.63],
    [5.0, 6.01, 6286.60],
    [4.7, 5.99, 529.69],
    [4.4, 0.52, 4694.00],
    [3.9, 4.75, 2544.31],
    [3.8, 5.07, 796.30],
    [4.1, 1.08, 9437.76],
    [3.5, 0.02, 83996.85],
    [3.4, 0.95, 71430.70],
    [3.2, 6.16, 2146.17],
    [3.4, 5.41, 775.52],
    [2.9, 5.48, 10447.39],
    [2.5, 0.24, 398.15],
    [2.2, 4.95, 6812.77],
    [2.2, 0.42, 8031.09],
    [2.8, 3.42, 2352.87],
    [2.6, 6.13, 6438.50],
    [1.9, 5.31, 8429.24],
    [2.4, 3.09, 4690.48],
    [1.7, 1.54, 4705.73],
    [2.2, 3.69, 7084.90],
    [2.1, 1.28, 1748.02],
    [1.8, 3.23, 6279.55],
    [1.6, 4.10, 11499.66],
    [1.6, 5.54, 3154.69],
    [1.8, 1.82, 7632.94],
];
const EARTH_R2: &[[f64; 3]] = &[
    [4359.4, 5.78455, 6283.07585],
    [123.6, 5.5793, 12566.1517],
    [12.3, 3.142, 0.0],
    [8.8, 3.63, 77713.77],
    [5.7, 1.87, 5573.14],
    [3.3, 5.47, 18849.23],
    [1.5, 4.48, 5507.55],
    [1.0, 2.81, 5223.69],
    [0.9, 3.11, 1577.34],
    [1.1, 2.84, 161000.69],
    [0.6, 5.47, 775.52],
    [0.6, 1.38, 6438.50],
    [0.5, 4.42, 6286.60],
    [0.4, 0.90, 10977.08],
    [0.4, 3.20, 5088.63],
    [0.5, 3.66, 7084.90],
    [0.5, 5.39, 149854.40],
];
const EARTH_R3: &[[f64; 3]] = &[
    [144.6, 4.2732, 6283.0758],
    [6.7, 3.92, 12566.15],
    [0.8, 0.0, 0.0],
    [0.2, 3.73, 18849.23],
];
const EARTH_R4: &[[f64; 3]] = &[
    [3.9, 2.56, 6283.08],
    [0.3, 2.27, 12566.15],
    [0.1, 3.44, 5573.14],
];
const EARTH_R5: &[[f64; 3]] = &[[0.1, 1.22, 6283.08]];

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use serde::Deserialize;

    /// Celery's own run times, written by `generate.py` beside it.
    const GROUND_TRUTH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/solar/celery_solar_2026.json"
    );

    /// How far our instant may be from Celery's, in seconds. PyEphem stops a search once a
    /// step is under 0.1 s and we carry it to convergence (see `Observer::next_event`), so
    /// they differ by up to ephem's slack: 0.35 s in this data where its steps shrink
    /// slowly, mostly under 0.1 s. A wrong refraction, semi-diameter or ΔT shows as seconds.
    const TOLERANCE: f64 = 0.5;

    #[derive(Deserialize)]
    struct GroundTruth {
        celery: String,
        start: String,
        end: String,
        series: Vec<Series>,
    }

    #[derive(Deserialize)]
    struct Series {
        place: String,
        lat: f64,
        lon: f64,
        event: String,
        fires_ms: Vec<i64>,
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn ground_truth() -> GroundTruth {
        let text = std::fs::read_to_string(GROUND_TRUTH).expect("ground truth file");
        serde_json::from_str(&text).expect("ground truth JSON")
    }

    fn solar(event: &str, lat: f64, lon: f64) -> Solar {
        Solar::new(SolarEvent::parse(event).expect("event"), lat, lon).expect("coordinates")
    }

    /// Beat's walk: each next run is computed from the previous one. Fires, and the instants
    /// they truncate (Unix seconds).
    fn walk(solar: &Solar, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(i64, f64)> {
        let mut fires = Vec::new();
        let mut cursor = start;
        while let Some(at) = solar.next_instant(cursor) {
            let fire = utc_second(at).expect("in chrono's range");
            if fire >= end {
                break;
            }
            fires.push((fire.timestamp(), (at - UNIX_EPOCH) * 86_400.0));
            cursor = fire;
        }
        fires
    }

    fn show(ms: i64) -> String {
        DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |at| at.to_rfc3339())
    }

    // Same count, each instant within TOLERANCE of Celery's, and each fire in Celery's
    // minute unless Celery's instant is within TOLERANCE of a minute boundary (counted and
    // allowed: truncating either side of it is a different minute). "Within 60 s" would be
    // too loose to catch a wrong refraction or semi-diameter.
    #[test]
    fn walks_the_same_fires_as_celery() {
        let truth = ground_truth();
        assert!(truth.celery.starts_with("5."), "celery {}", truth.celery);
        let (start, end) = (utc(&truth.start), utc(&truth.end));
        assert_eq!(truth.series.len(), 72);
        let (mut fires, mut same_second, mut same_minute) = (0usize, 0usize, 0usize);
        let (mut max_error, mut over_100ms) = (0.0f64, 0usize);
        for series in &truth.series {
            let name = format!(
                "{} {} ({}, {})",
                series.event, series.place, series.lat, series.lon
            );
            let sun = solar(&series.event, series.lat, series.lon);
            let ours = walk(&sun, start, end);
            let first_difference = ours
                .iter()
                .zip(&series.fires_ms)
                .position(|(&(_, at), &celery)| (at - celery as f64 / 1000.0).abs() > 60.0);
            assert!(
                first_difference.is_none() && ours.len() == series.fires_ms.len(),
                "{name}: {} fires, Celery {}; first difference at {:?}: ours {:?}, Celery {:?}",
                ours.len(),
                series.fires_ms.len(),
                first_difference,
                first_difference.map(|i| show(ours[i].0 * 1000)),
                first_difference.map(|i| show(series.fires_ms[i])),
            );
            for (&(fire, at), &celery) in ours.iter().zip(&series.fires_ms) {
                let error = (at - celery as f64 / 1000.0).abs();
                assert!(
                    error <= TOLERANCE,
                    "{name}: ours {} vs Celery {}",
                    show((at * 1000.0).floor() as i64),
                    show(celery)
                );
                max_error = max_error.max(error);
                over_100ms += usize::from(error > 0.1);
                same_second += usize::from(fire == celery.div_euclid(1000));
                if fire.div_euclid(60) == celery.div_euclid(60_000) {
                    same_minute += 1;
                } else {
                    let into_minute = celery.rem_euclid(60_000) as f64 / 1000.0;
                    assert!(
                        into_minute <= TOLERANCE || into_minute >= 60.0 - TOLERANCE,
                        "{name}: ours {} is not in Celery's minute {}",
                        show(fire * 1000),
                        show(celery)
                    );
                }
            }
            fires += ours.len();
        }
        eprintln!(
            "{fires} fires: {same_minute} in Celery's minute, {same_second} in its second; \
             max difference {max_error:.3} s, {over_100ms} over 0.1 s"
        );
        assert!(fires > 20_000);
    }

    #[test]
    fn skips_the_days_without_the_event_as_celery() {
        let truth = ground_truth();
        let (start, end) = (utc(&truth.start), utc(&truth.end));
        let tromso = truth
            .series
            .iter()
            .find(|s| s.place == "tromso" && s.event == "sunrise")
            .expect("tromso sunrise");
        // Polar night: Celery's longest gap is about eight weeks, around the December solstice.
        let (gap_index, gap) = tromso
            .fires_ms
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .enumerate()
            .max_by_key(|&(_, gap)| gap)
            .expect("fires");
        assert!(gap > 50 * 86_400_000, "longest gap {gap} ms");
        let before = tromso.fires_ms[gap_index] / 1000;
        let after = tromso.fires_ms[gap_index + 1] / 1000;
        let sun = solar("sunrise", tromso.lat, tromso.lon);
        let last = DateTime::from_timestamp(before, 0).expect("instant");
        let next = sun.next_after(last).expect("sunrise after the polar night");
        assert_eq!(next.timestamp(), after, "first sunrise after {last}");
        // Midnight sun: no dusk_astronomical for months, and each search still ends.
        let dusk = solar("dusk_astronomical", tromso.lat, tromso.lon);
        assert!(walk(&dusk, start, end).len() < 200);
    }

    #[test]
    fn an_event_that_never_occurs_is_none() {
        // At the pole the Sun circles at a constant height: it never rises, but it transits.
        let at = utc("2026-03-01T00:00:00Z");
        for event in [SolarEvent::Sunrise, SolarEvent::DuskCivil] {
            let pole = Solar::new(event, 90.0, 0.0).expect("pole");
            assert_eq!(pole.next_after(at), None, "{event}");
        }
        let noon = Solar::new(SolarEvent::SolarNoon, 90.0, 0.0).expect("pole");
        assert!(noon.next_after(at).is_some());
    }

    #[test]
    fn next_after_is_strict_and_truncated() {
        let sunrise = solar("sunrise", 52.52, 13.405);
        let fire = sunrise
            .next_after(utc("2026-06-01T00:00:00Z"))
            .expect("sunrise");
        assert_eq!(fire.timestamp_subsec_nanos(), 0);
        let at = sunrise
            .next_instant(utc("2026-06-01T00:00:00Z"))
            .expect("instant");
        assert_eq!(utc_second(at), Some(fire));
        assert!((at - UNIX_EPOCH) * 86_400.0 - (fire.timestamp() as f64) < 1.0);
        // The fire's own second is the fire: one second before finds it, the fire itself
        // and half a second into it find the next day's.
        assert_eq!(sunrise.next_after(fire - TimeDelta::seconds(1)), Some(fire));
        let tomorrow = sunrise.next_after(fire).expect("next sunrise");
        assert!(
            tomorrow - fire > TimeDelta::hours(23),
            "{fire} then {tomorrow}"
        );
        assert_eq!(
            sunrise.next_after(fire + TimeDelta::milliseconds(500)),
            Some(tomorrow)
        );
    }

    #[test]
    fn parses_celery_names_only() {
        for event in SolarEvent::ALL {
            assert_eq!(SolarEvent::parse(event.as_str()), Ok(event));
            assert_eq!(event.to_string().parse::<SolarEvent>(), Ok(event));
        }
        for bad in ["Sunrise", "sunrise ", "noon", "dawn", ""] {
            assert_eq!(
                SolarEvent::parse(bad),
                Err(SolarError::Event(bad.to_string()))
            );
        }
        assert_eq!(
            SolarEvent::parse("noon").map_err(|e| e.to_string()),
            Err(
                "invalid solar event \"noon\": must be one of dawn_astronomical, dawn_nautical, \
                 dawn_civil, sunrise, solar_noon, sunset, dusk_civil, dusk_nautical, \
                 dusk_astronomical"
                    .to_string()
            )
        );
    }

    #[test]
    fn coordinates_within_celerys_bounds() {
        let event = SolarEvent::Sunset;
        for (lat, lon) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (-0.0, 179.999)] {
            assert!(Solar::new(event, lat, lon).is_ok(), "{lat}, {lon}");
        }
        for lat in [90.000001, -90.5, f64::INFINITY, f64::NAN] {
            assert_eq!(
                Solar::new(event, lat, 0.0),
                Err(SolarError::Latitude(lat.to_string()))
            );
        }
        for lon in [180.5, -181.0, f64::NEG_INFINITY, f64::NAN] {
            assert_eq!(
                Solar::new(event, 0.0, lon),
                Err(SolarError::Longitude(lon.to_string()))
            );
        }
        assert_eq!(
            Solar::new(event, 91.0, 0.0).map_err(|e| e.to_string()),
            Err("invalid solar latitude 91: must be between -90 and 90".to_string())
        );
        assert_eq!(
            Solar::new(event, 0.0, -200.5).map_err(|e| e.to_string()),
            Err("invalid solar longitude -200.5: must be between -180 and 180".to_string())
        );
    }
}
