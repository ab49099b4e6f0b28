//! The exported forms of the process-wide metrics. Tests share one process
//! registry, so each uses its own label values.

use serde_json::json;

#[test]
fn received_counter_is_exported_in_text_without_total_suffix() {
    hermod_metrics::received("text_test_service").inc_by(3);
    let text = hermod_metrics::encode_text();
    assert!(
        text.contains("# TYPE total_messages_received counter"),
        "{text}"
    );
    assert!(
        text.contains("total_messages_received{service=\"text_test_service\"} 3"),
        "{text}"
    );
    assert!(!text.contains("total_messages_received_total"), "{text}");
}

#[test]
fn handles_for_the_same_label_share_one_value() {
    let a = hermod_metrics::delivered("shared_handle_service");
    let b = hermod_metrics::delivered("shared_handle_service");
    a.inc();
    b.inc();
    assert_eq!(hermod_metrics::delivered("shared_handle_service").get(), 2);
}

#[test]
fn json_nests_labelled_values_under_label_name() {
    hermod_metrics::transfail("json_test_service").inc_by(5);
    hermod_metrics::scheduled_count("json.example.com").set(7);
    let doc = hermod_metrics::encode_json();
    let t = &doc["total_messages_transfail"];
    assert_eq!(t["type"], "counter");
    assert!(t["help"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(t["value"]["service"]["json_test_service"], json!(5));
    assert_eq!(doc["scheduled_count"]["type"], "gauge");
    assert_eq!(
        doc["scheduled_count"]["value"]["queue"]["json.example.com"],
        json!(7)
    );
}

#[test]
fn unlabelled_metrics_have_plain_numeric_json_values() {
    hermod_metrics::spool_messages_written().inc_by(2);
    let doc = hermod_metrics::encode_json();
    assert!(doc["spool_messages_written"]["value"]
        .as_u64()
        .is_some_and(|n| n >= 2));
    assert_eq!(doc["lua_count"]["type"], "gauge");
    assert_eq!(doc["lua_load_count"]["type"], "counter");
}

#[test]
fn latency_histogram_exports_buckets_sum_and_count() {
    let h = hermod_metrics::lua_event_latency("histogram_test_event");
    h.observe(0.003);
    h.observe(20.0);
    let text = hermod_metrics::encode_text();
    assert!(
        text.contains("lua_event_latency_count{event=\"histogram_test_event\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("lua_event_latency_bucket{le=\"+Inf\",event=\"histogram_test_event\"} 2")
            || text
                .contains("lua_event_latency_bucket{event=\"histogram_test_event\",le=\"+Inf\"} 2"),
        "{text}"
    );
    let doc = hermod_metrics::encode_json();
    let v = &doc["lua_event_latency"]["value"]["event"]["histogram_test_event"];
    assert_eq!(v["count"], json!(2));
    assert_eq!(doc["lua_event_latency"]["type"], "histogram");
}

#[test]
fn removed_queue_is_no_longer_exported() {
    hermod_metrics::ready_count("smtp_client:gone.example.com").set(1);
    hermod_metrics::remove_ready_queue("smtp_client:gone.example.com");
    let doc = hermod_metrics::encode_json();
    assert!(doc["ready_count"]["value"]["service"]
        .get("smtp_client:gone.example.com")
        .is_none());
}

#[test]
fn label_values_with_quotes_are_escaped_in_text() {
    hermod_metrics::failed("odd\"name").inc();
    let text = hermod_metrics::encode_text();
    assert!(
        text.contains("total_messages_fail{service=\"odd\\\"name\"} 1"),
        "{text}"
    );
}

#[test]
fn registered_source_is_read_at_scrape_time() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LOADS: AtomicU64 = AtomicU64::new(0);
    hermod_metrics::set_source(hermod_metrics::Source::LuaLoadCount, || {
        LOADS.load(Ordering::Relaxed)
    });
    LOADS.store(41, Ordering::Relaxed);
    assert_eq!(
        hermod_metrics::encode_json()["lua_load_count"]["value"],
        json!(41)
    );
    LOADS.store(42, Ordering::Relaxed);
    assert!(hermod_metrics::encode_text().contains("\nlua_load_count 42\n"));
}
