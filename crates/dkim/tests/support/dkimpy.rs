//! Verifying DKIM signatures with an independent implementation: dkimpy, Debian's
//! `python3-dkim` (installed by `./scripts/services`). The key records come from files the
//! caller names instead of DNS, so the check runs offline. Shared by the unit tests of
//! `hermod-dkim` and the end-to-end test in `crates/hermod/tests/dkim.rs` (`#[path]`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Debian's interpreter, which sees the packaged module (a pyenv `python3` may not).
const PYTHON: &str = "/usr/bin/python3";

const VERIFY: &str = r#"
import sys
try:
    import dkim
except ImportError as e:
    print(f"dkimpy is not installed ({e})", file=sys.stderr)
    sys.exit(4)
records = {}
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    records[name.encode() + b"."] = open(path, "rb").read().strip()
def dnsfunc(name, timeout=5):
    return records.get(name)
message = sys.stdin.buffer.read()
count = sum(1 for name, _ in dkim.DKIM(message).headers if name.lower() == b"dkim-signature")
if count == 0:
    print("no DKIM-Signature field", file=sys.stderr)
    sys.exit(3)
for i in range(count):
    try:
        ok = dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        print(f"signature {i}: {e}", file=sys.stderr)
        ok = False
    if not ok:
        sys.exit(3)
sys.exit(0)
"#;

/// Whether `message` has a DKIM-Signature field and dkimpy verifies every one of them. `records` maps `<selector>._domainkey.<domain>` to a file
/// holding its TXT record. Panics, saying how to install it, when dkimpy is missing.
pub fn verifies(message: &[u8], records: &[(&str, &Path)]) -> bool {
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(VERIFY);
    for (name, path) in records {
        cmd.arg(format!("{name}={}", path.display()));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {PYTHON} ({e}); run ./scripts/services to install python3-dkim")
        });
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(message)
            .expect("writing the message to dkimpy");
    }
    let out = child.wait_with_output().expect("waiting for dkimpy");
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!(
            "dkimpy could not check the message ({}): {}\nrun ./scripts/services to install \
             python3-dkim",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
