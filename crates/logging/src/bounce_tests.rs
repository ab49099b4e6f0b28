//! Tests of the bounce classifier: rules files, match order, record types.

use super::*;
use crate::record::EnhancedCode;

const IANA_LIKE: &str = r#"
[rules]
InvalidRecipient = [
  "^(451|550) [45]\\.1\\.[1234] ",
]
QuotaIssues = [
  "^552 [45]\\.2\\.2 ",
]
"#;

fn response(code: u16, enhanced: Option<(u8, u16, u16)>, content: &str) -> Response {
    let enhanced = enhanced.map(|(class, subject, detail)| EnhancedCode {
        class,
        subject,
        detail,
    });
    Response::new(code, enhanced, content)
}

fn toml(text: &str) -> BounceClassifier {
    let mut b = ClassifierBuilder::new();
    b.add_toml(Path::new("rules.toml"), text).unwrap();
    b.build().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_rules_file_classifies_a_550_5_1_1_response_as_its_label() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rules.toml", IANA_LIKE);
    let c = BounceClassifier::from_files([&path]).unwrap();
    let r = response(550, Some((5, 1, 1)), "no such user");
    assert_eq!(single_line(&r), "550 5.1.1 no such user");
    assert_eq!(c.classify_response(&r), "InvalidRecipient");
    let full = response(552, Some((5, 2, 2)), "mailbox full");
    assert_eq!(c.classify_response(&full), "QuotaIssues");
    let other = response(554, Some((5, 7, 1)), "rejected");
    assert_eq!(c.classify_response(&other), UNCATEGORIZED);
}

#[test]
fn the_first_match_wins_in_file_then_label_then_pattern_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        dir.path(),
        "first.toml",
        "[rules]\nZeta = [\"woot\", \"aaa\"]\nAlpha = [\"woot\", \"aaa\", \"bbb\"]\n",
    );
    let second = write(
        dir.path(),
        "second.json",
        r#"{"rules": {"Later": ["bbb", "ccc"], "Earlier": ["ccc"]}}"#,
    );
    let c = BounceClassifier::from_files([&first, &second]).unwrap();
    // Labels keep their order in the file, not alphabetical order.
    assert_eq!(c.classify_line("woot"), "Zeta");
    assert_eq!(c.classify_line("aaa"), "Zeta");
    // An earlier file wins over a later one.
    assert_eq!(c.classify_line("bbb"), "Alpha");
    // JSON objects keep their order too.
    assert_eq!(c.classify_line("ccc"), "Later");
    assert_eq!(c.classify_line("nothing"), UNCATEGORIZED);
}

#[test]
fn without_a_classifier_every_record_is_uncategorized() {
    let r = response(550, Some((5, 1, 1)), "no such user");
    for kind in RecordType::ALL {
        assert_eq!(classify_with(None, kind, &r), UNCATEGORIZED);
    }
}

#[test]
fn only_the_record_types_kumomta_classifies_get_a_label() {
    let c = toml(IANA_LIKE);
    let r = response(550, Some((5, 1, 1)), "no such user");
    let classified = [
        RecordType::Bounce,
        RecordType::TransientFailure,
        RecordType::Expiration,
        RecordType::AdminBounce,
        RecordType::Oob,
        RecordType::Feedback,
        RecordType::Rejection,
    ];
    for kind in RecordType::ALL {
        let want = if classified.contains(&kind) {
            "InvalidRecipient"
        } else {
            UNCATEGORIZED
        };
        assert_eq!(classify_with(Some(&c), kind, &r), want, "{kind}");
    }
}

#[test]
fn a_response_is_matched_as_one_line_without_line_breaks() {
    let c = toml("[rules]\nSpamBlock = [\"^554 blocked see https://x listed\"]\n");
    let r = Response {
        code: 554,
        enhanced_code: None,
        content: "blocked\r\nsee https://x\nlisted".into(),
        command: None,
    };
    assert_eq!(single_line(&r), "554 blocked see https://x listed");
    assert_eq!(c.classify_response(&r), "SpamBlock");
}

#[test]
fn labels_outside_the_predefined_set_are_used_as_written() {
    let c = toml("[rules]\nMyOwnLabel = [\"(?i)greylisted\"]\n");
    assert_eq!(c.classify_line("451 4.7.1 Greylisted"), "MyOwnLabel");
}

#[test]
fn a_bad_regex_error_names_the_file_line_label_and_pattern() {
    let mut b = ClassifierBuilder::new();
    b.add_toml(
        Path::new("/etc/rules.toml"),
        "[rules]\nGood = [\"^550 \"]\nBadDomain = [\n  \"ok\",\n  \"(unclosed\",\n]\n",
    )
    .unwrap();
    let e = b.build().unwrap_err().to_string();
    assert!(e.starts_with("/etc/rules.toml:5: rule BadDomain:"), "{e}");
    assert!(e.contains("\"(unclosed\": unclosed group"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn unreadable_malformed_or_misnamed_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = BounceClassifier::from_files([&missing]).unwrap_err();
    assert!(matches!(e, ClassifierError::Read { .. }), "{e}");
    assert!(e.to_string().contains("missing.toml"), "{e}");

    let bad = write(
        dir.path(),
        "bad.toml",
        "[rules]\nX = [\"a\"]\nX = [\"b\"]\n",
    );
    let e = BounceClassifier::from_files([&bad])
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml: invalid TOML: line 3"), "{e}");

    let no_rules = write(dir.path(), "empty.toml", "[domain]\nx = 1\n");
    let e = BounceClassifier::from_files([&no_rules])
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty.toml: missing the [rules] table"), "{e}");

    let not_list = write(dir.path(), "scalar.json", r#"{"rules": {"X": "a"}}"#);
    let e = BounceClassifier::from_files([&not_list])
        .unwrap_err()
        .to_string();
    assert!(e.contains("rule X must be an array of strings"), "{e}");

    let bad_json = write(dir.path(), "bad.json", "{\"rules\": ");
    let e = BounceClassifier::from_files([&bad_json])
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.json: invalid JSON"), "{e}");

    let yaml = write(dir.path(), "rules.yaml", "rules: {}");
    let e = BounceClassifier::from_files([&yaml])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must end in .toml or .json"), "{e}");
}

#[test]
fn tables_other_than_rules_are_ignored() {
    let c = toml("[meta]\nauthor = \"ops\"\n[rules]\nX = [\"^550 \"]\n");
    assert_eq!(c.classify_line("550 no"), "X");
}
