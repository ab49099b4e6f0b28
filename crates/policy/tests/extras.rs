//! The policy-extras helpers shipped in the binary (crates/policy/src/extras/), loaded by
//! real policy files with their data files.

use hermod_policy::mlua::Value;
use hermod_policy::{EgressPool, EgressSource, Engine, EngineOptions, PolicyError};

struct Policy {
    dir: tempfile::TempDir,
}

impl Policy {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    async fn start(&self, src: &str) -> Result<std::sync::Arc<Engine>, PolicyError> {
        let path = self.file("policy.lua", src);
        Engine::start(EngineOptions::new(&path))
            .await
            .map(|(e, _)| e)
    }
}

fn error_text(e: PolicyError) -> String {
    match e {
        PolicyError::Event { message, .. } => message,
        other => other.to_string(),
    }
}

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
