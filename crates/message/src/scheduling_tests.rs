use super::*;
use serde_json::json;

fn at(rfc3339: &str) -> SystemTime {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
}

fn utc(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse(v: Value) -> Result<Scheduling, String> {
    Scheduling::from_json(&v)
        .map(|s| s.expect("an object sets scheduling"))
        .map_err(|e| e.to_string())
}

fn window(dow: &str, tz: &str, start: &str, end: &str) -> Scheduling {
    parse(json!({"dow": dow, "tz": tz, "start": start, "end": end})).unwrap()
}

#[test]
fn days_are_three_letter_or_full_names_in_any_case_and_order() {
    let all = DaysOfWeek::parse("Mon,Tue,Wed,Thu,Fri,Sat,Sun").unwrap();
    assert_eq!(all.text(), "Mon,Tue,Wed,Thu,Fri,Sat,Sun");
    let some = DaysOfWeek::parse("Wed, tuesday,THU").unwrap();
    assert_eq!(some.text(), "Tue,Wed,Thu");
    assert!(some.contains(Weekday::Tue) && !some.contains(Weekday::Mon));
    let e = DaysOfWeek::parse("Wed,Sumday").unwrap_err().to_string();
    assert!(e.starts_with("invalid day 'Sumday'"), "{e}");
    assert!(DaysOfWeek::parse("").is_err(), "no days is not a window");
}

#[test]
fn a_window_parses_and_serialises_in_kumomtas_form() {
    let text = r#"{"dow":"Mon,Wed","tz":"America/Phoenix","start":"09:00:00","end":"17:00:00"}"#;
    let s = parse(serde_json::from_str(text).unwrap()).unwrap();
    assert_eq!(serde_json::to_string(&s.to_json()).unwrap(), text);
    let both = parse(json!({
        "first_attempt": "1996-12-19T16:39:57-08:00",
        "expires": "1996-12-20T00:00:00Z",
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_string(&both.to_json()).unwrap(),
        r#"{"first_attempt":"1996-12-19T16:39:57-08:00","expires":"1996-12-20T00:00:00+00:00"}"#
    );
    assert_eq!(Scheduling::from_json(&Value::Null), Ok(None), "nil clears");
    assert_eq!(
        Scheduling::from_json(&json!([])),
        Ok(Some(Scheduling::default())),
        "an empty Lua table"
    );
}

#[test]
fn bad_values_are_refused_with_the_field_named() {
    let cases = [
        (
            json!({"first_attempt": "09:00:00"}),
            "'first_attempt': expected an RFC 3339 date and time",
        ),
        (json!({"expires": 5}), "'expires' must be a string"),
        (
            json!({"tz": "America/Phoenix", "start": "09:00:00", "end": "17:00:00"}),
            "missing: dow",
        ),
        (json!({"tz": "UTC", "start": "09:00:00"}), "missing: dow, end"),
        (
            json!({"dow": "Mon", "tz": "PST", "start": "09:00:00", "end": "17:00:00"}),
            "'tz': unknown time zone 'PST'",
        ),
        (
            json!({"dow": "Mon", "tz": "UTC", "start": "9am", "end": "17:00:00"}),
            "'start': expected a time of day as HH:MM:SS, got '9am'",
        ),
        (
            json!({"dow": "Mon", "tz": "UTC", "start": "21:10:49", "end": "20:57:49"}),
            "'start' (21:10:49) must be before 'end' (20:57:49)",
        ),
        (
            json!({"dow": "Mon", "tz": "UTC", "start": "09:00:00", "end": "09:00:00"}),
            "must be before 'end'",
        ),
        (
            json!({"days": "Mon"}),
            "unknown scheduling field 'days' (expected dow, tz, start, end, first_attempt, expires)",
        ),
        (json!({"dow": "Mon,Funday"}), "invalid day 'Funday'"),
    ];
    for (v, want) in cases {
        let got = parse(v.clone()).unwrap_err();
        assert!(got.contains(want), "{v}: {got}");
    }
    let e = Scheduling::from_json(&json!("Mon"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("expected a table of scheduling fields"),
        "{e}"
    );
}

#[test]
fn first_attempt_delays_an_earlier_time_and_leaves_a_later_one() {
    let s = parse(json!({"first_attempt": "2023-03-20T16:39:57-08:00"})).unwrap();
    assert_eq!(
        utc(s.adjust(at("2023-03-20T08:00:00-08:00"))),
        "2023-03-21T00:39:57Z"
    );
    let later = at("2023-03-22T00:00:00Z");
    assert_eq!(s.adjust(later), later);
}

#[test]
fn outside_the_window_moves_to_the_next_permitted_days_start() {
    // Phoenix keeps UTC-7 all year.
    let s = window("Mon,Wed", "America/Phoenix", "09:00:00", "17:00:00");
    // Tuesday 09:00 in Phoenix: Wednesday's start.
    assert_eq!(
        utc(s.adjust(at("2023-03-28T08:00:00-08:00"))),
        "2023-03-29T16:00:00Z"
    );
    let fri = window("Mon,Fri", "America/Phoenix", "09:00:00", "17:00:00");
    // Monday 19:00 in Phoenix, after hours: Friday's start.
    assert_eq!(
        utc(fri.adjust(at("2023-03-27T18:00:00-08:00"))),
        "2023-03-31T16:00:00Z"
    );
    // Monday 08:00: that day's start.
    assert_eq!(
        utc(fri.adjust(at("2023-03-27T08:00:00-07:00"))),
        "2023-03-27T16:00:00Z"
    );
}

#[test]
fn inside_the_window_is_unchanged_and_its_end_is_outside() {
    let s = window("Mon,Wed", "America/Phoenix", "09:00:00", "17:00:00");
    let inside = at("2023-03-27T16:59:59-07:00");
    assert_eq!(s.adjust(inside), inside);
    let start = at("2023-03-27T09:00:00-07:00");
    assert_eq!(s.adjust(start), start, "the start is inside");
    assert_eq!(
        utc(s.adjust(at("2023-03-27T17:00:00-07:00"))),
        "2023-03-29T16:00:00Z",
        "the end is not"
    );
}

#[test]
fn the_same_instant_is_judged_in_the_windows_own_time_zone() {
    // 2024-06-05 (a Wednesday) 12:00 UTC: 14:00 in Berlin, 08:00 in New York.
    let t = at("2024-06-05T12:00:00Z");
    let berlin = window("Wed", "Europe/Berlin", "13:00:00", "15:00:00");
    assert_eq!(berlin.adjust(t), t);
    let new_york = window("Wed", "America/New_York", "13:00:00", "15:00:00");
    assert_eq!(utc(new_york.adjust(t)), "2024-06-05T17:00:00Z");
    // Late on Wednesday in UTC is already Thursday in Tokyo.
    let tokyo = window("Wed", "Asia/Tokyo", "09:00:00", "17:00:00");
    assert_eq!(
        utc(tokyo.adjust(at("2024-06-05T20:00:00Z"))),
        "2024-06-12T00:00:00Z"
    );
}

#[test]
fn daylight_saving_changes_keep_the_local_wall_clock() {
    let s = window("Sun,Mon", "America/New_York", "09:00:00", "17:00:00");
    // Sunday 2024-03-10 starts in EST (UTC-5); 09:00 is already EDT (UTC-4).
    assert_eq!(
        utc(s.adjust(at("2024-03-10T05:00:00Z"))),
        "2024-03-10T13:00:00Z"
    );
    // A start inside the skipped hour opens as far past the gap.
    let gap = window("Sun", "America/New_York", "02:30:00", "04:00:00");
    assert_eq!(
        utc(gap.adjust(at("2024-03-10T05:00:00Z"))),
        "2024-03-10T07:30:00Z"
    );
    // A start in the repeated hour opens at its first occurrence (EDT).
    let twice = window("Sun", "America/New_York", "01:30:00", "03:00:00");
    assert_eq!(
        utc(twice.adjust(at("2024-11-03T04:00:00Z"))),
        "2024-11-03T05:30:00Z"
    );
}

#[test]
fn first_attempt_and_window_together() {
    let mut s = window("Mon,Wed", "America/Phoenix", "09:00:00", "17:00:00");
    s.first_attempt = Some(DateTime::parse_from_rfc3339("2023-03-27T18:00:00-07:00").unwrap());
    // Monday morning, but not before Monday 18:00: Wednesday's start.
    assert_eq!(
        utc(s.adjust(at("2023-03-27T10:00:00-07:00"))),
        "2023-03-29T16:00:00Z"
    );
}

#[test]
fn the_stored_schedule_round_trips_and_reads_kumomtas_form() {
    let mut sched = window("Tue", "Europe/Oslo", "08:00:00", "16:30:00");
    sched.expires = Some(DateTime::parse_from_rfc3339("2030-01-01T00:00:00+01:00").unwrap());
    let stored = StoredSchedule {
        attempts: 2,
        due: Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
        scheduling: Some(sched),
    };
    let text = serde_json::to_string(&stored).unwrap();
    assert_eq!(
        text,
        r#"{"attempts":2,"due":2000000000,"dow":"Tue","tz":"Europe/Oslo","start":"08:00:00","end":"16:30:00","expires":"2030-01-01T00:00:00+01:00"}"#
    );
    assert_eq!(
        serde_json::from_str::<StoredSchedule>(&text).unwrap(),
        stored
    );
    // KumoMTA's record holds the scheduling alone.
    let kumo: StoredSchedule =
        serde_json::from_str(r#"{"first_attempt":"2030-01-01T00:00:00Z"}"#).unwrap();
    assert_eq!((kumo.attempts, kumo.due), (0, None));
    assert!(kumo.scheduling.unwrap().first_attempt.is_some());
    let bad = serde_json::from_str::<StoredSchedule>(r#"{"attempts":1,"tz":"UTC"}"#);
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("missing: dow, start, end"));
    assert_eq!(StoredSchedule::of(0, None, None), None);
}
