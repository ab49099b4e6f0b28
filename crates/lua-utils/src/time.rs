//! `kumo.time`: `now`, `from_unix_timestamp`, `parse_rfc2822`,
//! `parse_rfc3339`, `with_ymd_hms` (all giving a `Time`), `parse_duration`
//! (a `TimeDelta`), `sleep` (the same function as `kumo.sleep`) and
//! `start_timer(label)`, whose `done()` records the elapsed time in the
//! `user_lua_latency{label}` histogram and returns it in seconds (also
//! called when a `<close>` variable holding the timer goes out of scope).
//!
//! `Time` is UTC. Fields: `year`, `month`, `day`, `hour`, `minute`,
//! `second`, `unix_timestamp`, `unix_timestamp_millis`, `rfc2822`,
//! `rfc3339`, `elapsed`; method `format(strftime)`; `tostring` gives
//! `2000-01-02 03:04:05 UTC`; `==`, `Time + TimeDelta`, `Time - TimeDelta`
//! and `Time - Time`. `TimeDelta` fields: `seconds` (fractional),
//! `milliseconds`, `microseconds`, `nanoseconds`, `human` (`5m`, also its
//! `tostring`); `==`, `+` and `-` between deltas.

use std::fmt::Write as _;
use std::sync::Once;
use std::time::Instant;

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Timelike, Utc};
use hermod_policy::errors::located;
use mlua::{AnyUserData, Lua, MetaMethod, UserData, UserDataFields, UserDataMethods, Value};

/// The `Time` object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time(pub DateTime<Utc>);

/// The `TimeDelta` object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta(pub TimeDelta);

impl UserData for Time {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("year", |_, t| Ok(t.0.year()));
        fields.add_field_method_get("month", |_, t| Ok(t.0.month()));
        fields.add_field_method_get("day", |_, t| Ok(t.0.day()));
        fields.add_field_method_get("hour", |_, t| Ok(t.0.hour()));
        fields.add_field_method_get("minute", |_, t| Ok(t.0.minute()));
        fields.add_field_method_get("second", |_, t| Ok(t.0.second()));
        fields.add_field_method_get("unix_timestamp", |_, t| Ok(t.0.timestamp()));
        fields.add_field_method_get("unix_timestamp_millis", |_, t| Ok(t.0.timestamp_millis()));
        fields.add_field_method_get("rfc2822", |_, t| Ok(t.0.to_rfc2822()));
        fields.add_field_method_get("rfc3339", |_, t| Ok(t.0.to_rfc3339()));
        fields.add_field_method_get("elapsed", |_, t| Ok(Delta(Utc::now() - t.0)));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("format", |lua, t, fmt: Value| {
            const WHAT: &str = "Time:format";
            let fmt = crate::str_arg(lua, WHAT, "format", &fmt)?;
            // chrono reports a bad specifier as a formatting error; a
            // `to_string()` would panic on it instead.
            let mut out = String::new();
            write!(out, "{}", t.0.format(&fmt))
                .map_err(|_| located(lua, format!("{WHAT}: invalid format string {fmt:?}")))?;
            Ok(out)
        });
        methods.add_meta_method(MetaMethod::ToString, |_, t, ()| Ok(t.0.to_string()));
        methods.add_meta_method(MetaMethod::Eq, |_, t, other: AnyUserData| {
            Ok(other.borrow::<Time>().is_ok_and(|o| *o == *t))
        });
        methods.add_meta_function(MetaMethod::Add, |lua, (a, b): (Value, Value)| {
            // Either operand may be the Time: `delta + time` reads as well.
            let (t, d) = match (as_time(&a), as_delta(&b), as_delta(&a), as_time(&b)) {
                (Some(t), Some(d), _, _) | (_, _, Some(d), Some(t)) => (t, d),
                _ => {
                    return Err(located(
                        lua,
                        "Time: only a TimeDelta can be added to a Time",
                    ))
                }
            };
            t.0.checked_add_signed(d.0)
                .map(Time)
                .ok_or_else(|| located(lua, "Time + TimeDelta: the result is out of range"))
        });
        methods.add_meta_function(MetaMethod::Sub, |lua, (a, b): (Value, Value)| {
            let Some(t) = as_time(&a) else {
                return Err(located(
                    lua,
                    "Time: only a Time can be subtracted from a Time",
                ));
            };
            if let Some(other) = as_time(&b) {
                return Ok(Value::UserData(lua.create_userdata(Delta(t.0 - other.0))?));
            }
            let Some(d) = as_delta(&b) else {
                return Err(located(
                    lua,
                    "Time: subtract a Time or a TimeDelta from a Time",
                ));
            };
            let t =
                t.0.checked_sub_signed(d.0)
                    .ok_or_else(|| located(lua, "Time - TimeDelta: the result is out of range"))?;
            Ok(Value::UserData(lua.create_userdata(Time(t))?))
        });
    }
}

impl UserData for Delta {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("seconds", |_, d| Ok(seconds(d.0)));
        fields.add_field_method_get("milliseconds", |_, d| Ok(d.0.num_milliseconds()));
        fields.add_field_method_get("microseconds", |_, d| {
            Ok(d.0.num_microseconds().unwrap_or_else(|| saturated(d.0)))
        });
        fields.add_field_method_get("nanoseconds", |_, d| {
            Ok(d.0.num_nanoseconds().unwrap_or_else(|| saturated(d.0)))
        });
        fields.add_field_method_get("human", |_, d| Ok(human(d.0)));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, d, ()| Ok(human(d.0)));
        methods.add_meta_method(MetaMethod::Eq, |_, d, other: AnyUserData| {
            Ok(other.borrow::<Delta>().is_ok_and(|o| *o == *d))
        });
        methods.add_meta_function(MetaMethod::Add, |lua, (a, b): (Value, Value)| {
            // `delta + time` reaches this metamethod first (Lua tries the
            // left operand), so hand it to Time's.
            if let (Some(d), Some(t)) = (as_delta(&a), as_time(&b)) {
                let sum = t
                    .0
                    .checked_add_signed(d.0)
                    .ok_or_else(|| located(lua, "TimeDelta + Time: the result is out of range"))?;
                return Ok(Value::UserData(lua.create_userdata(Time(sum))?));
            }
            let (Some(x), Some(y)) = (as_delta(&a), as_delta(&b)) else {
                return Err(located(
                    lua,
                    "TimeDelta: only a TimeDelta or a Time can be added",
                ));
            };
            let sum = x
                .0
                .checked_add(&y.0)
                .ok_or_else(|| located(lua, "TimeDelta + TimeDelta: the result is out of range"))?;
            Ok(Value::UserData(lua.create_userdata(Delta(sum))?))
        });
        methods.add_meta_function(MetaMethod::Sub, |lua, (a, b): (Value, Value)| {
            let (Some(x), Some(y)) = (as_delta(&a), as_delta(&b)) else {
                return Err(located(
                    lua,
                    "TimeDelta: only a TimeDelta can be subtracted from a TimeDelta",
                ));
            };
            x.0.checked_sub(&y.0)
                .map(Delta)
                .ok_or_else(|| located(lua, "TimeDelta - TimeDelta: the result is out of range"))
        });
    }
}

fn as_time(v: &Value) -> Option<Time> {
    match v {
        Value::UserData(ud) => ud.borrow::<Time>().ok().map(|t| *t),
        _ => None,
    }
}

fn as_delta(v: &Value) -> Option<Delta> {
    match v {
        Value::UserData(ud) => ud.borrow::<Delta>().ok().map(|d| *d),
        _ => None,
    }
}

/// The closest integer to a count too large for an i64 (about 292 years
/// of nanoseconds), keeping the sign.
fn saturated(d: TimeDelta) -> i64 {
    if d < TimeDelta::zero() {
        i64::MIN
    } else {
        i64::MAX
    }
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_seconds() as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// `5m`, `1h 30m`, `-2s 500ms`: humantime's form, with a sign.
fn human(d: TimeDelta) -> String {
    let abs = d.abs().to_std().unwrap_or_default();
    let text = humantime::format_duration(abs).to_string();
    if d < TimeDelta::zero() {
        format!("-{text}")
    } else {
        text
    }
}

fn delta_from_secs(secs: f64) -> Option<TimeDelta> {
    if !secs.is_finite() || secs.abs() > 9.0e15 {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round() as i64;
    TimeDelta::try_seconds(whole as i64)?.checked_add(&TimeDelta::nanoseconds(nanos))
}

/// `parse_duration`'s argument: signed seconds as a number or a numeric
/// string, or a duration string (`5m`, `10 seconds`, `-1h`).
fn parse_delta(v: &Value) -> Result<TimeDelta, String> {
    let out_of_range = || "duration out of range".to_string();
    match v {
        Value::Integer(i) => TimeDelta::try_seconds(*i).ok_or_else(out_of_range),
        Value::Number(n) => delta_from_secs(*n).ok_or_else(out_of_range),
        Value::String(s) => {
            let text = s
                .to_str()
                .map_err(|_| "duration is not valid UTF-8".to_string())?;
            let text = text.trim();
            if let Ok(n) = text.parse::<f64>() {
                return delta_from_secs(n).ok_or_else(out_of_range);
            }
            let (negative, body) = match text.strip_prefix('-') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, text),
            };
            let d = humantime::parse_duration(body)
                .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
            let d = TimeDelta::from_std(d).map_err(|_| out_of_range())?;
            Ok(if negative { -d } else { d })
        }
        other => Err(format!(
            "expected seconds or a duration string, got {}",
            other.type_name()
        )),
    }
}

/// The object `start_timer` returns.
struct Timer {
    label: String,
    started: Instant,
    done: bool,
}

impl Timer {
    fn done(&mut self) -> f64 {
        let elapsed = self.started.elapsed();
        if !self.done {
            self.done = true;
            hermod_metrics::user_lua_latency(&self.label).observe_duration(elapsed);
        }
        elapsed.as_secs_f64()
    }
}

impl UserData for Timer {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("done", |_, t, ()| Ok(t.done()));
        methods.add_meta_method_mut(MetaMethod::Close, |_, t, _: mlua::MultiValue| {
            t.done();
            Ok(())
        });
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    static PORTABLE: Once = Once::new();
    PORTABLE.call_once(|| {
        hermod_policy::portable::register_handle::<Time>();
        hermod_policy::portable::register_handle::<Delta>();
    });

    let m = crate::module(lua, "time")?;
    m.set("now", lua.create_function(|_, ()| Ok(Time(Utc::now())))?)?;
    m.set(
        "from_unix_timestamp",
        lua.create_function(|lua, v: Value| {
            const WHAT: &str = "kumo.time.from_unix_timestamp";
            let t = match v {
                Value::Integer(i) => DateTime::from_timestamp(i, 0),
                Value::Number(n) => {
                    delta_from_secs(n).and_then(|d| DateTime::UNIX_EPOCH.checked_add_signed(d))
                }
                other => {
                    return Err(located(
                        lua,
                        format!(
                            "{WHAT}: expected a number of seconds, got {}",
                            other.type_name()
                        ),
                    ))
                }
            };
            t.map(Time)
                .ok_or_else(|| located(lua, format!("{WHAT}: timestamp out of range")))
        })?,
    )?;
    m.set(
        "parse_rfc2822",
        lua.create_function(|lua, v: Value| {
            const WHAT: &str = "kumo.time.parse_rfc2822";
            let text = crate::str_arg(lua, WHAT, "timestamp", &v)?;
            DateTime::parse_from_rfc2822(&text)
                .map(|t| Time(t.with_timezone(&Utc)))
                .map_err(|e| located(lua, format!("{WHAT}: invalid timestamp {text:?}: {e}")))
        })?,
    )?;
    m.set(
        "parse_rfc3339",
        lua.create_function(|lua, v: Value| {
            const WHAT: &str = "kumo.time.parse_rfc3339";
            let text = crate::str_arg(lua, WHAT, "timestamp", &v)?;
            DateTime::parse_from_rfc3339(&text)
                .map(|t| Time(t.with_timezone(&Utc)))
                .map_err(|e| located(lua, format!("{WHAT}: invalid timestamp {text:?}: {e}")))
        })?,
    )?;
    m.set(
        "with_ymd_hms",
        lua.create_function(
            |lua, (y, mo, d, h, mi, s): (i32, u32, u32, u32, u32, u32)| {
                Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                    .single()
                    .map(Time)
                    .ok_or_else(|| {
                        located(
                            lua,
                            format!(
                                "kumo.time.with_ymd_hms: {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} is not a valid date and time"
                            ),
                        )
                    })
            },
        )?,
    )?;
    m.set(
        "parse_duration",
        lua.create_function(|lua, v: Value| {
            parse_delta(&v)
                .map(Delta)
                .map_err(|e| located(lua, format!("kumo.time.parse_duration: {e}")))
        })?,
    )?;
    m.set(
        "start_timer",
        lua.create_function(|lua, label: Value| {
            let label = crate::str_arg(lua, "kumo.time.start_timer", "label", &label)?;
            Ok(Timer {
                label,
                started: Instant::now(),
                done: false,
            })
        })?,
    )?;
    // The core `kumo.sleep` (registered before any module crate) already
    // has the documented behaviour; one function under both names.
    let kumo = hermod_policy::kumo_table(lua)?;
    m.set("sleep", kumo.get::<Value>("sleep")?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_seconds_round_to_the_nanosecond_and_keep_their_sign() {
        assert_eq!(delta_from_secs(1.5), Some(TimeDelta::milliseconds(1500)));
        assert_eq!(delta_from_secs(-0.25), Some(TimeDelta::milliseconds(-250)));
        assert_eq!(delta_from_secs(f64::NAN), None);
    }

    #[test]
    fn human_text_is_humantime_with_a_sign() {
        assert_eq!(human(TimeDelta::minutes(5)), "5m");
        assert_eq!(human(TimeDelta::seconds(-90)), "-1m 30s");
    }
}
