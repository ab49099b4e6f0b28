//! The egress constructors in a real policy file: the delivery code reads what the handlers
//! return, and every refusal names the policy's `file:line`.

use hermod_policy::mlua::Value;
use hermod_policy::{
    CallError, EgressPathConfig, EgressPool, EgressSource, Engine, EngineOptions, SourceSelector,
    Tls,
};

fn write_policy(src: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, src).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

const POLICY: &str = r#"local kumo = require 'kumo'
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
  return kumo.make_egress_path { enable_tls = 'RequiredInsecure', connection_limit = 'local:4',
    max_message_rate = '3600/h', prohibited_hosts = {} }
end)
kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source { name = name, source_address = '10.0.0.1', remote_port = 2525 }
end)
kumo.on('get_egress_pool', function(name)
  return kumo.make_egress_pool { name = name, entries = { { name = 'ip-1', weight = 3 }, { name = 'ip-2' } } }
end)
kumo.on('unknown_key', function()
  return kumo.make_egress_path { conection_limit = 3 }
end)
kumo.on('not_supported', function()
  return kumo.make_egress_path { enable_dane = true }
end)
kumo.on('bad_cidr', function()
  return kumo.make_egress_path { prohibited_hosts = { '127.0.0.1/8' } }
end)
kumo.on('bad_rate', function()
  return kumo.make_egress_path { max_connection_rate = '10 per minute' }
end)
kumo.on('bad_tls', function()
  return kumo.make_egress_path { enable_tls = 'Mandatory' }
end)
kumo.on('proxy_source', function()
  return kumo.make_egress_source { name = 'p', socks5_proxy_server = '10.0.0.9:1080' }
end)
kumo.on('bad_pool', function()
  return kumo.make_egress_pool { name = 'p', entries = { { name = 'a', weigth = 2 } } }
end)
"#;

#[tokio::test]
async fn the_delivery_code_reads_each_constructor_from_its_event() {
    let (_dir, path) = write_policy(POLICY);
    let (engine, _) = Engine::start(EngineOptions::new(&path)).await.unwrap();
    let ctx = engine.context().await.unwrap();

    let v: Option<Value> = ctx
        .call(
            "get_egress_path_config",
            ("example.com", "ip-1", "mx.example.com"),
        )
        .await
        .unwrap();
    let Some(Value::UserData(ud)) = v else {
        panic!("{v:?}")
    };
    let c = ud.borrow::<EgressPathConfig>().unwrap();
    assert_eq!(c.enable_tls, Tls::RequiredInsecure);
    assert!(c.connection_limit.local && c.connection_limit.limit == 4);
    assert!(c.prohibited_hosts.is_empty());
    assert_eq!(c.max_message_rate.map(|r| r.limit), Some(3600));
    drop(c);

    let v: Option<Value> = ctx.call("get_egress_source", "ip-1").await.unwrap();
    let Some(Value::UserData(ud)) = v else {
        panic!("{v:?}")
    };
    let s = ud.borrow::<EgressSource>().unwrap();
    assert_eq!((s.name.as_str(), s.remote_port), ("ip-1", Some(2525)));
    drop(s);

    let v: Option<Value> = ctx.call("get_egress_pool", "warm").await.unwrap();
    let Some(Value::UserData(ud)) = v else {
        panic!("{v:?}")
    };
    let pool = ud.borrow::<EgressPool>().unwrap();
    let mut sel = SourceSelector::new(&pool);
    let picks: Vec<String> = (0..4)
        .map(|_| sel.next_source().unwrap().to_string())
        .collect();
    assert_eq!(picks, ["ip-1", "ip-1", "ip-2", "ip-1"]);
}

#[tokio::test]
async fn each_refusal_names_the_policy_line_and_the_problem() {
    let (_dir, path) = write_policy(POLICY);
    let (engine, _) = Engine::start(EngineOptions::new(&path)).await.unwrap();
    for (event, line, needle) in [
        ("unknown_key", 13, "unknown field `conection_limit`"),
        (
            "not_supported",
            16,
            "make_egress_path: key 'enable_dane' is not supported by Hermod yet",
        ),
        (
            "bad_cidr",
            19,
            "invalid CIDR \"127.0.0.1/8\": host bits are set; did you mean 127.0.0.0/8?",
        ),
        ("bad_rate", 22, "invalid rate \"10 per minute\""),
        ("bad_tls", 25, "unknown variant `Mandatory`"),
        (
            "proxy_source",
            28,
            "make_egress_source: key 'socks5_proxy_server' is not supported by Hermod yet",
        ),
        ("bad_pool", 31, "entries[1]: unknown field `weigth`"),
    ] {
        match engine.call::<Value>(event, ()).await {
            Err(CallError::Lua(text)) => {
                assert!(
                    text.starts_with(&format!("{path}:{line}: ")),
                    "{event}: {text}"
                );
                assert!(text.contains(needle), "{event}: {text}");
            }
            other => panic!("{event}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unsupported_key_in_init_stops_the_policy_at_its_line() {
    let (_dir, path) = write_policy(
        "kumo.on('init', function()\n  local p = kumo.make_egress_path { use_lmtp = true }\nend)\n",
    );
    let err = Engine::start(EngineOptions::new(&path))
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{path}:2: ")), "{msg}");
    assert!(
        msg.contains("make_egress_path: key 'use_lmtp' is not supported by Hermod yet"),
        "{msg}"
    );
}
