//! Header lookup and editing on arbitrary message bytes: nothing panics,
//! `get_first_named` agrees with `get_all_named`, `remove_all_named` leaves
//! no occurrence behind, and `append` adds exactly one findable occurrence
//! without touching the body.
#![no_main]

use hermod_message::headers::{append, get_all_named, get_first_named, prepend, remove_all_named};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    data: Vec<u8>,
    /// Looked up and removed as given (may be any string).
    name: String,
    /// Appended; restricted below to a plain token so that the expected
    /// lookup result is unambiguous.
    new_name: String,
    new_value: String,
    encode: bool,
}

fn token(s: &str, fallback: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    if t.is_empty() {
        fallback.to_string()
    } else {
        format!("X-{t}")
    }
}

/// Where `append` inserts: the blank line ending the header block.
fn header_end(data: &[u8]) -> Option<usize> {
    // The first empty line, whether it ends in LF or CRLF: "a\n\r\n" ends
    // the block at the CRLF, which a search for "\n\n" or "\r\n\r\n" misses.
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return Some(start);
        }
        start += rest.iter().position(|&b| b == b'\n')? + 1;
    }
    None
}

/// A header block made only of `name: value` fields and their folded
/// continuation lines (printable ASCII). On anything else the parser's idea
/// of where the header block ends may legitimately differ from `append`'s.
fn well_formed_header_block(data: &[u8]) -> bool {
    let Some(end) = header_end(data) else {
        return false;
    };
    let mut first = true;
    for line in data[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The split leaves one empty piece after the last LF.
            continue;
        }
        if !line.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
            return false;
        }
        let ok = if line[0] == b' ' || line[0] == b'\t' {
            !first
        } else {
            matches!(line.iter().position(|&b| b == b':'), Some(i) if i > 0
                && line[..i].iter().all(|&b| (33..127).contains(&b)))
        };
        if !ok {
            return false;
        }
        first = false;
    }
    true
}

fuzz_target!(|input: Input| {
    let data = &input.data;
    let name = &input.name;

    let all = get_all_named(data, name);
    assert_eq!(get_first_named(data, name), all.first().cloned());

    let removed = remove_all_named(data, name);
    assert!(removed.len() <= data.len());
    if all.is_empty() {
        assert_eq!(&removed, data, "nothing to remove but bytes changed");
    }
    assert!(
        get_all_named(&removed, name).is_empty(),
        "{name:?} still present after remove_all_named"
    );

    // Unchecked inputs: only must not panic.
    let _ = append(data, name, &input.new_value, input.encode);
    let _ = prepend(data, name, &input.new_value, input.encode);

    // A plain header appended to a message that has a header block.
    let new_name = token(&input.new_name, "X-Fuzz");
    let value: String = input
        .new_value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    let value = value.trim().to_string();
    let before = get_all_named(data, &new_name);
    let appended = append(data, &new_name, &value, false);
    assert_eq!(appended.is_ok(), header_end(data).is_some());
    if let (Ok(out), true) = (appended, well_formed_header_block(data)) {
        let after = get_all_named(&out, &new_name);
        assert_eq!(after.len(), before.len() + 1, "{new_name}: {value:?}");
        assert_eq!(after.last(), Some(&value), "{new_name}");
        // One contiguous insertion: the rest of the bytes are untouched.
        let prefix = out.iter().zip(data).take_while(|(a, b)| a == b).count();
        let suffix = out
            .iter()
            .rev()
            .zip(data.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            prefix + suffix >= data.len(),
            "append changed existing bytes"
        );
    }
});
