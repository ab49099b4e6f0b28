//! A record's JSON line, written field by field.
//!
//! Serialising records was the largest single CPU cost of a log hook (a
//! mail's records are serialised for the hook, and each hook message's own
//! Delivery record for the local log): serde_json escapes every key and
//! every string byte by byte. Here keys and punctuation are constants,
//! strings that need no escaping (nearly all of them) are copied as they
//! are, and everything else still goes through serde_json. The result is
//! byte for byte what serde_json makes of the `LogRecord` struct, which the
//! tests below check for every field's shapes. (Step 1 of the log-hook fast
//! path, which is driven from crates/queue/src/hooks/mod.rs.)

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
// serde_json's string output, copied straight through when nothing needs escaping.
use hermod_message::{write_json_str as string, JsonLine};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::record::{normalize_content, LogRecord, Response};

/// Records are about 750-900 bytes: one buffer of this size holds a line
/// without growing (serde_json's default buffer grew three times per record).
const LINE_CAPACITY: usize = 1536;

type Result = std::result::Result<(), serde_json::Error>;

impl LogRecord {
    /// Compact JSON followed by `\n`: the unit written to files and hook messages.
    pub fn to_json_line(&self) -> std::result::Result<JsonLine, serde_json::Error> {
        JsonLine::from_writer(LINE_CAPACITY, |out| self.write_json(out))
    }

    fn write_json(&self, out: &mut Vec<u8>) -> Result {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"id\":");
        string(out, &self.id)?;
        out.extend_from_slice(b",\"sender\":");
        string(out, &self.sender)?;
        out.extend_from_slice(b",\"recipient\":");
        match self.recipient.as_slice() {
            [one] => string(out, one)?,
            many => value(out, many)?,
        }
        out.extend_from_slice(b",\"queue\":");
        string(out, &self.queue)?;
        out.extend_from_slice(b",\"site\":");
        string(out, &self.site)?;
        out.extend_from_slice(b",\"size\":");
        value(out, &self.size)?;
        out.extend_from_slice(b",\"response\":");
        response(out, &self.response)?;
        out.extend_from_slice(b",\"peer_address\":");
        value(out, &self.peer_address)?;
        out.extend_from_slice(b",\"timestamp\":");
        value(out, &self.timestamp)?;
        out.extend_from_slice(b",\"event_time\":");
        time(out, &self.event_time);
        out.extend_from_slice(b",\"created\":");
        value(out, &self.created)?;
        out.extend_from_slice(b",\"created_time\":");
        time(out, &self.created_time);
        out.extend_from_slice(b",\"num_attempts\":");
        value(out, &self.num_attempts)?;
        out.extend_from_slice(b",\"bounce_classification\":");
        string(out, &self.bounce_classification)?;
        out.extend_from_slice(b",\"egress_pool\":");
        opt_string(out, self.egress_pool.as_deref())?;
        out.extend_from_slice(b",\"egress_source\":");
        opt_string(out, self.egress_source.as_deref())?;
        out.extend_from_slice(b",\"source_address\":");
        value(out, &self.source_address)?;
        out.extend_from_slice(b",\"feedback_report\":");
        value(out, &self.feedback_report)?;
        out.extend_from_slice(b",\"meta\":");
        map(out, &self.meta)?;
        out.extend_from_slice(b",\"headers\":");
        map(out, &self.headers)?;
        out.extend_from_slice(b",\"delivery_protocol\":");
        opt_string(out, self.delivery_protocol.as_deref())?;
        out.extend_from_slice(b",\"reception_protocol\":");
        opt_string(out, self.reception_protocol.as_deref())?;
        out.extend_from_slice(b",\"nodeid\":");
        string(out, &self.nodeid)?;
        // Omitted when absent, as the struct's `skip_serializing_if` says.
        present_string(out, b",\"tls_cipher\":", self.tls_cipher.as_deref())?;
        present_string(
            out,
            b",\"tls_protocol_version\":",
            self.tls_protocol_version.as_deref(),
        )?;
        if let Some(v) = &self.tls_peer_subject_name {
            out.extend_from_slice(b",\"tls_peer_subject_name\":");
            value(out, v)?;
        }
        present_string(out, b",\"provider_name\":", self.provider_name.as_deref())?;
        present_string(out, b",\"session_id\":", self.session_id.as_deref())?;
        out.push(b'}');
        Ok(())
    }
}

fn response(out: &mut Vec<u8>, r: &Response) -> Result {
    out.extend_from_slice(b"{\"code\":");
    value(out, &r.code)?;
    out.extend_from_slice(b",\"enhanced_code\":");
    value(out, &r.enhanced_code)?;
    out.extend_from_slice(b",\"content\":");
    if r.content.contains(['\r', '\n']) {
        string(out, &normalize_content(&r.content))?;
    } else {
        string(out, &r.content)?;
    }
    out.extend_from_slice(b",\"command\":");
    opt_string(out, r.command.as_deref())?;
    out.push(b'}');
    Ok(())
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) -> Result {
    match s {
        Some(s) => string(out, s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// `key` (with its comma and colon) and the string, or nothing when absent.
fn present_string(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) -> Result {
    match s {
        Some(s) => {
            out.extend_from_slice(key);
            string(out, s)
        }
        None => Ok(()),
    }
}

fn map(out: &mut Vec<u8>, m: &Map<String, Value>) -> Result {
    if m.is_empty() {
        out.extend_from_slice(b"{}");
        Ok(())
    } else {
        value(out, m)
    }
}

/// RFC 3339 with nanoseconds and `Z`, as chrono's
/// `to_rfc3339_opts(SecondsFormat::Nanos, true)` writes it: digits and
/// `-:.TZ`, never escaped. Written digit by digit because chrono's
/// formatter cost about 750 instructions per timestamp, two per record.
fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    // Each accessor of a DateTime converts to local time first; the naive
    // UTC value is the same instant without that.
    let t = t.naive_utc();
    let (year, nanos) = (t.year(), t.nanosecond());
    // Outside four-digit years chrono adds a sign, and a leap second shows
    // as second 60: rare enough to leave to chrono.
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        out.push(b'"');
        let t = t.and_utc().to_rfc3339_opts(SecondsFormat::Nanos, true);
        out.extend_from_slice(t.as_bytes());
        out.push(b'"');
        return;
    }
    let mut buf = *b"\"0000-00-00T00:00:00.000000000Z\"";
    digits(&mut buf[1..5], year as u32);
    digits(&mut buf[6..8], t.month());
    digits(&mut buf[9..11], t.day());
    digits(&mut buf[12..14], t.hour());
    digits(&mut buf[15..17], t.minute());
    digits(&mut buf[18..20], t.second());
    digits(&mut buf[21..30], nanos);
    out.extend_from_slice(&buf);
}

/// `n` in decimal, right-aligned in `dst`, which is already zero-filled.
fn digits(dst: &mut [u8], mut n: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result {
    serde_json::to_writer(out, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;
    use crate::record::{EnhancedCode, PeerAddress};
    use serde_json::json;

    fn assert_same_as_serde(r: &LogRecord) {
        let mut want = serde_json::to_vec(r).unwrap();
        want.push(b'\n');
        let got = r.to_json_line().unwrap();
        assert_eq!(
            String::from_utf8_lossy(got.line()),
            String::from_utf8_lossy(&want)
        );
    }

    #[test]
    fn a_typical_record_is_written_exactly_as_serde_json_writes_it() {
        assert_same_as_serde(&sample());
    }

    #[test]
    fn every_optional_field_and_every_string_needing_escapes_matches_serde_json() {
        let mut r = sample();
        r.id = "quote\" backslash\\ tab\t nul\u{0} del\u{7f} é 😀".into();
        r.sender = "<>".into();
        r.recipient = vec!["a@x".into(), "b\"@y".into()];
        r.response = Response {
            code: 451,
            enhanced_code: Some(EnhancedCode {
                class: 4,
                subject: 7,
                detail: 1,
            }),
            content: "line one\r\nline two\nthree".into(),
            command: Some("RCPT TO:<b@y>\r\n".into()),
        };
        r.peer_address = Some(PeerAddress {
            name: "mx\\1".into(),
            addr: "10.0.0.1".into(),
            is_secure: true,
        });
        r.source_address = Some(json!({"address": "10.0.0.2", "protocol": null}));
        r.feedback_report = Some(json!([1, "two"]));
        r.meta
            .insert("k\"ey".into(), json!({"nested": [true, 1.5, null]}));
        r.headers.insert("Subject".into(), json!("héllo\u{1}"));
        r.egress_pool = None;
        r.delivery_protocol = None;
        r.tls_cipher = Some("TLS_AES_128_GCM_SHA256".into());
        r.tls_protocol_version = Some("TLSv1_3".into());
        r.tls_peer_subject_name = Some(vec!["CN=mx".into(), "O=\"x\"".into()]);
        r.provider_name = Some("provider".into());
        r.session_id = None;
        assert_same_as_serde(&r);
        r.recipient.clear();
        r.peer_address = None;
        r.response.enhanced_code = None;
        r.response.command = None;
        assert_same_as_serde(&r);
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_writes_them() {
        use chrono::TimeZone;
        let mut stamps: Vec<DateTime<Utc>> = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1_767_225_600, 123_456_789).unwrap(),
            Utc.timestamp_opt(951_782_400, 1).unwrap(), // 2000-02-29
            Utc.timestamp_opt(253_402_300_799, 999_999_999).unwrap(), // 9999-12-31
            Utc.timestamp_opt(253_402_300_800, 0).unwrap(), // year 10000
            Utc.timestamp_opt(-62_167_219_200, 5).unwrap(), // year 0
            Utc.timestamp_opt(-62_167_219_201, 5).unwrap(), // year -1
            // A leap second: chrono keeps it as nanoseconds past 10^9.
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        // A spread of ordinary instants over two centuries.
        let mut x: i64 = 1;
        for _ in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let secs = (x >> 1).rem_euclid(6_311_390_400) - 1_000_000_000;
            let nanos = (x as u64 >> 33) as u32 % 1_000_000_000;
            stamps.push(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        for t in stamps {
            let mut got = Vec::new();
            time(&mut got, &t);
            let want = format!("\"{}\"", t.to_rfc3339_opts(SecondsFormat::Nanos, true));
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
    }
}
