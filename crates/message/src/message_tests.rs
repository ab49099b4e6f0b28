use super::*;
use serde_json::json;

/// A small message for unit tests of this crate.
pub(crate) fn msg() -> Message {
    Message::new(
        SpoolId::new(),
        EnvelopeAddress::parse("a@example.com").unwrap(),
        vec![EnvelopeAddress::parse("b@Nats").unwrap()],
        Map::new(),
        &b"Subject: x\r\n\r\nbody"[..],
    )
}

#[test]
fn clones_share_state() {
    let m = msg();
    let m2 = m.clone();
    m2.set_meta("queue", json!("q"));
    assert_eq!(m.get_meta("queue"), Some(json!("q")));
    assert_eq!(m.queue_name().unwrap(), "q");
}

#[test]
fn unload_keeps_dirty_data() {
    let m = msg();
    m.unload_data();
    assert!(
        m.is_data_loaded(),
        "dirty data must not be dropped before it is spooled"
    );
    m.mark_clean();
    m.unload_data();
    assert!(!m.is_data_loaded());
}

#[test]
fn meta_packed_while_waiting_reads_and_stores_back_the_same() {
    let m = msg();
    m.set_meta("queue", json!("q"));
    m.set_meta("n", json!(42));
    m.set_meta("nested", json!({"a": [1, 2.5, null, "x"]}));
    m.mark_clean();
    let before = m.meta();
    let record_before = m.spool_record();
    m.unload_data();
    assert!(m.inner.lock().packed.is_some(), "unloading packs meta");
    assert_eq!(m.queue_name().unwrap(), "q");
    assert_eq!(m.get_meta("n"), Some(json!(42)));
    assert_eq!(m.meta(), before, "same keys, values and order");
    assert_eq!(m.spool_record().meta, record_before.meta);
    m.unload_data();
    m.set_meta("n", json!(43));
    assert_eq!(m.get_meta("n"), Some(json!(43)));
    assert_eq!(m.get_meta("queue"), Some(json!("q")));
}
