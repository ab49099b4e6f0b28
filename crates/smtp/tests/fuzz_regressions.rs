//! Inputs found by the `smtp_data` fuzz target (`fuzz/`), replayed through
//! the real `Connection` DATA reader over an in-memory stream.

use hermod_smtp::fuzzing::{read_data_then_line, DataOutcome, Line};
use hermod_smtp::InvalidLineEndings;

/// An over-long DATA line whose CR arrives at the end of one read and whose
/// LF starts the next. The reader discards the partial line (CR included)
/// and then sees a bare LF, so it no longer treats the following `.` line
/// as following a CRLF: the terminator is missed, the pipelined `NOOP` is
/// swallowed as body, and a real session would wait for a terminator that
/// already went by until the client times out.
#[tokio::test]
async fn over_long_line_split_between_cr_and_lf_still_ends_at_the_terminator() {
    let limit = 10;
    // 13 bytes of content + CR = 14 bytes: more than limit + 2, so the
    // reader discards them before the LF arrives in the next read.
    let mut wire = b"xxxxxxxxxxxxx\r".to_vec();
    let chunk = wire.len();
    wire.extend_from_slice(b"\n.\r\nNOOP\r\n");

    let (outcome, next) =
        read_data_then_line(&wire, chunk, limit, 1 << 20, InvalidLineEndings::Deny).await;

    assert_eq!(outcome.ok(), Some(DataOutcome::LineTooLong));
    assert!(
        matches!(next, Some(Ok(Line::Text(ref l))) if &l[..] == b"NOOP"),
        "next line after DATA: {next:?}"
    );
}

/// The same bytes delivered in one read are handled correctly; this pins
/// the boundary as the cause.
#[tokio::test]
async fn over_long_line_in_one_read_ends_at_the_terminator() {
    let wire = b"xxxxxxxxxxxxx\r\n.\r\nNOOP\r\n";
    let (outcome, next) =
        read_data_then_line(wire, wire.len(), 10, 1 << 20, InvalidLineEndings::Deny).await;

    assert_eq!(outcome.ok(), Some(DataOutcome::LineTooLong));
    assert!(
        matches!(next, Some(Ok(Line::Text(ref l))) if &l[..] == b"NOOP"),
        "next line after DATA: {next:?}"
    );
}
