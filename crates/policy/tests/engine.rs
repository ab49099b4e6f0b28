//! The policy engine against real policy files.

use hermod_policy::mlua;

use std::sync::Arc;
use std::time::Duration;

use hermod_policy::{CallError, Engine, EngineOptions, PolicyError};

fn write_policy(src: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, src).unwrap();
    (dir, path)
}

async fn start(
    src: &str,
) -> Result<(Arc<Engine>, tempfile::TempDir, String), (PolicyError, String)> {
    let (dir, path) = write_policy(src);
    let p = path.display().to_string();
    match Engine::start(EngineOptions::new(&path)).await {
        Ok((e, _)) => Ok((e, dir, p)),
        Err(e) => Err((e, p)),
    }
}

#[tokio::test]
async fn a_global_set_in_init_is_visible_to_50_concurrent_handlers() {
    let (engine, _d, _) = start(
        r#"
        kumo.on('init', function() shared = { name = 'nats-client', n = 42 } end)
        kumo.on('probe', function(i) kumo.sleep(0.01); return shared.name .. ':' .. shared.n .. ':' .. i end)
        "#,
    )
    .await
    .map_err(|e| e.0)
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            engine.call::<String>("probe", i).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(
            t.await.unwrap().unwrap(),
            Some(format!("nats-client:42:{i}"))
        );
    }
    assert!(
        engine.spare_contexts() > 1,
        "concurrent calls must have used several contexts"
    );
}

#[tokio::test]
async fn init_runs_exactly_once_however_many_contexts_serve_calls() {
    // Each run of `init` appends one `x` to a file of this test's own directory.
    let counter = tempfile::tempdir().unwrap();
    let count_file = counter.path().join("init-count");
    let src = r#"
        kumo.on('init', function()
          local f = assert(io.open(COUNT_FILE, 'a')); f:write('x'); f:close()
        end)
        kumo.on('ping', function() kumo.sleep(0.01); return 'pong' end)
        "#
    .replace(
        "COUNT_FILE",
        &format!("{:?}", count_file.display().to_string()),
    );
    let (engine, _policy_dir, _) = start(&src).await.map_err(|e| e.0).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            engine.call::<String>("ping", ()).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().as_deref(), Some("pong"));
    }
    assert!(
        engine.spare_contexts() > 1,
        "concurrent calls must have used several contexts, or the count proves nothing"
    );
    let count = std::fs::read_to_string(&count_file).unwrap();
    assert_eq!(count, "x", "init ran {} times", count.len());
}

#[tokio::test]
async fn a_duplicate_single_event_names_both_locations() {
    let (err, path) = start("kumo.on('init', function() end)\n\nkumo.on('init', function() end)\n")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{path}:3")), "{msg}");
    assert!(msg.contains(&format!("{path}:1")), "{msg}");
}

#[tokio::test]
async fn a_syntax_error_names_file_and_line() {
    let (err, path) = start("kumo.on('init', function()\n  local x = = 1\nend)\n")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{path}:2")), "{msg}");
}

#[tokio::test]
async fn an_unknown_make_queue_config_key_names_file_line_and_key() {
    let (err, path) = start(
        "kumo.on('init', function()\n  kumo.make_queue_config { retry_intreval = '1m' }\nend)\n",
    )
    .await
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{path}:2")), "{msg}");
    assert!(msg.contains("retry_intreval"), "{msg}");
}

#[tokio::test]
async fn multiple_event_handlers_chain_until_one_returns_a_value() {
    let (engine, _d, _) = start(
        r#"
        kumo.on('get_queue_config', function(domain) if domain == 'a' then return 'first' end end)
        kumo.on('get_queue_config', function(domain) if domain == 'b' then return nil end end)
        kumo.on('get_queue_config', function(domain) return 'last' end)
        "#,
    )
    .await
    .map_err(|e| e.0)
    .unwrap();
    assert_eq!(
        engine
            .call::<String>("get_queue_config", "a")
            .await
            .unwrap(),
        Some("first".into())
    );
    // An explicit nil is a value: it ends the chain.
    assert_eq!(
        engine
            .call::<Option<String>>("get_queue_config", "b")
            .await
            .unwrap(),
        Some(None)
    );
    assert_eq!(
        engine
            .call::<String>("get_queue_config", "c")
            .await
            .unwrap(),
        Some("last".into())
    );
    assert_eq!(
        engine.call::<String>("no_such_event", ()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn kumo_reject_reaches_rust_with_its_code() {
    let (engine, _d, _) = start("kumo.on('x', function() kumo.reject(451, 'try later') end)")
        .await
        .map_err(|e| e.0)
        .unwrap();
    match engine.call::<mlua::Value>("x", ()).await {
        Err(CallError::Reject(r)) => {
            assert_eq!(r.code, 451);
            assert_eq!(r.message, "try later");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn runtime_errors_carry_file_and_line() {
    let (engine, _d, path) =
        start("kumo.on('x', function()\n  local t = nil\n  return t.field\nend)")
            .await
            .map_err(|e| e.0)
            .unwrap();
    match engine.call::<mlua::Value>("x", ()).await {
        Err(CallError::Lua(text)) => assert!(text.contains(&format!("{path}:3")), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn core_kumo_functions_work_and_bad_arguments_name_the_caller() {
    let (engine, _d, path) = start(
        r#"
        local kumo = require 'kumo'
        kumo.on('json', function()
          local t = kumo.json_parse('{"a": [1, 2], /* c */ "b": null, "c": {}} // trailing')
          assert(#t.a == 2 and t.b == nil)
          assert(kumo.json_encode(t.a) == '[1,2]')
          assert(kumo.serde.json_encode({}) == '{}')
          assert(kumo.json_encode_pretty({b = 1, a = 2}):find('"a": 2') ~= nil)
          kumo.log_info('hello', 1, true)
          kumo.sleep(0.01)
          return 'ok'
        end)
        kumo.on('bad_reject', function() kumo.reject('x') end)
        kumo.on('bad_json', function() return kumo.json_parse('{nope') end)
        kumo.on('bad_sleep', function() kumo.sleep('forever') end)
        kumo.on('bad_duration', function() return kumo.make_queue_config { max_age = 'forever' } end)
        kumo.on('late_on', function() kumo.on('y', function() end) end)
        kumo.on('side_effect', function() kumo.define_nothing() end)
        "#,
    )
    .await
    .map_err(|e| e.0)
    .unwrap();
    assert_eq!(
        engine.call::<String>("json", ()).await.unwrap(),
        Some("ok".into())
    );
    for (event, needle, line) in [
        ("bad_reject", "kumo.reject", 13),
        ("bad_json", "kumo.json_parse", 14),
        ("bad_sleep", "kumo.sleep", 15),
        ("bad_duration", "forever", 16),
        ("late_on", "must be called while the policy loads", 17),
    ] {
        match engine.call::<mlua::Value>(event, ()).await {
            Err(CallError::Lua(text)) => {
                assert!(text.contains(needle), "{event}: {text}");
                assert!(text.contains(&format!("{path}:{line}")), "{event}: {text}");
            }
            other => panic!("{event}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_time_limit() {
    let (_dir, path) = write_policy("kumo.on('spin', function() while true do end end)");
    let mut opts = EngineOptions::new(&path);
    opts.call_time_limit = Duration::from_millis(300);
    let (engine, _) = Engine::start(opts).await.unwrap();
    let started = std::time::Instant::now();
    match engine.call::<mlua::Value>("spin", ()).await {
        Err(CallError::Lua(text)) => assert!(text.contains("time limit"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn calls_on_reused_coroutines_keep_the_time_limit_and_their_own_arguments() {
    let (_dir, path) = write_policy(
        r#"
        kumo.on('echo', function(x) return x * 2 end)
        kumo.on('fail', function() error('boom') end)
        kumo.on('spin', function() while true do end end)
        "#,
    );
    let mut opts = EngineOptions::new(&path);
    opts.call_time_limit = Duration::from_millis(300);
    let (engine, _) = Engine::start(opts).await.unwrap();
    // Finished calls leave their coroutines for reuse; each later call must
    // still see only its own argument, and errors must not poison reuse.
    for i in 0..20 {
        assert_eq!(engine.call::<i64>("echo", i).await.unwrap(), Some(i * 2));
        if i % 5 == 0 {
            assert!(matches!(
                engine.call::<i64>("fail", ()).await,
                Err(CallError::Lua(_))
            ));
        }
    }
    match engine.call::<mlua::Value>("spin", ()).await {
        Err(CallError::Lua(text)) => assert!(text.contains("time limit"), "{text}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.call::<i64>("echo", 21).await.unwrap(), Some(42));
}

#[tokio::test]
async fn a_prepared_event_chains_its_handlers_on_every_call_like_a_single_call() {
    let (_dir, path) = write_policy(
        r#"
        kumo.on('should_enqueue_log_record', function(n)
          if n % 3 == 0 then return end
          if n % 5 == 0 then error('five') end
          return _KUMO_CURRENT_EVENT .. ':first:' .. n
        end)
        kumo.on('should_enqueue_log_record', function(n) return 'second:' .. n end)
        kumo.on('spin', function() while true do end end)
        "#,
    );
    let mut opts = EngineOptions::new(&path);
    opts.call_time_limit = Duration::from_millis(300);
    let (engine, _) = Engine::start(opts).await.unwrap();
    let ctx = engine.context().await.unwrap();
    assert!(ctx.prepare("no_such_event").unwrap().is_none());
    let event = ctx
        .prepare("should_enqueue_log_record")
        .unwrap()
        .expect("handlers");
    for n in 1..=10i64 {
        let got = event.call::<String>(n).await;
        match n {
            // The first handler declined: the chain goes on to the second.
            3 | 6 | 9 => assert_eq!(
                got.unwrap().as_deref(),
                Some(format!("second:{n}").as_str())
            ),
            // An error stops the chain for this call only.
            5 | 10 => assert!(
                matches!(got, Err(CallError::Lua(ref t)) if t.contains("five")),
                "{got:?}"
            ),
            _ => assert_eq!(
                got.unwrap().as_deref(),
                Some(format!("should_enqueue_log_record:first:{n}").as_str())
            ),
        }
    }
    drop(event);
    match ctx.call::<mlua::Value>("spin", ()).await {
        Err(CallError::Lua(text)) => assert!(text.contains("time limit"), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn policy_extras_log_hooks_is_shipped_in_the_binary() {
    let (engine, _d, _) = start(
        r#"
        -- The logging crate provides the real one; this engine has no modules.
        kumo.configure_log_hook = function() end
        local log_hooks = require 'policy-extras.log_hooks'
        log_hooks:new { name = 'h', constructor = function() return {} end }
        kumo.on('has', function() return type(log_hooks.new_json) end)
        "#,
    )
    .await
    .map_err(|e| e.0)
    .unwrap();
    assert_eq!(
        engine.call::<String>("has", ()).await.unwrap(),
        Some("function".into())
    );
}

fn hook_message(meta: serde_json::Value) -> hermod_message::Message {
    let addr = |s: &str| hermod_message::EnvelopeAddress::parse(s).unwrap();
    let serde_json::Value::Object(meta) = meta else {
        panic!("meta must be an object")
    };
    hermod_message::Message::new(
        hermod_message::SpoolId::new(),
        addr("sender@example.com"),
        vec![addr("rcpt@example.com")],
        meta,
        "{}\n",
    )
}

#[tokio::test]
async fn log_hook_routers_give_the_same_answer_without_lua_as_through_lua() {
    let (engine, _dir, _) = start(
        r#"
        kumo.configure_log_hook = function() end
        -- A user handler ahead of the helpers: its veto must still win.
        kumo.on('should_enqueue_log_record', function(msg, hook)
          if msg:get_meta('veto') then return false end
        end)
        local log_hooks = require 'policy-extras.log_hooks'
        log_hooks:new { name = 'plain', constructor = function() return {} end }
        log_hooks:new {
          name = 'filtered',
          constructor = function() return {} end,
          filter = function(msg, hook) return msg:get_meta('skip') == true end,
        }
        "#,
    )
    .await
    .map_err(|e| e.0)
    .unwrap();
    let ctx = engine.context().await.unwrap();
    let event = ctx
        .prepare("should_enqueue_log_record")
        .unwrap()
        .expect("handlers");
    let cases = [
        ("plain", serde_json::json!({})),
        ("plain", serde_json::json!({"veto": true})),
        ("plain", serde_json::json!({"skip": true})),
        ("filtered", serde_json::json!({})),
        ("filtered", serde_json::json!({"skip": true})),
        ("nobody's", serde_json::json!({})),
    ];
    let mut answers = Vec::new();
    for (hook, meta) in cases {
        let through_lua = hook_message(meta.clone());
        let direct = hook_message(meta);
        let lua_answer = event
            .call::<mlua::Value>((through_lua.clone(), hook))
            .await
            .unwrap();
        let answer = event.call_log_hook(&direct, hook).await.unwrap();
        let queue = direct.get_meta("queue");
        assert_eq!(
            format!("{answer:?}"),
            format!("{lua_answer:?}"),
            "hook {hook}"
        );
        assert_eq!(queue, through_lua.get_meta("queue"), "hook {hook}");
        answers.push((answer.and_then(|v| v.as_boolean()), queue));
    }
    assert!(
        event.log_hook_plan().is_none(),
        "a chain with Lua handlers needs Lua for every record"
    );
    let q = |s: &str| Some(serde_json::Value::String(s.into()));
    assert_eq!(
        answers,
        vec![
            (Some(true), q("plain.log_hook")),
            (Some(false), None),
            (Some(true), q("plain.log_hook")),
            (Some(true), q("filtered.log_hook")),
            (Some(false), None),
            (None, None),
        ]
    );
}

#[tokio::test]
async fn a_chain_of_only_helper_routers_becomes_a_plan_that_answers_like_lua() {
    let (engine, _dir, _) = start(
        r#"
        kumo.configure_log_hook = function() end
        local log_hooks = require 'policy-extras.log_hooks'
        log_hooks:new { name = 'one', constructor = function() return {} end }
        log_hooks:new { name = 'two', constructor = function() return {} end }
        "#,
    )
    .await
    .map_err(|e| e.0)
    .unwrap();
    let ctx = engine.context().await.unwrap();
    let event = ctx
        .prepare("should_enqueue_log_record")
        .unwrap()
        .expect("handlers");
    let plan = event.log_hook_plan().expect("only helper routers");
    for hook in ["one", "two", "three"] {
        let through_lua = hook_message(serde_json::json!({}));
        let planned = hook_message(serde_json::json!({}));
        let lua_answer = event
            .call::<Option<bool>>((through_lua.clone(), hook))
            .await
            .unwrap()
            .flatten();
        assert_eq!(
            plan.route(&planned, hook).map(|_| true),
            lua_answer,
            "hook {hook}"
        );
        assert_eq!(
            planned.get_meta("queue"),
            through_lua.get_meta("queue"),
            "hook {hook}"
        );
    }
    let routed = hook_message(serde_json::json!({}));
    assert_eq!(plan.route(&routed, "two"), Some("two.log_hook"));
    assert_eq!(
        routed.get_meta("queue"),
        Some(serde_json::Value::String("two.log_hook".into()))
    );
}
