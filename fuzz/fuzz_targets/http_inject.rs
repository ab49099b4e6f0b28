//! Injection API body → per-recipient message bytes, without Lua, spool or
//! network. Arbitrary bytes must be rejected or rendered without panicking,
//! and every rendered message must have CRLF line ends only and a
//! `MIME-Version` header.
#![no_main]

use hermod_http::fuzzing::render_inject;
use libfuzzer_sys::fuzz_target;

fn strict_crlf(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && b[i - 1] == b'\r',
        _ => true,
    })
}

fuzz_target!(|body: &[u8]| {
    let Ok(results) = render_inject(body) else {
        return;
    };
    for data in results.into_iter().flatten() {
        assert!(
            strict_crlf(&data),
            "bare CR/LF in {:?}",
            String::from_utf8_lossy(&data)
        );
        assert!(
            hermod_message::headers::get_first_named(&data, "MIME-Version").is_some(),
            "no MIME-Version in {:?}",
            String::from_utf8_lossy(&data)
        );
    }
});
