//! The DATA reader (dot-unstuffing, line-ending policy, size and line
//! limits) driven over an in-memory stream whose read boundaries the fuzzer
//! chooses.
//!
//! Two checks per input:
//! - `raw`: arbitrary client bytes. Whatever the reader returns, a body it
//!   hands on obeys the configured limits and line-ending policy.
//! - `lines`: a body a correct client would send (lines dot-stuffed and
//!   CRLF-terminated, then `.` and a pipelined `NOOP`). The reader must give
//!   back exactly the original body, or the limit error a simple model
//!   predicts, and must stop at the terminator so `NOOP` is the next line.
#![no_main]

use std::sync::OnceLock;

use hermod_smtp::fuzzing::{read_data_then_line, DataOutcome, Line};
use hermod_smtp::InvalidLineEndings;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    chunk: u8,
    line_limit: u8,
    max_size: u16,
    endings: u8,
    raw: Vec<u8>,
    lines: Vec<Vec<u8>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime for the fuzz target")
    })
}

fn endings(n: u8) -> InvalidLineEndings {
    match n % 3 {
        0 => InvalidLineEndings::Deny,
        1 => InvalidLineEndings::Allow,
        _ => InvalidLineEndings::Fix,
    }
}

/// True when every CR is followed by LF and every LF preceded by CR.
fn strict_crlf(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && b[i - 1] == b'\r',
        _ => true,
    })
}

fuzz_target!(|input: Input| {
    // Small limits so that limit handling and chunk boundaries inside long
    // lines are reached quickly.
    let chunk = usize::from(input.chunk).max(1);
    // At least 4 so that the pipelined `NOOP` fits.
    let line_limit = usize::from(input.line_limit).max(4);
    let max_size = usize::from(input.max_size);
    let endings = endings(input.endings);

    // Arbitrary bytes.
    let (outcome, _) = runtime().block_on(read_data_then_line(
        &input.raw, chunk, line_limit, max_size, endings,
    ));
    if let Ok(DataOutcome::Message(body)) = outcome {
        assert!(body.len() <= max_size, "body over max_size");
        if endings != InvalidLineEndings::Allow {
            assert!(strict_crlf(&body), "bare CR/LF passed under {endings:?}");
        }
    }

    // A well-behaved client's body.
    let lines: Vec<Vec<u8>> = input
        .lines
        .into_iter()
        .map(|l| {
            l.into_iter()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect()
        })
        .collect();
    let mut wire = Vec::new();
    let mut body = Vec::new();
    let mut too_long = false;
    for l in &lines {
        let stuffed = l.first() == Some(&b'.');
        if stuffed {
            wire.push(b'.');
        }
        wire.extend_from_slice(l);
        wire.extend_from_slice(b"\r\n");
        body.extend_from_slice(l);
        body.extend_from_slice(b"\r\n");
        // The limit applies to the line as transmitted, stuffing included.
        too_long |= l.len() + usize::from(stuffed) > line_limit;
    }
    wire.extend_from_slice(b".\r\nNOOP\r\n");
    let expected = if too_long {
        DataOutcome::LineTooLong
    } else if body.len() > max_size {
        DataOutcome::TooBig
    } else {
        DataOutcome::Message(body)
    };
    let (outcome, next) = runtime().block_on(read_data_then_line(
        &wire, chunk, line_limit, max_size, endings,
    ));
    match outcome {
        Ok(got) => assert_eq!(got, expected, "wire {wire:?}"),
        Err(e) => panic!("reader missed the terminator ({e}); wire {wire:?}"),
    }
    match next {
        Some(Ok(Line::Text(l))) if &l[..] == b"NOOP" => {}
        other => panic!("next line after DATA is {other:?}, not NOOP; wire {wire:?}"),
    }
});
