mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hermod_logging::{
    HookPermit, HookSink, LocalLogConfig, LogError, LogHookConfig, LogRecord, Logger,
    PerRecordConfig, RecordType,
};
use hermod_message::Message;
use parking_lot::Mutex;
use serde_json::json;

#[derive(Default)]
struct Collect(Mutex<Vec<(String, Message)>>);

impl HookSink for Collect {
    fn submit(&self, hook_name: &str, _: bool, msg: Message, _permit: HookPermit) {
        self.0.lock().push((hook_name.to_string(), msg));
    }
}

fn hook(name: &str) -> LogHookConfig {
    let mut h = LogHookConfig::new(name);
    h.meta = vec!["x_tenant".into()];
    h
}

#[tokio::test]
async fn a_delivery_record_becomes_a_hook_message_with_the_json_line_as_data() {
    let sink = Arc::new(Collect::default());
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![],
        vec![hook("webhook")],
        Some(sink.clone()),
    )
    .unwrap();
    let original = message("ESMTP");
    log.log(event(RecordType::Delivery, original.clone())).await;
    log.shutdown().await;

    let got = sink.0.lock();
    assert_eq!(got.len(), 1);
    let (name, msg) = &got[0];
    assert_eq!(name, "webhook");
    assert_ne!(msg.id(), original.id(), "hook messages get a new spool id");
    assert_eq!(msg.sender().to_string(), "app@example.com");
    assert_eq!(msg.recipients(), original.recipients());
    let data = msg.data().unwrap();
    assert_eq!(data.last(), Some(&b'\n'));
    let rec: LogRecord = serde_json::from_slice(&data).unwrap();
    assert_eq!(rec.kind, RecordType::Delivery);
    assert_eq!(rec.id, original.id().to_string());
    assert_eq!(msg.get_meta("reception_protocol"), Some(json!("LogRecord")));
    assert_eq!(
        msg.get_meta("x_tenant"),
        Some(json!("acme")),
        "selected meta is copied"
    );
    assert_eq!(msg.get_meta("queue"), None, "unselected meta is not copied");
    let as_meta = msg.get_meta("log_record").unwrap();
    assert_eq!(as_meta, serde_json::to_value(&rec).unwrap());
    assert_eq!(as_meta["meta"], json!({"x_tenant": "acme"}));
}

#[tokio::test]
async fn records_about_log_record_messages_go_to_local_logs_but_never_feed_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Collect::default());
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![LocalLogConfig::new(dir.path())],
        vec![hook("webhook")],
        Some(sink.clone()),
    )
    .unwrap();
    log.log(event(RecordType::Delivery, message("LogRecord")))
        .await;
    log.shutdown().await;
    assert!(sink.0.lock().is_empty());
    let recs = read_back(tail_opts(dir.path()));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reception_protocol.as_deref(), Some("LogRecord"));
}

#[tokio::test]
async fn each_hook_gets_its_own_message_and_honours_per_record() {
    let sink = Arc::new(Collect::default());
    let mut quiet = hook("quiet");
    quiet.per_record = HashMap::from([(
        RecordType::Reception,
        PerRecordConfig {
            enable: false,
            ..Default::default()
        },
    )]);
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![],
        vec![hook("a"), quiet],
        Some(sink.clone()),
    )
    .unwrap();
    log.log(event(RecordType::Reception, message("ESMTP")))
        .await;
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    log.shutdown().await;
    let got = sink.0.lock();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "a", "quiet"]);
    assert_ne!(got[1].1.id(), got[2].1.id());
}

#[tokio::test]
async fn a_record_without_recipients_is_dropped_from_hooks() {
    let sink = Arc::new(Collect::default());
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![],
        vec![hook("h")],
        Some(sink.clone()),
    )
    .unwrap();
    let msg = message("ESMTP");
    msg.set_recipients(vec![]);
    log.log(event(RecordType::Delivery, msg)).await;
    log.shutdown().await;
    assert!(sink.0.lock().is_empty());
}

#[test]
fn duplicate_hook_names_are_rejected_naming_the_hook() {
    let err = Logger::new(
        uuid::Uuid::new_v4(),
        vec![],
        vec![hook("dup"), hook("dup")],
        None,
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, LogError::DuplicateHook(ref n) if n == "dup"),
        "{err}"
    );
    assert!(err.to_string().contains("dup"));
}

/// A sink that holds each submission until released, to prove back-pressure.
struct Slow(Arc<tokio::sync::Semaphore>);

impl HookSink for Slow {
    fn submit(&self, _: &str, _: bool, _: Message, permit: HookPermit) {
        let gate = self.0.clone();
        tokio::spawn(async move {
            if let Ok(p) = gate.acquire().await {
                p.forget();
            }
            drop(permit);
        });
    }
}

#[tokio::test]
async fn hook_back_pressure_makes_logging_wait_and_shutdown_drains_in_flight_submissions() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut h = hook("h");
    h.back_pressure = 2;
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![],
        vec![h],
        Some(Arc::new(Slow(gate.clone()))),
    )
    .unwrap();
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    log.log(event(RecordType::Delivery, message("ESMTP"))).await;
    assert_eq!(log.queue_depth(), 2);
    let third = tokio::time::timeout(
        Duration::from_millis(200),
        log.log(event(RecordType::Delivery, message("ESMTP"))),
    );
    assert!(
        third.await.is_err(),
        "a third record must wait while two are in flight"
    );
    gate.add_permits(3);
    tokio::time::timeout(Duration::from_secs(5), log.shutdown())
        .await
        .unwrap();
    assert_eq!(log.queue_depth(), 0);
}

#[tokio::test]
async fn a_hook_template_becomes_the_message_data_and_the_record_stays_in_meta() {
    let sink = Arc::new(Collect::default());
    let mut h = hook("tpl");
    h.per_record.insert(
        RecordType::Delivery,
        PerRecordConfig {
            template: Some("{{ type }} {{ id }} {{ response.code }}".into()),
            ..Default::default()
        },
    );
    let log = Logger::new(uuid::Uuid::new_v4(), vec![], vec![h], Some(sink.clone())).unwrap();
    let original = message("ESMTP");
    log.log(event(RecordType::Delivery, original.clone())).await;
    log.log(event(RecordType::Reception, original.clone()))
        .await;
    log.shutdown().await;

    let got = sink.0.lock();
    assert_eq!(got.len(), 2);
    let delivery = got[0].1.data().unwrap();
    let record = got[0].1.get_meta("log_record").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&delivery),
        format!(
            "Delivery {} {}\n",
            original.id(),
            record["response"]["code"]
        )
    );
    let reception: LogRecord = serde_json::from_slice(&got[1].1.data().unwrap()).unwrap();
    assert_eq!(
        reception.kind,
        RecordType::Reception,
        "types without a template stay JSON"
    );
}

#[tokio::test]
async fn a_broken_hook_template_fails_logger_start_naming_the_type() {
    let mut h = hook("tpl");
    h.per_record.insert(
        RecordType::Bounce,
        PerRecordConfig {
            template: Some("{% if %}".into()),
            ..Default::default()
        },
    );
    let Err(e) = Logger::new(uuid::Uuid::new_v4(), vec![], vec![h], None) else {
        panic!("a broken template was accepted");
    };
    assert!(matches!(e, LogError::Config(_)));
    assert!(e.to_string().contains("per_record.Bounce.template"), "{e}");
}

/// Every line of every segment in `dir`, decompressed.
fn raw_lines(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for seg in segments(dir) {
        let bytes = zstd::decode_all(std::fs::File::open(seg).unwrap()).unwrap();
        out.extend(
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    out
}

#[tokio::test]
async fn local_logs_selecting_the_hooks_fields_write_its_exact_line_and_others_their_own() {
    let sink = Arc::new(Collect::default());
    let (same, other, templated) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut same_cfg = LocalLogConfig::new(same.path());
    same_cfg.meta = vec!["x_tenant".into()];
    let mut other_cfg = LocalLogConfig::new(other.path());
    other_cfg.headers = vec!["subject".into()];
    let mut tpl_cfg = LocalLogConfig::new(templated.path());
    tpl_cfg.meta = vec!["x_tenant".into()];
    tpl_cfg.per_record.insert(
        RecordType::Delivery,
        PerRecordConfig {
            template: Some("D {{ id }} {{ meta.x_tenant }}".into()),
            ..Default::default()
        },
    );
    let log = Logger::new(
        uuid::Uuid::new_v4(),
        vec![same_cfg, other_cfg, tpl_cfg],
        vec![hook("h")],
        Some(sink.clone()),
    )
    .unwrap();
    let original = message("ESMTP");
    log.log(event(RecordType::Reception, original.clone()))
        .await;
    log.log(event(RecordType::Delivery, original.clone())).await;
    log.shutdown().await;

    let got = sink.0.lock();
    let hook_lines: Vec<String> = got
        .iter()
        .map(|(_, m)| String::from_utf8(m.data().unwrap().to_vec()).unwrap())
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(hook_lines.len(), 2);
    assert_eq!(
        raw_lines(same.path()),
        hook_lines,
        "same selection: the hook's exact lines"
    );

    let others = read_back(tail_opts(other.path()));
    assert_eq!(others.len(), 2);
    for r in &others {
        assert!(
            r.meta.is_empty(),
            "this logger selects no meta: {:?}",
            r.meta
        );
        assert_eq!(r.headers.get("subject"), Some(&json!("hello")));
    }

    let tpl = raw_lines(templated.path());
    assert_eq!(tpl.len(), 2);
    assert_eq!(tpl[0], hook_lines[0], "Reception has no template: JSON");
    assert_eq!(tpl[1], format!("D {} acme", original.id()));
}
