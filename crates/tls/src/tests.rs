use super::*;

fn pem_pair(host: &str) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

fn data(s: &str) -> KeySource {
    KeySource::Data {
        key_data: s.to_string(),
    }
}

#[test]
fn neither_given_generates_a_self_signed_certificate_for_the_hostname() {
    let (certs, _key) = load_certified_key(None, None, "mx.example").unwrap();
    assert_eq!(certs.len(), 1);
    // The DER holds the SAN dNSName bytes verbatim.
    let der: &[u8] = certs[0].as_ref();
    assert!(der.windows(10).any(|w| w == b"mx.example"));
    assert!(server_config(None, None, "mx.example", &[]).is_ok());
}

#[test]
fn pem_files_given_by_path_load() {
    let (cert, key) = pem_pair("files.example");
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let c = KeySource::Path(cert_path.display().to_string());
    let k = KeySource::Path(key_path.display().to_string());
    let (certs, loaded) = load_certified_key(Some(&c), Some(&k), "ignored").unwrap();
    assert_eq!(certs.len(), 1);
    assert!(matches!(loaded, PrivateKeyDer::Pkcs8(_)));
}

#[test]
fn inline_key_data_loads_and_builds_a_config_with_the_given_alpn() {
    let (cert, key) = pem_pair("inline.example");
    let cfg = server_config(
        Some(&data(&cert)),
        Some(&data(&key)),
        "ignored",
        &[b"http/1.1"],
    )
    .unwrap();
    assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
}

#[test]
fn only_one_of_certificate_and_key_is_an_error() {
    let (cert, key) = pem_pair("one.example");
    let e = load_certified_key(Some(&data(&cert)), None, "h").unwrap_err();
    assert_eq!(
        e.to_string(),
        "tls_certificate and tls_private_key must be given together"
    );
    let e = load_certified_key(None, Some(&data(&key)), "h").unwrap_err();
    assert!(matches!(e, TlsError::Unpaired), "{e}");
}

#[test]
fn garbage_certificate_pem_is_reported_under_tls_certificate() {
    let (_, key) = pem_pair("garbage.example");
    let e = load_certified_key(Some(&data("not a pem")), Some(&data(&key)), "h").unwrap_err();
    assert_eq!(
        e.to_string(),
        "tls_certificate <inline key_data> holds no certificate"
    );
}

#[test]
fn garbage_private_key_pem_is_reported_under_tls_private_key() {
    let (cert, _) = pem_pair("garbage.example");
    let e = load_certified_key(Some(&data(&cert)), Some(&data("junk")), "h").unwrap_err();
    assert_eq!(
        e.to_string(),
        "tls_private_key <inline key_data> holds no private key"
    );
    let broken = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
    let e = load_certified_key(Some(&data(&cert)), Some(&data(broken)), "h").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("parsing tls_private_key <inline key_data>: "),
        "{e}"
    );
}

#[test]
fn unreadable_file_is_reported_with_key_and_path() {
    let missing = KeySource::Path("/nonexistent/hermod-tls/cert.pem".into());
    let e = load_certified_key(Some(&missing), Some(&missing), "h").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("reading tls_certificate /nonexistent/hermod-tls/cert.pem: "),
        "{e}"
    );
}

#[test]
fn certificate_and_key_of_different_pairs_are_a_mismatch() {
    let (cert, _) = pem_pair("a.example");
    let (_, key) = pem_pair("b.example");
    let e = server_config(Some(&data(&cert)), Some(&data(&key)), "h", &[]).unwrap_err();
    assert!(
        e.to_string().starts_with("certificate/key mismatch: "),
        "{e}"
    );
}
