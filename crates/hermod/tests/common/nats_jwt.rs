//! NATS decentralised authentication for a private `nats-server`: an
//! operator, one account with JetStream enabled (and the system account
//! JetStream requires), and one user, as signed JWTs
//! (NATS's `ed25519-nkey` JWT flavour), plus the user's `.creds` file. This
//! is what the `nsc` tool produces; it is built here from nkeys so the test
//! needs nothing beyond the Rust registry.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

/// An operator, an account and a user, written below a directory.
pub struct NatsOperator {
    /// Lines for `nats.conf`: `operator`, `resolver` and its preload.
    pub server_config: String,
    /// The user's `.creds` file (JWT and nkey seed).
    pub creds_file: PathBuf,
    /// The file's text, for the test's own client.
    pub creds: String,
    /// The user's seed, which must never appear in Hermod's output.
    pub user_seed: String,
}

fn encode(claims: &Value, issuer: &nkeys::KeyPair) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("signing a NATS JWT");
    format!("{signing_input}.{}", b64.encode(signature))
}

fn claims(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> Value {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    json!({
        "jti": super::unique("JTI").to_uppercase().replace(['-', '_'], ""),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    })
}

impl NatsOperator {
    pub fn new(dir: &Path) -> NatsOperator {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        // JetStream needs a system account to start in operator mode.
        let system = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let operator_jwt = encode(
            &claims(
                &operator,
                &operator.public_key(),
                "hermod-test-operator",
                json!({ "type": "operator", "version": 2 }),
            ),
            &operator,
        );
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = encode(
            &claims(
                &operator,
                &account.public_key(),
                "HERMOD",
                json!({ "limits": unlimited, "type": "account", "version": 2 }),
            ),
            &operator,
        );
        let system_jwt = encode(
            &claims(
                &operator,
                &system.public_key(),
                "SYS",
                json!({ "type": "account", "version": 2 }),
            ),
            &operator,
        );
        let user_jwt = encode(
            &claims(
                &account,
                &user.public_key(),
                "hermod",
                json!({
                    "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                    "type": "user", "version": 2,
                }),
            ),
            &account,
        );
        let operator_file = dir.join("operator.jwt");
        std::fs::write(&operator_file, &operator_jwt).expect("writing operator.jwt");
        let user_seed = user.seed().expect("user seed");
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
        );
        let creds_file = dir.join("hermod.creds");
        std::fs::write(&creds_file, &creds).expect("writing the creds file");
        let server_config = format!(
            "operator: {:?}\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{ {}: {:?}, {}: {:?} }}\n",
            operator_file.display().to_string(),
            system.public_key(),
            account.public_key(),
            account_jwt,
            system.public_key(),
            system_jwt
        );
        NatsOperator {
            server_config,
            creds_file,
            creds,
            user_seed,
        }
    }
}
