//! The message content as it goes on the wire after DATA: every line ends
//! in CRLF, lines starting with a dot get a second one (RFC 5321 §4.5.2),
//! and the content ends with CRLF `.` CRLF.

/// The encoded content and the size to announce with `SIZE=`.
pub(crate) struct Encoded {
    /// Ready to write, final dot included.
    pub wire: Vec<u8>,
    /// RFC 1870 counts the message with CRLF line endings but without the
    /// transparency dots and the terminating sequence.
    pub size: u64,
}

pub(crate) fn encode(data: &[u8]) -> Encoded {
    // A few percent of room for added CRs and dots, so typical messages
    // need no reallocation.
    let mut wire = Vec::with_capacity(data.len() + data.len() / 32 + 5);
    let mut stuffed: u64 = 0;
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in data {
        if at_line_start && b == b'.' {
            wire.push(b'.');
            stuffed += 1;
        }
        if b == b'\n' && prev != b'\r' {
            // A bare LF: SMTP lines end in CRLF (RFC 5321 §2.3.8).
            wire.push(b'\r');
        }
        wire.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !wire.is_empty() && !wire.ends_with(b"\r\n") {
        wire.extend_from_slice(b"\r\n");
    }
    let size = wire.len() as u64 - stuffed;
    wire.extend_from_slice(b".\r\n");
    Encoded { wire, size }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(data: &[u8]) -> Vec<u8> {
        encode(data).wire
    }

    #[test]
    fn lines_starting_with_a_dot_are_stuffed() {
        assert_eq!(wire(b".a\r\n..b\r\nc.\r\n"), b"..a\r\n...b\r\nc.\r\n.\r\n");
        assert_eq!(wire(b"x\r\n.\r\ny\r\n"), b"x\r\n..\r\ny\r\n.\r\n");
    }

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_is_kept() {
        assert_eq!(wire(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(wire(b"a\n.b\n"), b"a\r\n..b\r\n.\r\n");
    }

    #[test]
    fn content_without_a_final_line_break_gets_one_before_the_dot() {
        assert_eq!(wire(b"abc"), b"abc\r\n.\r\n");
        assert_eq!(wire(b"abc\r"), b"abc\r\r\n.\r\n");
        assert_eq!(wire(b""), b".\r\n");
    }

    #[test]
    fn size_counts_crlf_lines_but_not_stuffing_or_the_final_dot() {
        let e = encode(b".a\nb");
        assert_eq!(e.wire, b"..a\r\nb\r\n.\r\n");
        assert_eq!(e.size, b".a\r\nb\r\n".len() as u64);
    }
}
