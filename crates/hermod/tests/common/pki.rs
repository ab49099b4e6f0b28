//! A throwaway certificate authority for the broker TLS tests: a CA, a
//! server certificate for `127.0.0.1`/`localhost` and a client certificate,
//! each written as PEM into a directory the test owns.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// PEM files of one CA and the two certificates it issued.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The private keys' PEM text (server, client), so tests can search
    /// outputs for it.
    pub key_texts: Vec<String>,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Hermod Tests");
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

impl Pki {
    /// A fresh CA named `label` and its certificates, written below `dir`
    /// as `<label>-ca.pem`, `<label>-server.pem`, ….
    pub fn new(dir: &Path, label: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name = name(&format!("Hermod test CA {label}"));
        let ca_cert = ca.self_signed(&ca_key).expect("self-signing the CA");
        let issuer = Issuer::from_params(&ca, &ca_key);

        let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name = name(cn);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let cert = params
                .signed_by(&key, &issuer)
                .expect("issuing a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key_pem) = leaf(
            "hermod-client",
            vec!["hermod-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write(dir, &format!("{label}-ca.pem"), &ca_cert.pem()),
            server_cert: write(dir, &format!("{label}-server.pem"), &server_pem),
            server_key: write(dir, &format!("{label}-server.key"), &server_key_pem),
            client_cert: write(dir, &format!("{label}-client.pem"), &client_pem),
            client_key: write(dir, &format!("{label}-client.key"), &client_key_pem),
            key_texts: vec![server_key_pem, client_key_pem],
        }
    }
}
