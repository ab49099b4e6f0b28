//! A JSON value with its line ending, as a serialiser wrote it: a primitive of the log-hook
//! fast path, which is driven from crates/queue/src/hooks/mod.rs.

use bytes::Bytes;

/// One JSON value followed by `\n`, in one shared buffer: how a log record
/// travels as a log line and as a hook message's data and `log_record` meta.
///
/// Only a serialiser makes one (a writer whose output tests compare with
/// serde_json's), so its text is valid JSON and the spool
/// stores it without parsing it again: checking each hook message's record
/// cost about as much as writing it to the spool.
#[derive(Debug, Clone)]
pub struct JsonLine(Bytes);

impl JsonLine {
    /// Wrap what `write` appends to a buffer of `capacity` bytes: one JSON
    /// value, which the caller's tests prove matches serde_json's output
    /// (debug builds check that it parses). The newline is added here.
    pub fn from_writer<E>(
        capacity: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut out = Vec::with_capacity(capacity);
        write(&mut out)?;
        debug_assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok(),
            "JsonLine::from_writer was given invalid JSON: {}",
            String::from_utf8_lossy(&out)
        );
        out.push(b'\n');
        Ok(Self(Bytes::from(out)))
    }

    /// The whole line, newline included.
    pub fn line(&self) -> &Bytes {
        &self.0
    }

    /// The JSON text without its newline, sharing the line's buffer.
    pub fn json(&self) -> Bytes {
        self.0.slice(..self.0.len() - 1)
    }
}

/// Append `s` as a JSON string, byte for byte as serde_json writes it.
/// serde_json escapes exactly `"`, `\` and bytes below 0x20, one byte at a
/// time; nearly every string in a record or spool entry has none of them,
/// and such a string is copied as it is.
#[inline]
pub fn write_json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // Folded without an early exit so that the compiler vectorises it.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_written_exactly_as_serde_json_writes_them() {
        let samples = [
            "",
            "plain@example.com",
            "quote \" and backslash \\",
            "control \u{1} \t \r\n \u{1f}",
            "unicode é ✉ \u{7f} \u{2028}",
            "/slash/ is not escaped",
        ];
        for s in samples {
            let mut got = Vec::new();
            write_json_str(&mut got, s).unwrap();
            assert_eq!(got, serde_json::to_vec(s).unwrap(), "for {s:?}");
        }
    }

    #[test]
    fn a_json_line_is_the_compact_value_and_a_newline_in_one_buffer() {
        let value = serde_json::json!({"a": [1, "x"]});
        let l = JsonLine::from_writer(4, |out| serde_json::to_writer(out, &value)).unwrap();
        assert_eq!(&l.line()[..], b"{\"a\":[1,\"x\"]}\n");
        assert_eq!(&l.json()[..], b"{\"a\":[1,\"x\"]}");
        assert_eq!(l.json().as_ptr(), l.line().as_ptr());
    }
}
