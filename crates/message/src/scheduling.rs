//! Per-message scheduling, as KumoMTA's `msg:set_scheduling` and
//! `msg:import_scheduling_header` describe it: a delivery window (days of the
//! week and a time of day in an IANA time zone: `dow`, `tz`, `start`, `end`),
//! an earliest first attempt (`first_attempt`) and a per-message expiry
//! (`expires`). Parsed from JSON values (a Lua table or the header's JSON),
//! with errors that name the field; stored in the spool record's `schedule`
//! object beside Hermod's attempt count and due time ([`StoredSchedule`]).
//! The queue (crates/queue/src/schedule.rs) asks [`Scheduling::adjust`] when
//! a message may next be attempted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveTime, Offset, SecondsFormat,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde_json::{Map, Value};

/// A scheduling value that cannot be used; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

fn err(text: impl Into<String>) -> ScheduleError {
    ScheduleError(text.into())
}

const DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A set of weekdays; bit `n` is `n` days from Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaysOfWeek(u8);

impl DaysOfWeek {
    /// `"Mon,Wed"` or `"Monday,Wednesday"`, any case; blanks around a name
    /// are allowed.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let mut bits = 0u8;
        for part in text.split(',') {
            let name = part.trim();
            let day = DAY_NAMES
                .iter()
                .position(|d| name.eq_ignore_ascii_case(d) || name.eq_ignore_ascii_case(&d[..3]))
                .ok_or_else(|| {
                    err(format!(
                        "invalid day '{name}': expected a comma separated list of Mon..Sun or \
                         Monday..Sunday"
                    ))
                })?;
            bits |= 1 << day;
        }
        Ok(Self(bits))
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// KumoMTA's text form: three-letter names, Monday first.
    fn text(self) -> String {
        let names: Vec<&str> = DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, d)| &d[..3])
            .collect();
        names.join(",")
    }
}

/// The days and time of day in which delivery may be attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restriction {
    pub days: DaysOfWeek,
    pub tz: Tz,
    /// The window is `[start, end)` local time on each permitted day.
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Restriction {
    /// `day` at `time` in the zone. A time the clock skipped (a daylight
    /// saving gap) is read with the offset in force before the jump, so it
    /// lands as far past the gap as it was into it; a repeated time is its
    /// first occurrence.
    fn at(&self, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let local = day.and_time(time);
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
            LocalResult::None => {
                let before = self
                    .tz
                    .offset_from_utc_datetime(&(local - chrono::Duration::days(1)))
                    .fix();
                let utc = local - chrono::Duration::seconds(i64::from(before.local_minus_utc()));
                Utc.from_utc_datetime(&utc)
            }
        }
    }

    /// The earliest instant at or after `t` inside the window.
    fn next_open(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let today = t.with_timezone(&self.tz).date_naive();
        // A week and a day reach every weekday even past a skipped date.
        for day in today.iter_days().take(9) {
            if !self.days.contains(day.weekday()) {
                continue;
            }
            if t < self.at(day, self.end) {
                return t.max(self.at(day, self.start));
            }
        }
        // Only an empty set of days gets here, and parsing refuses one.
        t
    }
}

/// What `msg:set_scheduling` sets. Every part is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scheduling {
    pub restriction: Option<Restriction>,
    pub first_attempt: Option<DateTime<FixedOffset>>,
    pub expires: Option<DateTime<FixedOffset>>,
}

/// The keys a scheduling table may have, in KumoMTA's order.
const FIELDS: &str = "dow, tz, start, end, first_attempt, expires";

fn text_of<'a>(key: &str, v: &'a Value, what: &str) -> Result<&'a str, ScheduleError> {
    v.as_str().ok_or_else(|| {
        err(format!(
            "'{key}' must be a string ({what}), got {}",
            json_type(v)
        ))
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn time_of_day(key: &str, v: &Value) -> Result<NaiveTime, ScheduleError> {
    let s = text_of(key, v, "a time of day as HH:MM:SS")?;
    NaiveTime::parse_from_str(s, "%H:%M:%S%.f").map_err(|_| {
        err(format!(
            "'{key}': expected a time of day as HH:MM:SS, got '{s}'"
        ))
    })
}

fn date_time(key: &str, v: &Value) -> Result<DateTime<FixedOffset>, ScheduleError> {
    let s = text_of(key, v, "an RFC 3339 date and time")?;
    DateTime::parse_from_rfc3339(s).map_err(|e| {
        err(format!(
            "'{key}': expected an RFC 3339 date and time such as \
             '2025-03-01T17:00:00-08:00', got '{s}' ({e})"
        ))
    })
}

fn rfc3339(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

impl Scheduling {
    /// Parse `msg:set_scheduling`'s argument as JSON: `null` clears, an
    /// object sets. `dow`, `tz`, `start` and `end` come all together or not
    /// at all; unknown keys are refused.
    pub fn from_json(v: &Value) -> Result<Option<Scheduling>, ScheduleError> {
        match v {
            Value::Null => Ok(None),
            Value::Object(m) => Self::from_fields(m, &[]).map(Some),
            // An empty Lua table reaches here as an empty list.
            Value::Array(a) if a.is_empty() => Ok(Some(Scheduling::default())),
            other => Err(err(format!(
                "expected a table of scheduling fields ({FIELDS}) or nil, got {}",
                json_type(other)
            ))),
        }
    }

    /// Parse the fields of `m`, leaving alone the keys in `other_keys`.
    fn from_fields(m: &Map<String, Value>, other_keys: &[&str]) -> Result<Self, ScheduleError> {
        let (mut days, mut tz, mut start, mut end) = (None, None, None, None);
        let mut out = Scheduling::default();
        for (key, v) in m {
            match key.as_str() {
                "dow" => days = Some(DaysOfWeek::parse(text_of(key, v, "days like 'Mon,Wed'")?)?),
                "tz" => {
                    let name = text_of(key, v, "an IANA time zone name")?;
                    tz = Some(name.parse::<Tz>().map_err(|_| {
                        err(format!(
                            "'tz': unknown time zone '{name}': expected an IANA name such as \
                             'America/Phoenix'"
                        ))
                    })?);
                }
                "start" => start = Some(time_of_day(key, v)?),
                "end" => end = Some(time_of_day(key, v)?),
                "first_attempt" => out.first_attempt = Some(date_time(key, v)?),
                "expires" => out.expires = Some(date_time(key, v)?),
                k if other_keys.contains(&k) => {}
                k => {
                    return Err(err(format!(
                        "unknown scheduling field '{k}' (expected {FIELDS})"
                    )))
                }
            }
        }
        out.restriction = match (days, tz, start, end) {
            (None, None, None, None) => None,
            (Some(days), Some(tz), Some(start), Some(end)) => {
                if start >= end {
                    return Err(err(format!(
                        "'start' ({start}) must be before 'end' ({end}): the window is a time \
                         span within one day"
                    )));
                }
                Some(Restriction {
                    days,
                    tz,
                    start,
                    end,
                })
            }
            (days, tz, start, end) => {
                let missing: Vec<&str> = [
                    ("dow", days.is_none()),
                    ("tz", tz.is_none()),
                    ("start", start.is_none()),
                    ("end", end.is_none()),
                ]
                .into_iter()
                .filter_map(|(k, gone)| gone.then_some(k))
                .collect();
                return Err(err(format!(
                    "a delivery window needs all of dow, tz, start and end; missing: {}",
                    missing.join(", ")
                )));
            }
        };
        Ok(out)
    }

    /// KumoMTA's table form, which `set_scheduling` returns and the spool keeps.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        self.write_fields(&mut m);
        m
    }

    fn write_fields(&self, m: &mut Map<String, Value>) {
        if let Some(r) = &self.restriction {
            m.insert("dow".into(), r.days.text().into());
            m.insert("tz".into(), r.tz.name().into());
            m.insert(
                "start".into(),
                r.start.format("%H:%M:%S%.f").to_string().into(),
            );
            m.insert("end".into(), r.end.format("%H:%M:%S%.f").to_string().into());
        }
        if let Some(t) = &self.first_attempt {
            m.insert("first_attempt".into(), rfc3339(t).into());
        }
        if let Some(t) = &self.expires {
            m.insert("expires".into(), rfc3339(t).into());
        }
    }

    /// The earliest time at or after `t` at which an attempt is allowed:
    /// not before `first_attempt`, and inside the window.
    pub fn adjust(&self, t: SystemTime) -> SystemTime {
        let mut t = DateTime::<Utc>::from(t);
        if let Some(first) = self.first_attempt {
            t = t.max(first.with_timezone(&Utc));
        }
        if let Some(r) = &self.restriction {
            t = r.next_open(t);
        }
        t.into()
    }

    /// When the message expires, if `expires` was given.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires.map(SystemTime::from)
    }

    pub fn is_empty(&self) -> bool {
        *self == Scheduling::default()
    }
}

/// The spool record's `schedule` object: Hermod's attempt count and due time
/// (KumoMTA keeps neither) beside KumoMTA's scheduling fields, so a message
/// keeps its retry schedule and its window across restarts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredSchedule {
    pub attempts: u32,
    pub due: Option<SystemTime>,
    pub scheduling: Option<Scheduling>,
}

impl StoredSchedule {
    /// `None` when there is nothing to keep (no attempt yet, no due time,
    /// no scheduling).
    pub fn of(
        attempts: u32,
        due: Option<SystemTime>,
        scheduling: Option<&Scheduling>,
    ) -> Option<Self> {
        (attempts > 0 || due.is_some() || scheduling.is_some()).then(|| StoredSchedule {
            attempts,
            due,
            scheduling: scheduling.copied(),
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("attempts".into(), self.attempts.into());
        let due = self
            .due
            .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        m.insert("due".into(), due.into());
        if let Some(s) = &self.scheduling {
            s.write_fields(&mut m);
        }
        Value::Object(m)
    }

    fn from_value(v: &Value) -> Result<Self, ScheduleError> {
        let m = v.as_object().ok_or_else(|| {
            err(format!(
                "'schedule' must be an object, got {}",
                json_type(v)
            ))
        })?;
        let attempts = m.get("attempts").and_then(Value::as_u64).unwrap_or(0);
        let due = m
            .get("due")
            .and_then(Value::as_u64)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        let scheduling = Scheduling::from_fields(m, &["attempts", "due"])?;
        Ok(StoredSchedule {
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            due,
            scheduling: (!scheduling.is_empty()).then_some(scheduling),
        })
    }
}

impl serde::Serialize for StoredSchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for StoredSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        StoredSchedule::from_value(&v)
            .map_err(|e| serde::de::Error::custom(format!("schedule: {e}")))
    }
}

#[cfg(test)]
#[path = "scheduling_tests.rs"]
mod tests;
