//! `kumo.memoize` against real policy files and several Lua contexts.
//!
//! The memoized functions count their runs by appending to a file of the
//! test's own directory, which every context sees. Cache names are unique
//! per test: caches are per process, as in KumoMTA.

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use hermod_policy::mlua::{self, Lua, UserData, UserDataFields};
use hermod_policy::{CallError, Engine, EngineOptions, PolicyError};

struct Fixture {
    engine: Arc<Engine>,
    count_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// How many times the memoized functions have run.
    fn runs(&self) -> usize {
        std::fs::read(&self.count_file).map_or(0, |b| b.len())
    }
}

/// The policy with `bump()` (count one run) defined before it.
fn policy(src: &str, dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let count_file = dir.path().join("runs");
    // One line, so that the policy's own lines are numbered from 2.
    let prelude = format!(
        "local COUNT = {:?}; \
         local function bump() local f = assert(io.open(COUNT, 'a')); f:write('x'); f:close() end; \
         local function runs() local f = io.open(COUNT); if not f then return 0 end; \
         local n = #f:read('a'); f:close(); return n end\n",
        count_file.display().to_string()
    );
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, format!("{prelude}{src}")).unwrap();
    (path, count_file)
}

async fn start_with(src: &str, registrars: Vec<hermod_policy::Registrar>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (path, count_file) = policy(src, &dir);
    let mut opts = EngineOptions::new(&path);
    opts.registrars = registrars;
    let (engine, _) = Engine::start(opts).await.unwrap();
    Fixture {
        engine,
        count_file,
        _dir: dir,
    }
}

async fn start(src: &str) -> Fixture {
    start_with(src, Vec::new()).await
}

async fn start_err(src: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = policy(src, &dir);
    match Engine::start(EngineOptions::new(&path)).await {
        Ok(_) => panic!("the policy should not load"),
        Err(PolicyError::Load(m)) => m,
        Err(other) => panic!("{other}"),
    }
}

async fn call(f: &Fixture, event: &str, arg: &str) -> Result<Option<String>, CallError> {
    f.engine.call::<String>(event, arg.to_string()).await
}

#[tokio::test]
async fn repeated_calls_with_the_same_arguments_run_the_function_once() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(a, b) bump(); return a .. ':' .. b end,
          { name = 'test.once', ttl = '5 minutes', capacity = 10 })
        kumo.on('probe', function(a) return lookup(a, 'b') end)
        "#,
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            call(&f, "probe", "a").await.unwrap().as_deref(),
            Some("a:b")
        );
    }
    assert_eq!(f.runs(), 1);
}

#[tokio::test]
async fn different_arguments_are_cached_separately_and_equal_tables_share_an_entry() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(...) bump(); return select('#', ...) end,
          { name = 'test.args', ttl = 300, capacity = 10 })
        kumo.on('probe', function()
          lookup('a'); lookup('b'); lookup('a'); lookup('a', nil)
          lookup({ x = 1, y = 2, z = { 1, 2 } }); lookup({ z = { 1, 2 }, y = 2, x = 1 })
          return 'ok'
        end)
        "#,
    )
    .await;
    call(&f, "probe", "").await.unwrap();
    // 'a', 'b', ('a', nil) and the table once.
    assert_eq!(f.runs(), 4);
    // Another context builds its tables in its own order: still the same key.
    let first = f.engine.context().await.unwrap();
    let second = f.engine.context().await.unwrap();
    second.call::<String>("probe", ()).await.unwrap();
    drop(first);
    assert_eq!(f.runs(), 4);
}

#[tokio::test]
async fn a_result_made_in_one_context_is_served_in_another_as_a_fresh_copy() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k)
          bump(); return { key = k, list = { 1, 2, 3 }, nested = { ok = true, pi = 3.5 } }
        end, { name = 'test.contexts', ttl = '5 minutes', capacity = 10 })
        kumo.on('probe', function(k)
          local t = lookup(k)
          local text = kumo.json_encode(t)
          -- Changing the returned table must not change the cached value.
          t.key = 'changed'; t.list[1] = 99
          return text
        end)
        "#,
    )
    .await;
    let one = f.engine.context().await.unwrap();
    let two = f.engine.context().await.unwrap();
    one.lua().globals().set("only_in_one", true).unwrap();
    let seen_in_two: Option<bool> = two.lua().globals().get("only_in_one").unwrap();
    assert_eq!(
        seen_in_two, None,
        "the two contexts must be different Lua states"
    );

    let a = one.call::<String>("probe", "k").await.unwrap().unwrap();
    let b = two.call::<String>("probe", "k").await.unwrap().unwrap();
    let c = one.call::<String>("probe", "k").await.unwrap().unwrap();
    let want = serde_json::json!({
        "key": "k", "list": [1, 2, 3], "nested": { "ok": true, "pi": 3.5 }
    });
    for got in [a, b, c] {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&got).unwrap(),
            want
        );
    }
    assert_eq!(f.runs(), 1);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let f = start(
        r#"
        local n = 0
        local lookup = kumo.memoize(function(k) bump(); n = n + 1; return k .. n end,
          { name = 'test.ttl', ttl = '500ms', capacity = 10 })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k1"));
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k1"));
    assert_eq!(f.runs(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k2"));
    assert_eq!(f.runs(), 2);
}

#[tokio::test]
async fn capacity_evicts_the_least_recently_used_entry() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k) bump(); return k end,
          { name = 'test.capacity', ttl = '5 minutes', capacity = 2 })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    for k in ["a", "b", "a", "c"] {
        call(&f, "probe", k).await.unwrap();
    }
    // 'c' evicted 'b', the least recently used; 'a' was used after 'b'.
    assert_eq!(f.runs(), 3);
    call(&f, "probe", "a").await.unwrap();
    assert_eq!(f.runs(), 3);
    call(&f, "probe", "b").await.unwrap();
    assert_eq!(f.runs(), 4);
}

#[tokio::test]
async fn a_failed_populate_is_remembered_as_kumomta_does_and_a_reject_stays_a_reject() {
    let f = start(
        r#"
        local failing = kumo.memoize(function(k) bump(); error('backend down for ' .. k) end,
          { name = 'test.error', ttl = '5 minutes', capacity = 10 })
        local rejecting = kumo.memoize(function(k) bump(); kumo.reject(451, 'try later') end,
          { name = 'test.reject', ttl = '5 minutes', capacity = 10 })
        kumo.on('fail', function(k) return failing(k) end)
        kumo.on('reject', function(k) return rejecting(k) end)
        "#,
    )
    .await;
    for _ in 0..2 {
        let e = call(&f, "fail", "db").await.unwrap_err().to_string();
        assert!(e.contains("backend down for db"), "{e}");
    }
    assert_eq!(
        f.runs(),
        1,
        "the error is remembered for {:?}",
        hermod_policy::memoize::ERROR_TTL
    );
    for _ in 0..2 {
        match call(&f, "reject", "x").await {
            Err(CallError::Reject(r)) => {
                assert_eq!((r.code, r.message.as_str()), (451, "try later"))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(f.runs(), 2);
}

#[tokio::test]
async fn an_unknown_option_is_refused_with_the_policy_line() {
    let e = start_err(
        "local x = 1\nlocal f = kumo.memoize(function() end, { name = 'test.bad', ttl = 1, capacity = 1, ttl_secs = 5 })\n",
    )
    .await;
    // The prelude takes line 1 of the file.
    assert!(e.contains("policy.lua:3: kumo.memoize: "), "{e}");
    assert!(e.contains("ttl_secs"), "{e}");
    let e = start_err(
        "kumo.memoize(function() end, { name = 'test.bad', ttl = 'soon', capacity = 1 })\n",
    )
    .await;
    assert!(e.contains("policy.lua:2: kumo.memoize: "), "{e}");
    assert!(e.contains("soon"), "{e}");
    let e = start_err("kumo.memoize(function() end, { name = 'test.bad', ttl = 1 })\n").await;
    assert!(
        e.contains("policy.lua:2: kumo.memoize: ") && e.contains("capacity"),
        "{e}"
    );
}

#[tokio::test]
async fn kumomta_options_without_a_hermod_counterpart_are_accepted() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k) bump(); return k end, {
          name = 'test.options', ttl = '1 minute', capacity = 10, invalidate_with_epoch = true,
          populate_timeout = '10 seconds', retry_on_populate_timeout = true, allow_stale_reads = false,
        })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k"));
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k"));
    assert_eq!(f.runs(), 1);
}

#[tokio::test]
async fn a_ttl_and_populate_timeout_beyond_the_clock_mean_never() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k) bump(); return k end,
          { name = 'test.forever', ttl = 1e19, capacity = 10, populate_timeout = 1e19 })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k"));
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k"));
    assert_eq!(f.runs(), 1);
}

#[tokio::test]
async fn a_result_that_cannot_be_shared_is_refused_naming_the_cache_and_the_line() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function() bump(); return { handler = function() end } end,
          { name = 'test.unshareable', ttl = '1 minute', capacity = 10 })
        kumo.on('probe', function()
          -- Not `return lookup()`: a tail call leaves no caller line to report.
          local v = lookup()
          return v
        end)
        kumo.on('tail', function() return lookup('other key') end)
        "#,
    )
    .await;
    let e = call(&f, "probe", "").await.unwrap_err().to_string();
    assert!(
        e.contains(
            "policy.lua:7: kumo.memoize 'test.unshareable': result 1 (table) cannot be cached"
        ),
        "{e}"
    );
    // A tail call leaves no caller line: the error names where the cache was made.
    let e = call(&f, "tail", "").await.unwrap_err().to_string();
    assert!(
        e.contains("policy.lua:3: kumo.memoize 'test.unshareable': result 1 (table)"),
        "{e}"
    );
}

#[tokio::test]
async fn arguments_that_cannot_make_a_key_are_refused_naming_the_cache() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(f) bump(); return 1 end,
          { name = 'test.badkey', ttl = '1 minute', capacity = 10 })
        kumo.on('probe', function()
          local v = lookup(print)
          return v
        end)
        "#,
    )
    .await;
    let e = call(&f, "probe", "").await.unwrap_err().to_string();
    assert!(
        e.contains("policy.lua:6: kumo.memoize 'test.badkey': the arguments cannot be a cache key"),
        "{e}"
    );
    assert_eq!(f.runs(), 0);
}

#[tokio::test]
async fn several_results_come_back_as_one_table_as_in_kumomta() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function() return 1, 'two' end,
          { name = 'test.multi', ttl = '1 minute', capacity = 10 })
        local nothing = kumo.memoize(function() end,
          { name = 'test.nothing', ttl = '1 minute', capacity = 10 })
        kumo.on('probe', function()
          local a, b = lookup()
          return kumo.json_encode({ a, b == nil, nothing() == nil })
        end)
        "#,
    )
    .await;
    let got = call(&f, "probe", "").await.unwrap().unwrap();
    assert_eq!(got, r#"[[1,"two"],true,true]"#);
}

/// A handle type registered as shareable, and one that is not.
#[derive(Clone)]
struct Token(i64);
impl UserData for Token {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("n", |_, this| Ok(this.0));
    }
}
struct Opaque;
impl UserData for Opaque {}

fn register_tokens(lua: &Lua) -> mlua::Result<()> {
    static SHAREABLE: Once = Once::new();
    SHAREABLE.call_once(hermod_policy::portable::register_handle::<Token>);
    let g = lua.globals();
    g.set("make_token", lua.create_function(|_, n: i64| Ok(Token(n)))?)?;
    g.set("make_opaque", lua.create_function(|_, ()| Ok(Opaque))?)
}

#[tokio::test]
async fn a_shareable_handle_is_served_in_another_context_and_other_userdata_is_refused() {
    let f = start_with(
        r#"
        local token = kumo.memoize(function(n) bump(); return make_token(n) end,
          { name = 'test.handle', ttl = '1 minute', capacity = 10 })
        local opaque = kumo.memoize(function() return make_opaque() end,
          { name = 'test.opaque', ttl = '1 minute', capacity = 10 })
        kumo.on('token', function(n) return tostring(token(tonumber(n)).n) end)
        kumo.on('opaque', function() return opaque() end)
        "#,
        vec![register_tokens],
    )
    .await;
    let one = f.engine.context().await.unwrap();
    let two = f.engine.context().await.unwrap();
    assert_eq!(
        one.call::<String>("token", "7").await.unwrap().as_deref(),
        Some("7")
    );
    assert_eq!(
        two.call::<String>("token", "7").await.unwrap().as_deref(),
        Some("7")
    );
    assert_eq!(f.runs(), 1);
    let e = one
        .call::<String>("opaque", ())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kumo.memoize 'test.opaque': result 1 (userdata) cannot be cached"),
        "{e}"
    );
}

#[tokio::test]
async fn concurrent_calls_for_one_key_run_the_function_once() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k) kumo.sleep(0.2); bump(); return 'v:' .. k end,
          { name = 'test.herd', ttl = '1 minute', capacity = 10 })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let engine = f.engine.clone();
        tasks.push(tokio::spawn(async move {
            engine.call::<String>("probe", "k").await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().as_deref(), Some("v:k"));
    }
    assert_eq!(f.runs(), 1);
    assert!(
        f.engine.spare_contexts() > 1,
        "the calls must have used several contexts"
    );
}

#[tokio::test]
async fn a_waiter_gives_up_after_populate_timeout_without_naming_the_arguments() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k) kumo.sleep(1.5); bump(); return k end,
          { name = 'test.timeout', ttl = '1 minute', capacity = 10, populate_timeout = '150ms' })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    let engine = f.engine.clone();
    // Arguments may be credentials: the error must not show them.
    let first = tokio::spawn(async move { engine.call::<String>("probe", "s3cret").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = call(&f, "probe", "s3cret").await.unwrap_err().to_string();
    assert!(
        e.contains("kumo.memoize 'test.timeout': timed out after 150ms"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    assert_eq!(first.await.unwrap().unwrap().as_deref(), Some("s3cret"));
    assert_eq!(f.runs(), 1);
}

#[tokio::test]
async fn retry_on_populate_timeout_takes_over_a_populate_that_ran_too_long() {
    let f = start(
        r#"
        local lookup = kumo.memoize(function(k)
          bump()
          local n = runs()
          if n == 1 then kumo.sleep(1.5) end
          return k .. n
        end, { name = 'test.retry', ttl = '1 minute', capacity = 10,
               populate_timeout = '150ms', retry_on_populate_timeout = true })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    let engine = f.engine.clone();
    let first = tokio::spawn(async move { engine.call::<String>("probe", "k").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The wait times out; the retry finds the populate older than the
    // timeout, takes it as abandoned and populates itself, as KumoMTA does.
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k2"));
    assert_eq!(first.await.unwrap().unwrap().as_deref(), Some("k1"));
    assert_eq!(f.runs(), 2);
}

#[tokio::test]
async fn allow_stale_reads_serves_the_expired_value_while_a_slow_populate_runs() {
    let f = start(
        r#"
        local n = 0
        local lookup = kumo.memoize(function(k)
          n = n + 1
          if n > 1 then kumo.sleep(1.5) end
          bump(); return k .. n
        end, { name = 'test.stale', ttl = '100ms', capacity = 10,
               populate_timeout = '150ms', allow_stale_reads = true })
        kumo.on('probe', function(k) return lookup(k) end)
        "#,
    )
    .await;
    // One context, so `n` counts every populate.
    let ctx = f.engine.context().await.unwrap();
    assert_eq!(
        ctx.call::<String>("probe", "k").await.unwrap().as_deref(),
        Some("k1")
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let slow = tokio::spawn(async move { ctx.call::<String>("probe", "k").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k1"));
    assert_eq!(slow.await.unwrap().unwrap().as_deref(), Some("k2"));
    assert_eq!(call(&f, "probe", "k").await.unwrap().as_deref(), Some("k2"));
}
