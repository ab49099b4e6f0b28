//! `kumo.dkim` as a policy uses it: signers built from Lua, `msg:dkim_sign`, and every
//! signature checked by dkimpy, an independent verifier (tests/support/dkimpy.rs).

use std::path::{Path, PathBuf};

use hermod_message::{EnvelopeAddress, Message, SpoolId};
use mlua::{Lua, Table};

#[path = "../tests/support/dkimpy.rs"]
mod dkimpy;

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\n\
To: bob@example.net\r\n\
Subject: DKIM test\r\n\
Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n\
Message-ID: <dkim-test@example.com>\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
this message is signed.\r\n";

fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// A Lua state with `kumo.dkim` registered and `msg` bound to a message holding `data`.
fn lua_with(data: &[u8]) -> (Lua, Message) {
    let lua = Lua::new();
    let kumo = lua.create_table().unwrap();
    let loaded: Table = lua
        .globals()
        .get::<Table>("package")
        .unwrap()
        .get("loaded")
        .unwrap();
    loaded.set("kumo", kumo.clone()).unwrap();
    lua.globals().set("kumo", kumo).unwrap();
    crate::register(&lua).unwrap();
    let msg = Message::new(
        SpoolId::new(),
        EnvelopeAddress::parse("alice@example.com").unwrap(),
        vec![EnvelopeAddress::parse("bob@example.net").unwrap()],
        serde_json::Map::new(),
        data.to_vec(),
    );
    lua.globals().set("msg", msg.clone()).unwrap();
    (lua, msg)
}

/// Run `code` as the chunk `@policy.lua` (so errors read `policy.lua:LINE: ...`).
fn run(lua: &Lua, code: &str) -> mlua::Result<()> {
    lua.load(code).set_name("@policy.lua").exec()
}

fn error_of(lua: &Lua, code: &str) -> String {
    let err = run(lua, code).expect_err("the policy must fail");
    hermod_policy::errors::describe(&err)
}

/// Sign MESSAGE with `params` (Lua table fields) and return the signed bytes.
fn sign(ctor: &str, params: &str) -> Vec<u8> {
    let (lua, msg) = lua_with(MESSAGE);
    run(
        &lua,
        &format!("msg:dkim_sign(kumo.dkim.{ctor} {{ domain = 'example.com', {params} }})"),
    )
    .unwrap_or_else(|e| panic!("{ctor} {{ {params} }}: {e}"));
    msg.data().unwrap().to_vec()
}

fn record(file: &str) -> PathBuf {
    key_path(file)
}

fn body_tampered(signed: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(signed).replace("is signed", "is forged");
    assert_ne!(s.as_bytes(), signed, "the tampering changed nothing");
    s.into_bytes()
}

#[test]
fn rsa_signatures_verify_with_dkimpy_in_every_canonicalization_and_fail_once_tampered() {
    let key = key_path("rsa.pem");
    let rec = record("rsa.dns.txt");
    for (ch, cb) in [
        ("Relaxed", "Relaxed"),
        ("Simple", "Simple"),
        ("Relaxed", "Simple"),
        ("Simple", "Relaxed"),
    ] {
        let signed = sign(
            "rsa_sha256_signer",
            &format!(
                "selector = 'rsa', headers = {{ 'From', 'To', 'Subject', 'Date' }}, \
                 key = '{}', header_canonicalization = '{ch}', body_canonicalization = '{cb}'",
                key.display()
            ),
        );
        let text = String::from_utf8_lossy(&signed);
        assert!(text.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=rsa; d=example.com; "));
        assert!(text.contains(&format!("c={}/{};", ch.to_lowercase(), cb.to_lowercase())));
        assert!(text.ends_with(std::str::from_utf8(MESSAGE).unwrap()));
        let records = [("rsa._domainkey.example.com", rec.as_path())];
        assert!(dkimpy::verifies(&signed, &records), "{ch}/{cb}:\n{text}");
        assert!(
            !dkimpy::verifies(&body_tampered(&signed), &records),
            "{ch}/{cb}: a changed body must fail"
        );
        let header_changed = text.replace("Subject: DKIM test", "Subject: DKIM best");
        assert!(
            !dkimpy::verifies(header_changed.as_bytes(), &records),
            "{ch}/{cb}: a changed signed header must fail"
        );
    }
}

#[test]
fn ed25519_signatures_verify_with_dkimpy_from_pem_and_der_keys_and_fail_once_tampered() {
    let rec = record("ed25519.dns.txt");
    let records = [("ed._domainkey.example.com", rec.as_path())];
    for file in ["ed25519.pem", "ed25519.der"] {
        let signed = sign(
            "ed25519_signer",
            &format!(
                "selector = 'ed', headers = {{ 'From', 'To', 'Subject' }}, key = '{}'",
                key_path(file).display()
            ),
        );
        let text = String::from_utf8_lossy(&signed);
        assert!(text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=ed; "));
        assert!(dkimpy::verifies(&signed, &records), "{file}:\n{text}");
        assert!(!dkimpy::verifies(&body_tampered(&signed), &records));
    }
}

#[test]
fn a_wrong_public_key_fails_verification() {
    // Signed with the 2048-bit key, checked against the 1024-bit key's record.
    let signed = sign(
        "rsa_sha256_signer",
        &format!(
            "selector = 'rsa', headers = {{ 'From' }}, key = '{}'",
            key_path("rsa.pem").display()
        ),
    );
    let wrong = record("rsa-1024.dns.txt");
    assert!(!dkimpy::verifies(
        &signed,
        &[("rsa._domainkey.example.com", wrong.as_path())]
    ));
}

#[test]
fn a_1024_bit_rsa_key_and_inline_pkcs8_key_data_sign_verifiably() {
    let signed = sign(
        "rsa_sha256_signer",
        &format!(
            "selector = 'old', headers = {{ 'From' }}, key = '{}'",
            key_path("rsa-1024.pem").display()
        ),
    );
    let rec = record("rsa-1024.dns.txt");
    assert!(dkimpy::verifies(
        &signed,
        &[("old._domainkey.example.com", rec.as_path())]
    ));

    let pem = std::fs::read_to_string(key_path("rsa-pkcs8.pem")).unwrap();
    let signed = sign(
        "rsa_sha256_signer",
        &format!("selector = 'rsa', headers = {{ 'From' }}, key = {{ key_data = [[{pem}]] }}"),
    );
    let rec = record("rsa.dns.txt");
    assert!(dkimpy::verifies(
        &signed,
        &[("rsa._domainkey.example.com", rec.as_path())]
    ));
}

#[test]
fn over_sign_signs_one_more_instance_so_an_added_header_breaks_the_signature() {
    let rec = record("rsa.dns.txt");
    let records = [("rsa._domainkey.example.com", rec.as_path())];
    let params = |over: bool| {
        format!(
            "selector = 'rsa', headers = {{ 'From', 'Subject', 'Cc' }}, over_sign = {over}, \
             key = '{}'",
            key_path("rsa.pem").display()
        )
    };
    let over = sign("rsa_sha256_signer", &params(true));
    let text = String::from_utf8_lossy(&over).to_string();
    let unfolded = text.replace("\r\n\t", "");
    assert!(
        unfolded.contains("h=Subject:From:From:Subject:Cc;"),
        "the instances bottom up, then From and Subject once more and the absent Cc once:\n{text}"
    );
    assert!(dkimpy::verifies(&over, &records));
    // A second Subject added above the signed one.
    let forge = |signed: &str| format!("Subject: Forged\r\n{signed}");
    assert!(!dkimpy::verifies(forge(&text).as_bytes(), &records));

    // Without over-signing the same addition goes unnoticed: what over_sign is for.
    let plain = String::from_utf8(sign("rsa_sha256_signer", &params(false))).unwrap();
    assert!(dkimpy::verifies(forge(&plain).as_bytes(), &records));
}

#[test]
fn optional_tags_are_written_and_still_verify() {
    let signed = sign(
        "rsa_sha256_signer",
        &format!(
            "selector = 'rsa', headers = {{ 'From' }}, key = '{}', expiration = 3600, \
             agent_user_identifier = 'alice@mail.example.com', reporting = true, \
             body_length = true, ttl = '10 minutes', atps = 'example.org', atpsh = 'Sha256'",
            key_path("rsa.pem").display()
        ),
    );
    let text = String::from_utf8_lossy(&signed).replace("\r\n\t", " ");
    let tag = |name: &str| -> Option<u64> {
        let at = text.find(&format!("; {name}="))? + name.len() + 3;
        text[at..].split(';').next()?.trim().parse().ok()
    };
    let (t, x) = (tag("t").unwrap(), tag("x").unwrap());
    assert_eq!(x - t, 3600, "{text}");
    assert_eq!(tag("l"), Some(39), "the body's length: {text}");
    assert!(text.contains("; i=alice@mail.example.com;"), "{text}");
    assert!(text.contains("; r=y;"), "{text}");
    assert!(text.contains("; atps=example.org; atpsh=sha256;"), "{text}");
    let rec = record("rsa.dns.txt");
    assert!(dkimpy::verifies(
        &signed,
        &[("rsa._domainkey.example.com", rec.as_path())]
    ));
}

#[test]
fn signing_marks_the_data_dirty_so_the_spool_stores_the_signed_message() {
    let (lua, msg) = lua_with(MESSAGE);
    msg.mark_stored(false);
    assert!(!msg.is_data_dirty());
    run(
        &lua,
        &format!(
            "local s = kumo.dkim.ed25519_signer {{ domain = 'example.com', selector = 'ed', \
             headers = {{ 'From' }}, key = '{}' }}\n\
             assert(tostring(s) == 'DkimSigner(ed25519-sha256 d=example.com s=ed)', tostring(s))\n\
             msg:dkim_sign(s)",
            key_path("ed25519.pem").display()
        ),
    )
    .unwrap();
    assert!(msg.is_data_dirty());
}

#[test]
fn unknown_parameters_are_refused_at_the_policy_line() {
    let (lua, _) = lua_with(MESSAGE);
    let e = error_of(
        &lua,
        "local x = 1\nkumo.dkim.rsa_sha256_signer { domain = 'example.com', selector = 's',\n\
         headers = { 'From' }, key = '/k.pem', atf = true }",
    );
    assert!(
        e.starts_with("policy.lua:2: kumo.dkim.rsa_sha256_signer: "),
        "{e}"
    );
    assert!(
        e.contains("unknown field `atf`, expected one of `domain`"),
        "{e}"
    );
    let e = error_of(
        &lua,
        "kumo.dkim.ed25519_signer { domain = 'example.com', selector = 's', headers = { 'From' }, \
         key = { vault_path = 'dkim' } }",
    );
    assert!(
        e.starts_with("policy.lua:1: kumo.dkim.ed25519_signer: "),
        "{e}"
    );
    assert!(e.contains("vault key sources are not supported"), "{e}");
}

#[test]
fn invalid_values_are_refused_naming_the_parameter() {
    let (lua, _) = lua_with(MESSAGE);
    let key = key_path("rsa.pem");
    let cases = [
        ("headers = { 'To' }", "headers must include 'From'"),
        ("headers = {}", "headers must list at least 'From'"),
        ("headers = { 'From', 'X:Y' }", "is not a header field name"),
        (
            "headers = { 'From' }, selector = ''",
            "selector must not be empty",
        ),
        (
            "headers = { 'From' }, domain = 'a;b'",
            "domain \"a;b\" contains",
        ),
        (
            "headers = { 'From' }, header_canonicalization = 'Loose'",
            "unknown variant `Loose`",
        ),
        ("headers = { 'From' }, ttl = 'soon'", "invalid duration"),
        (
            "headers = { 'From' }, expiration = 0",
            "expiration must be at least 1 second",
        ),
        (
            "headers = { 'From' }, expiration = 9999999999",
            "expiration must be at most",
        ),
        (
            "headers = { 'From' }, agent_user_identifier = 'x@other.org'",
            "must be in the signing domain",
        ),
        (
            "headers = { 'From' }, atpsh = 'Sha256'",
            "atpsh is only meaningful",
        ),
    ];
    for (extra, want) in cases {
        // Later keys of a Lua table constructor win, so `extra` overrides the defaults.
        let e = error_of(
            &lua,
            &format!(
                "kumo.dkim.rsa_sha256_signer {{ domain = 'example.com', selector = 's', \
                 key = '{}', {extra} }}",
                key.display()
            ),
        );
        assert!(
            e.starts_with("policy.lua:1: kumo.dkim.rsa_sha256_signer: "),
            "{extra}: {e}"
        );
        assert!(e.contains(want), "{extra}: expected {want:?} in {e}");
    }
}

#[test]
fn an_unusable_key_is_named_by_its_file_and_inline_data_is_never_shown() {
    let (lua, _) = lua_with(MESSAGE);
    let ctor = |key: &str| {
        format!(
            "kumo.dkim.rsa_sha256_signer {{ domain = 'example.com', selector = 's', \
             headers = {{ 'From' }}, key = {key} }}"
        )
    };
    let e = error_of(&lua, &ctor("'/nonexistent/dkim.pem'"));
    assert!(
        e.starts_with(
            "policy.lua:1: kumo.dkim.rsa_sha256_signer: cannot read key file \
             '/nonexistent/dkim.pem'"
        ),
        "{e}"
    );
    let not_a_key = key_path("rsa.dns.txt");
    let e = error_of(&lua, &ctor(&format!("'{}'", not_a_key.display())));
    assert!(
        e.contains(&format!("key '{}' is not usable: ", not_a_key.display())),
        "{e}"
    );
    let e = error_of(&lua, &ctor("{ key_data = 'TOPSECRET-not-a-key' }"));
    assert!(e.contains("key '<inline key_data>' is not usable: "), "{e}");
    assert!(!e.contains("TOPSECRET"), "{e}");
    let e = error_of(
        &lua,
        &ctor(&format!("'{}'", key_path("rsa-512.pem").display())),
    );
    assert!(e.contains("has 512 bits; DKIM needs at least 1024"), "{e}");
}

#[test]
fn signers_are_cached_so_the_key_is_read_once_per_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dkim.pem");
    std::fs::copy(key_path("rsa.pem"), &path).unwrap();
    let (lua, _) = lua_with(MESSAGE);
    let ctor = |selector: &str, ttl: &str| {
        format!(
            "return kumo.dkim.rsa_sha256_signer {{ domain = 'cache.example', \
             selector = '{selector}', headers = {{ 'From' }}, key = '{}', ttl = {ttl} }}",
            path.display()
        )
    };
    // A ttl of 0 keeps nothing: with the file gone, the next call fails to read it.
    run(&lua, &ctor("a", "0")).unwrap();
    std::fs::remove_file(&path).unwrap();
    let e = error_of(&lua, &ctor("a", "0"));
    assert!(e.contains("cannot read key file"), "{e}");

    std::fs::copy(key_path("rsa.pem"), &path).unwrap();
    run(&lua, &ctor("a", "3600")).unwrap();
    std::fs::remove_file(&path).unwrap();
    // The same parameters: the cached signer. Another selector: a new signer, the cached key.
    run(&lua, &ctor("a", "3600")).expect("the cached signer");
    run(&lua, &ctor("b", "3600")).expect("a new signer with the cached key");
}

#[test]
fn dkim_sign_refuses_anything_but_a_signer() {
    let (lua, msg) = lua_with(MESSAGE);
    let e = error_of(&lua, "msg:dkim_sign({ domain = 'example.com' })");
    assert!(
        e.contains("dkim_sign: expected a signer made by kumo.dkim.rsa_sha256_signer"),
        "{e}"
    );
    assert_eq!(msg.data().unwrap().as_ref(), MESSAGE, "unchanged");
}

#[test]
fn set_signing_threads_accepts_a_thread_count_and_refuses_nonsense() {
    let (lua, _) = lua_with(MESSAGE);
    run(&lua, "kumo.dkim.set_signing_threads(4)").unwrap();
    let e = error_of(&lua, "kumo.dkim.set_signing_threads(0)");
    assert!(
        e.starts_with("policy.lua:1: kumo.dkim.set_signing_threads: expected a positive"),
        "{e}"
    );
}
