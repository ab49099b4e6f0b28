//! The checks every broker-refusal test makes: a refused publish is a retry
//! that names the reason, never a loss, and no secret reaches Hermod's output.

use std::collections::HashSet;
use std::time::Duration;

use super::{read_log_lines, records_of, smtp, summarize, unique, Server};

/// Send two messages to `rcpt`, wait until each has failed `attempts` times,
/// and check that every failure is transient (4xx) and its text contains
/// each of `reasons` (`a|b`: either); that nothing was delivered or bounced;
/// and that Hermod still accepts mail. Returns the refused messages' ids.
pub async fn assert_refused_transiently(
    server: &Server,
    rcpt: &str,
    reasons: &[&str],
    attempts: usize,
    wait: Duration,
) -> HashSet<String> {
    let sent = smtp::send_messages(server.smtp_addr(), rcpt, &unique("refused"), 2, 1).await;
    let ids: HashSet<String> = sent.into_iter().map(|s| s.id).collect();
    let records = server
        .wait_for_records(wait, "TransientFailures", |r| {
            records_of(r, "TransientFailure", &ids).len() >= attempts * ids.len()
        })
        .await;
    let failures = records_of(&records, "TransientFailure", &ids);
    if let Some(first) = failures.first() {
        eprintln!("first failure: {}", summarize(first));
    }
    for r in failures {
        let content = r["response"]["content"].as_str().unwrap_or_default();
        for reason in reasons {
            assert!(
                reason
                    .split('|')
                    .any(|alternative| content.contains(alternative)),
                "the failure must name {reason:?}: {}",
                summarize(r)
            );
        }
        let code = r["response"]["code"].as_u64().unwrap_or_default();
        assert!(
            (400..500).contains(&code),
            "not transient: {}",
            summarize(r)
        );
    }
    let finals: Vec<String> = records
        .iter()
        .filter(|r| r["type"] == "Delivery" || r["type"] == "Bounce")
        .filter(|r| r["id"].as_str().is_some_and(|id| ids.contains(id)))
        .map(summarize)
        .collect();
    assert!(
        finals.is_empty(),
        "refused messages must stay queued: {finals:?}"
    );
    let again = smtp::send_messages(server.smtp_addr(), rcpt, &unique("after"), 1, 1).await;
    assert_eq!(
        again.len(),
        1,
        "Hermod must keep accepting mail; stderr:\n{}",
        server.stderr_tail()
    );
    ids
}

/// No secret in Hermod's stderr or local log, both of which must have
/// something in them. A PEM private key is searched for line by line.
pub fn assert_no_secret(server: &Server, secrets: &[&str]) {
    let outputs = [
        ("stderr", server.stderr()),
        ("local log", read_log_lines(&server.log_dir()).join("\n")),
    ];
    for (what, text) in &outputs {
        assert!(
            !text.is_empty(),
            "Hermod's {what} is empty: nothing was searched"
        );
        for secret in secrets {
            let needles: Vec<&str> = if secret.contains("PRIVATE KEY") {
                secret
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .collect()
            } else {
                vec![secret]
            };
            for needle in needles {
                assert!(
                    !text.contains(needle),
                    "a secret ({} characters) appears in Hermod's {what}",
                    needle.len()
                );
            }
        }
    }
}
