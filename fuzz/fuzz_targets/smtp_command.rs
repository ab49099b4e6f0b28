//! SMTP command-line parser: arbitrary bytes must never panic, every error
//! maps to a 501 reply, verbs are case-insensitive, and a parsed MAIL/RCPT
//! path survives being written back out in canonical form.
#![no_main]

use hermod_smtp::fuzzing::{parse_command, Command};
use libfuzzer_sys::fuzz_target;

/// Addresses that cannot be written inside `<...>` unchanged: a `>` ends
/// the path early and a leading `@` is read as a source route.
fn canonical_form_exists(addr: &str) -> bool {
    !addr.contains('>') && !addr.starts_with('@')
}

fuzz_target!(|line: &[u8]| {
    let parsed = parse_command(line);

    if let Err(e) = &parsed {
        let (code, text) = e.reply();
        assert_eq!(code, 501, "{e:?}");
        assert!(!text.is_empty() && !text.contains(['\r', '\n']), "{text:?}");
    }

    // Upper-casing the verb alone must not change the result.
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let mut upper = line.to_vec();
    upper[..verb_end].make_ascii_uppercase();
    assert_eq!(
        parse_command(&upper),
        parsed,
        "verb case changed the result"
    );

    match &parsed {
        Ok(Command::MailFrom { address, size }) if canonical_form_exists(address.email()) => {
            let mut again = format!("MAIL FROM:<{address}>");
            if let Some(n) = size {
                again.push_str(&format!(" SIZE={n}"));
            }
            assert_eq!(parse_command(again.as_bytes()), parsed, "{again:?}");
        }
        Ok(Command::RcptTo { address }) if canonical_form_exists(address.email()) => {
            let again = format!("RCPT TO:<{address}>");
            assert_eq!(parse_command(again.as_bytes()), parsed, "{again:?}");
        }
        Ok(Command::Ehlo(d) | Command::Helo(d)) => {
            assert!(
                !d.is_empty() && !d.contains(|c: char| c.is_ascii_whitespace()),
                "{d:?}"
            );
        }
        _ => {}
    }
});
