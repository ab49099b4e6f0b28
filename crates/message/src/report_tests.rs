use super::*;

const DSN: &[u8] = include_bytes!("../testdata/dsn.eml");
const ARF: &[u8] = include_bytes!("../testdata/arf.eml");

#[test]
fn a_dsn_gives_its_reporting_mta_and_only_failed_recipients() {
    let dsn = parse_dsn(DSN).expect("a DSN");
    assert_eq!(dsn.reporting_mta, "mx.example.net");
    assert_eq!(dsn.failed.len(), 1, "{dsn:?}");
    let r = &dsn.failed[0];
    assert_eq!(r.recipient, "Nobody@Example.net");
    assert_eq!(r.status, (5, 1, 1));
    assert_eq!(r.code, 550);
    assert_eq!(
        r.text,
        "5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"
    );
    assert_eq!(
        r.last_attempt.map(|d| d.to_rfc3339()),
        Some("2026-12-01T10:00:05+00:00".to_string())
    );
}

#[test]
fn an_arf_report_is_not_a_dsn_and_a_dsn_is_not_an_arf_report() {
    assert!(parse_dsn(ARF).is_none());
    assert!(parse_arf(DSN).is_none());
    let plain = b"Subject: hi\r\n\r\nhello\r\n";
    assert!(parse_dsn(plain).is_none() && parse_arf(plain).is_none());
}

#[test]
fn an_arf_report_gives_kumomtas_feedback_report_fields() {
    let r = parse_arf(ARF).expect("an ARF report");
    assert_eq!(r["feedback_type"], "abuse");
    assert_eq!(r["user_agent"], "SomeGenerator/1.0");
    assert_eq!(r["version"], "1");
    assert_eq!(r["original_mail_from"], "<somesender@example.net>");
    assert_eq!(r["original_rcpto_to"], json!(["<user@example.com>"]));
    assert_eq!(r["arrival_date"], "2005-03-08T18:00:00Z");
    assert_eq!(
        r["reporting_mta"],
        json!({"mta_type": "dns", "name": "mail.example.com"})
    );
    assert_eq!(r["source_ip"], "192.0.2.1");
    assert_eq!(
        r["authentication_results"],
        json!(["mail.example.com; spf=fail smtp.mail=somesender@example.com"])
    );
    assert_eq!(r["reported_domain"], json!(["example.net"]));
    assert_eq!(
        r["reported_uri"],
        json!([
            "http://example.net/earn_money.html",
            "mailto:user@example.com"
        ])
    );
    assert_eq!(
        r["extensions"],
        json!({"removal-recipient": ["user@example.com"]})
    );
    assert_eq!(r["incidents"], Value::Null);
    assert!(r["original_message"]
        .as_str()
        .is_some_and(|m| m.starts_with("From: <somesender@example.net>\n")));
    assert_eq!(
        r["supplemental_trace"],
        json!({"recipient": "test@example.com"})
    );
}
