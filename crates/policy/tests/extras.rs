//! The policy-extras helpers shipped in the binary (crates/policy/src/extras/), loaded by
//! real policy files with their data files.

use hermod_policy::mlua::Value;
use hermod_policy::{EgressPool, EgressSource, Engine};

mod support;

use support::{error_text, Policy};

const SOURCES_JSON: &str = r#"{
  "source": {
    "ip-1": { "source_address": "10.0.0.1", "ehlo_domain": "mta1.example.com" },
    "ip-2": { "source_address": "10.0.0.2" },
    "ip-3": { "source_address": "10.0.0.3", "remote_port": 2525 }
  },
  "pool": {
    "pool-1": { "ip-1": {} },
    "pool-2": { "ip-2": { "weight": 2 }, "ip-3": { "weight": 1 } }
  }
}
"#;

#[tokio::test]
async fn the_sources_helper_answers_sources_and_pools_from_its_files() {
    let p = Policy::new();
    let data = p.file("sources.json", SOURCES_JSON);
    let engine = p
        .start(&format!(
            "local sources = require 'policy-extras.sources'\nsources:setup {{ '{data}' }}\n"
        ))
        .await
        .expect("policy loads");
    let ctx = engine.context().await.expect("context");

    let v: Option<Value> = ctx.call("get_egress_source", "ip-3").await.expect("call");
    let Some(Value::UserData(ud)) = v else {
        panic!("{v:?}")
    };
    let s = ud.borrow::<EgressSource>().expect("an egress source");
    assert_eq!(s.name, "ip-3");
    assert_eq!(
        s.source_address.map(|a| a.to_string()).as_deref(),
        Some("10.0.0.3")
    );
    assert_eq!(s.remote_port, Some(2525));
    drop(s);

    let v: Option<Value> = ctx.call("get_egress_pool", "pool-2").await.expect("call");
    let Some(Value::UserData(ud)) = v else {
        panic!("{v:?}")
    };
    let pool = ud.borrow::<EgressPool>().expect("an egress pool");
    let entries: Vec<(String, u32)> = pool
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.weight))
        .collect();
    assert_eq!(entries, [("ip-2".to_string(), 2), ("ip-3".to_string(), 1)]);
    drop(pool);

    // Names the files do not define are declined, so the built-in defaults apply.
    let v: Option<Value> = ctx
        .call("get_egress_pool", "unspecified")
        .await
        .expect("call");
    assert!(matches!(v, None | Some(Value::Nil)), "{v:?}");
}

#[tokio::test]
async fn a_misspelt_source_option_is_refused_with_the_data_files_line() {
    let p = Policy::new();
    let data = p.file(
        "sources.json",
        "{\n  \"source\": {\n    \"ip-1\": {\n      \"source_adress\": \"10.0.0.1\"\n    }\n  }\n}\n",
    );
    let err = p
        .start(&format!(
            "local sources = require 'policy-extras.sources'\nsources:setup {{ '{data}' }}\n"
        ))
        .await
        .map(|_| ())
        .expect_err("a misspelt option must stop the policy");
    let text = error_text(err);
    assert!(
        text.contains(&format!("{data}:4: source 'ip-1'")),
        "the error must name the file and line of the key: {text}"
    );
    assert!(text.contains("source_adress"), "{text}");
}

#[tokio::test]
async fn a_pool_naming_an_undefined_source_is_refused_with_the_data_files_line() {
    let p = Policy::new();
    let data = p.file(
        "sources.json",
        "{\n  \"source\": { \"ip-1\": {} },\n  \"pool\": {\n    \"p\": {\n      \"ip-9\": {}\n    }\n  }\n}\n",
    );
    let err = p
        .start(&format!(
            "local sources = require 'policy-extras.sources'\nsources:setup {{ '{data}' }}\n"
        ))
        .await
        .map(|_| ())
        .expect_err("an undefined source must stop the policy");
    let text = error_text(err);
    assert!(
        text.contains(&format!("{data}:5: pool 'p' names source 'ip-9'")),
        "{text}"
    );
}

#[tokio::test]
async fn policy_utils_merges_splits_and_compares_as_documented() {
    let p = Policy::new();
    let engine = p
        .start(
            r#"
local utils = require 'policy-extras.policy_utils'
kumo.on('probe', function()
  local dest = { a = 1, t = { x = 1, y = 2 } }
  utils.merge_into({ b = 2, t = { z = 3 } }, dest)
  utils.assert_eq(dest, { a = 1, b = 2, t = { z = 3 } })
  local deep = { t = { x = 1, y = 2 } }
  utils.recursive_merge_into({ t = { y = 5, z = 3 } }, deep)
  utils.assert_eq(deep, { t = { x = 1, y = 5, z = 3 } })
  local h, port = utils.split_ip_port '[::1]:2525'
  utils.assert_eq({ h, port }, { '::1', 2525 })
  h, port = utils.split_ip_port '10.0.0.1'
  utils.assert_eq({ h, port }, { '10.0.0.1' })
  assert(utils.table_contains({ 'a', 'b' }, 'b'))
  assert(utils.table_is_empty {})
  assert(utils.starts_with('policy-extras', 'policy') and utils.ends_with('init.lua', '.lua'))
  local ok, err = pcall(utils.assert_eq, { 1 }, { 2 }, 'differs')
  assert(not ok and tostring(err):find 'differs', tostring(err))
  return utils.dumps { b = { 1, 'two' }, a = true }
end)
"#,
        )
        .await
        .expect("policy loads");
    let dumped: Option<String> = engine.call("probe", ()).await.expect("probe runs");
    assert_eq!(
        dumped.as_deref(),
        Some("{\n  [\"a\"] = true,\n  [\"b\"] = {\n    [1] = 1,\n    [2] = \"two\",\n  },\n}")
    );
}

const QUEUES_JSON: &str = r#"{
  "scheduling_header": "X-Schedule",
  "tenant_header": "X-Tenant",
  "remove_tenant_header": true,
  "campaign_header": "X-Campaign",
  "default_tenant": "default-tenant",
  "tenant": {
    "default-tenant": { "egress_pool": "pool-1" },
    "mytenant": { "egress_pool": "pool-2", "max_age": "10 hours" },
    "locked": { "require_authz": ["alice"] }
  },
  "queue": {
    "default": { "max_age": "24 hours", "retry_interval": "20 mins" },
    "gmail.com": {
      "max_age": "22 hours",
      "retry_interval": "17 mins",
      "mytenant": {
        "max_retry_interval": "2 hours",
        "welcome": { "retry_interval": "5 mins" }
      }
    },
    "*.example.net": { "routing_domain": "[10.0.0.1]" }
  }
}
"#;

fn mail(to: &str, headers: &str) -> hermod_message::Message {
    let addr = |s: &str| hermod_message::EnvelopeAddress::parse(s).expect("address");
    hermod_message::Message::new(
        hermod_message::SpoolId::new(),
        addr("sender@example.com"),
        vec![addr(to)],
        Default::default(),
        format!("{headers}Subject: hi\r\n\r\nbody\r\n"),
    )
}

async fn queue_policy(p: &Policy) -> std::sync::Arc<Engine> {
    let data = p.file("queues.json", QUEUES_JSON);
    p.start(&format!(
        r#"
local queue_module = require 'policy-extras.queue'
local queue_helper = queue_module:setup {{ '{data}' }}
kumo.on('apply', function(msg) queue_helper:apply(msg) end)
kumo.on('config', function(domain, tenant, campaign)
  local c = queue_helper:resolve_config(domain, tenant, campaign)
  return kumo.json_encode(c)
end)
"#
    ))
    .await
    .expect("policy loads")
}

#[tokio::test]
async fn the_queue_helper_takes_tenant_and_campaign_from_headers_and_merges_settings() {
    let p = Policy::new();
    let engine = queue_policy(&p).await;

    let msg = mail(
        "someone@gmail.com",
        "X-Tenant: mytenant\r\nX-Campaign: welcome\r\n",
    );
    engine
        .call::<Value>("apply", msg.clone())
        .await
        .expect("apply");
    assert_eq!(msg.get_meta("tenant"), Some(serde_json::json!("mytenant")));
    assert_eq!(msg.get_meta("campaign"), Some(serde_json::json!("welcome")));
    assert!(
        msg.get_first_named_header_value("X-Tenant")
            .expect("headers parse")
            .is_none(),
        "remove_tenant_header removes it"
    );
    assert!(
        msg.get_first_named_header_value("X-Campaign")
            .expect("headers parse")
            .is_some(),
        "the campaign header stays without remove_campaign_header"
    );

    let config = |d: &str, t: Option<&str>, c: Option<&str>| {
        let engine = engine.clone();
        let (d, t, c) = (d.to_string(), t.map(String::from), c.map(String::from));
        async move {
            let text: Option<String> = engine.call("config", (d, t, c)).await.expect("config");
            serde_json::from_str::<serde_json::Value>(&text.expect("a config")).expect("json")
        }
    };
    // default < domain < tenant < domain+tenant < domain+tenant+campaign
    assert_eq!(
        config("gmail.com", Some("mytenant"), Some("welcome")).await,
        serde_json::json!({
            "max_age": "10 hours", "retry_interval": "5 mins",
            "max_retry_interval": "2 hours", "egress_pool": "pool-2"
        })
    );
    assert_eq!(
        config("yahoo.com", None, None).await,
        serde_json::json!({ "max_age": "24 hours", "retry_interval": "20 mins" })
    );

    // No header: the default tenant; a wildcard domain sets the routing domain.
    let msg = mail("someone@mx.example.net", "");
    engine
        .call::<Value>("apply", msg.clone())
        .await
        .expect("apply");
    assert_eq!(
        msg.get_meta("tenant"),
        Some(serde_json::json!("default-tenant"))
    );
    assert_eq!(
        msg.get_meta("routing_domain"),
        Some(serde_json::json!("[10.0.0.1]"))
    );
}

#[tokio::test]
async fn the_queue_helpers_scheduling_header_sets_the_scheduling_and_is_removed() {
    let p = Policy::new();
    let engine = queue_policy(&p).await;
    let msg = mail(
        "someone@gmail.com",
        "X-Schedule: {\"dow\":\"Mon,Wed\",\"tz\":\"America/Phoenix\",\"start\":\"09:00:00\",\"end\":\"17:00:00\"}\r\n",
    );
    engine
        .call::<Value>("apply", msg.clone())
        .await
        .expect("apply");
    let sched = msg.scheduling().expect("the header sets the scheduling");
    assert_eq!(
        serde_json::Value::Object(sched.to_json()),
        serde_json::json!({"dow": "Mon,Wed", "tz": "America/Phoenix", "start": "09:00:00", "end": "17:00:00"})
    );
    assert!(msg.due().is_some(), "the due time moves into the window");
    assert!(
        msg.get_first_named_header_value("X-Schedule")
            .expect("headers parse")
            .is_none(),
        "the helper removes the header"
    );
    let bad = mail("someone@gmail.com", "X-Schedule: {\"dow\":\"Mon\"}\r\n");
    let err = engine
        .call::<Value>("apply", bad)
        .await
        .expect_err("an incomplete window is an error");
    let text = err.to_string();
    assert!(
        text.contains(
            "a delivery window needs all of dow, tz, start and end; missing: tz, start, end"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_queue_helper_rejects_unknown_and_unauthorised_tenants() {
    let p = Policy::new();
    let engine = queue_policy(&p).await;
    for (headers, needle) in [
        (
            "X-Tenant: nobody\r\n",
            "tenant 'nobody' given by the 'X-Tenant' header is not defined",
        ),
        ("X-Tenant: locked\r\n", "tenant 'locked' requires SMTP AUTH"),
    ] {
        let err = engine
            .call::<Value>("apply", mail("a@gmail.com", headers))
            .await
            .expect_err("the message must be rejected");
        let text = err.to_string();
        assert!(text.contains(needle), "{text}");
        assert!(text.contains("500"), "{text}");
    }
}

#[tokio::test]
async fn the_queue_helper_answers_get_queue_config() {
    let p = Policy::new();
    let engine = queue_policy(&p).await;
    let ctx = engine.context().await.expect("context");
    let v: Option<Value> = ctx
        .call(
            "get_queue_config",
            ("gmail.com", "mytenant", Value::Nil, Value::Nil),
        )
        .await
        .expect("get_queue_config");
    let Some(Value::UserData(ud)) = v else {
        panic!("{v:?}")
    };
    let cfg = ud
        .borrow::<hermod_policy::queue_config::QueueConfig>()
        .expect("a queue config");
    assert_eq!(cfg.egress_pool, "pool-2");
    assert_eq!(cfg.max_age, std::time::Duration::from_secs(10 * 3600));
    assert_eq!(cfg.retry_interval, std::time::Duration::from_secs(17 * 60));
}

#[tokio::test]
async fn the_queue_helper_names_the_file_and_line_of_a_bad_key_or_value() {
    for (text, line, needle) in [
        (
            "{\n  \"queue\": {\n    \"gmail.com\": {\n      \"max_age\": \"forever\"\n    }\n  }\n}\n",
            4,
            "'max_age'",
        ),
        (
            "{\n  \"tenant\": {\n    \"t\": {\n      \"egres_pool\": \"p\"\n    }\n  }\n}\n",
            4,
            "tenant 't': unknown key 'egres_pool'",
        ),
        (
            "{\n  \"tenant_headr\": \"X-Tenant\"\n}\n",
            2,
            "unknown key 'tenant_headr'",
        ),
        (
            "{\n  \"tenant\": {\n    \"t\": {\n      \"overall_max_message_rate\": \"10/s\"\n    }\n  }\n}\n",
            4,
            "'overall_max_message_rate' needs a throttle shared by every queue of a tenant or campaign",
        ),
    ] {
        let p = Policy::new();
        let data = p.file("queues.json", text);
        let err = p
            .start(&format!(
                "local q = require 'policy-extras.queue'\nq:setup {{ '{data}' }}\n"
            ))
            .await
            .map(|_| ())
            .expect_err("a bad data file must stop the policy");
        let msg = error_text(err);
        assert!(msg.contains(&format!("{data}:{line}: ")), "{msg}");
        assert!(msg.contains(needle), "{msg}");
    }
}
