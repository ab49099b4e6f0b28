//! `kumo.dns` end to end: a Lua state with the module registered, answering
//! from zone text (never the network).

use std::time::Duration;

use mlua::{FromLuaMulti, Lua, Table};

/// `hermod serve` and `hermod check` list `register` among the engine's
/// registrars; this fails to compile if its signature drifts from theirs.
const _: hermod_policy::Registrar = hermod_dns::register;

/// The resolver, caches and MX settings are process-wide, as in KumoMTA:
/// tests that change them take turns.
static GLOBAL_STATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const GMAIL: &str = r#"
$ORIGIN gmail.com.
@ 3600 MX 5 gmail-smtp-in.l.google.com.
@ 3600 MX 10 alt1.gmail-smtp-in.l.google.com.
@ 3600 MX 20 alt2.gmail-smtp-in.l.google.com.
@ 3600 MX 30 alt3.gmail-smtp-in.l.google.com.
@ 3600 MX 40 alt4.gmail-smtp-in.l.google.com.
"#;

/// A Lua state with an empty `kumo` module and `kumo.dns` registered, as the
/// policy engine prepares its contexts.
fn lua() -> Lua {
    let lua = Lua::new();
    let loaded: Table = lua
        .globals()
        .get::<Table>("package")
        .unwrap()
        .get("loaded")
        .unwrap();
    let kumo = lua.create_table().unwrap();
    loaded.set("kumo", kumo.clone()).unwrap();
    lua.globals().set("kumo", kumo).unwrap();
    hermod_dns::register(&lua).unwrap();
    lua.globals().set("GMAIL", GMAIL).unwrap();
    lua
}

/// Run a chunk named `test.lua`, bounded in time.
async fn run<R: FromLuaMulti>(lua: &Lua, src: &str) -> Result<R, String> {
    tokio::time::timeout(
        Duration::from_secs(30),
        lua.load(src).set_name("@test.lua").call_async::<R>(()),
    )
    .await
    .expect("lua chunk did not finish within 30s")
    .map_err(|e| hermod_policy::errors::describe(&e))
}

#[tokio::test]
async fn lookup_mx_returns_kumomtas_table_through_the_test_resolver() {
    let _turn = GLOBAL_STATE.lock().await;
    let lua = lua();
    let site: String = run(
        &lua,
        r#"
        kumo.dns.configure_test_resolver { GMAIL }
        local mx = kumo.dns.lookup_mx 'gmail.com'
        assert(mx.domain_name == 'gmail.com.', mx.domain_name)
        assert(mx.by_pref[5][1] == 'gmail-smtp-in.l.google.com.')
        assert(mx.by_pref[40][1] == 'alt4.gmail-smtp-in.l.google.com.')
        assert(#mx.hosts == 5 and mx.hosts[2] == 'alt1.gmail-smtp-in.l.google.com.')
        assert(mx.is_mx == true and mx.is_domain_literal == false and mx.is_secure == false)
        return mx.site_name
        "#,
    )
    .await
    .unwrap();
    assert_eq!(site, "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com");

    // The Rust API sees the same resolver.
    let mx = hermod_dns::resolve_mx("gmail.com").await.unwrap();
    assert_eq!(mx.site_name, site);
}

#[tokio::test]
async fn the_rust_api_resolves_mx_and_addresses_through_the_configured_test_zones() {
    let _turn = GLOBAL_STATE.lock().await;
    hermod_dns::configure_test_resolver(&[
        "$ORIGIN deliver.test.\n@ 300 MX 10 mx.deliver.test.\nmx 300 A 192.0.2.25\n",
        "$ORIGIN void.test.\n@ 300 MX 0 .\n",
    ])
    .unwrap();
    let mx = hermod_dns::resolve_mx("deliver.test").await.unwrap();
    let addrs = mx.resolve_addresses().await.unwrap();
    assert_eq!(addrs[0].addr.to_string(), "192.0.2.25");
    assert_eq!(addrs[0].name, "mx.deliver.test.");
    assert!(hermod_dns::resolve_mx("void.test")
        .await
        .unwrap()
        .is_null_mx());
    let e = hermod_dns::resolve_mx("missing.test").await.unwrap_err();
    assert!(matches!(e, hermod_dns::DnsError::NxDomain { .. }), "{e}");
}

/// What the named-resolver chunk returns: five string lists.
type FiveLists = (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

#[tokio::test]
async fn a_named_resolver_answers_lookup_mx_addr_and_txt() {
    let lua = lua();
    let (hosts, addrs, v6, none, txt): FiveLists = run(
        &lua,
        r#"
        kumo.dns.define_resolver('named-test', {
          Test = {
            zones = {
              [[
$ORIGIN example.com.
@       600  IN MX 2 two.example.com.
                MX 1 one.example.com.
one     600  IN A 192.0.2.1
one     600  IN AAAA 2001:db8::1
@       600  IN TXT "v=spf1 -all"
]],
            },
          },
        })
        local mx = kumo.dns.lookup_mx('example.com', 'named-test')
        return mx.hosts,
          kumo.dns.lookup_addr('one.example.com', 'named-test'),
          kumo.dns.lookup_addr('one.example.com', 'named-test', 'Ipv6Only'),
          kumo.dns.lookup_addr('example.com', 'named-test'),
          kumo.dns.lookup_txt('example.com', 'named-test')
        "#,
    )
    .await
    .unwrap();
    assert_eq!(hosts, ["one.example.com.", "two.example.com."]);
    assert_eq!(addrs, ["192.0.2.1", "2001:db8::1"]);
    assert_eq!(v6, ["2001:db8::1"]);
    assert!(
        none.is_empty(),
        "a name without addresses gives an empty list"
    );
    assert_eq!(txt, ["v=spf1 -all"]);
}

#[tokio::test]
async fn lookup_errors_name_the_policy_line_the_function_and_the_domain() {
    let lua = lua();
    let e = run::<()>(
        &lua,
        "kumo.dns.define_resolver('errors-test', { Test = { '$ORIGIN e.test.\\n@ 30 A 192.0.2.1\\n' } })\n\
         kumo.dns.lookup_mx('nope.e.test', 'errors-test')",
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        "test.lua:2: kumo.dns.lookup_mx: DNS MX lookup for nope.e.test: \
         the domain does not exist (NXDOMAIN)"
    );
    let e = run::<()>(
        &lua,
        "\n\nkumo.dns.lookup_addr('x.test', 'undefined-resolver')",
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        "test.lua:3: kumo.dns.lookup_addr: resolver \"undefined-resolver\" is not defined \
         (see kumo.dns.define_resolver)"
    );
    let e = run::<()>(&lua, "kumo.dns.lookup_mx(42)").await.unwrap_err();
    assert_eq!(
        e,
        "test.lua:1: kumo.dns.lookup_mx: domain must be a string, not integer"
    );
    let e = run::<()>(&lua, "kumo.dns.lookup_addr('[1.2.3.4', nil)")
        .await
        .unwrap_err();
    assert!(
        e.starts_with("test.lua:1: kumo.dns.lookup_addr: invalid domain name"),
        "{e}"
    );
}

#[tokio::test]
async fn a_domain_literal_needs_no_resolver() {
    let lua = lua();
    let (literal, site): (bool, String) = run(
        &lua,
        "local mx = kumo.dns.lookup_mx('[192.0.2.1]')\nreturn mx.is_domain_literal, mx.site_name",
    )
    .await
    .unwrap();
    assert!(literal);
    assert_eq!(site, "192.0.2.1");
}

#[tokio::test]
async fn resolver_configuration_is_strict_and_errors_carry_the_policy_line() {
    let lua = lua();
    let e = run::<()>(
        &lua,
        "\nkumo.dns.configure_resolver { name_servers = { '10.0.0.1:53' }, optoins = {} }",
    )
    .await
    .unwrap_err();
    assert!(
        e.starts_with("test.lua:2: kumo.dns.configure_resolver: "),
        "{e}"
    );
    assert!(e.contains("unknown field `optoins`"), "{e}");
    let e = run::<()>(&lua, "kumo.dns.configure_resolver { Unbound = {} }")
        .await
        .unwrap_err();
    assert!(
        e.contains("the Unbound resolver is not supported by Hermod"),
        "{e}"
    );
    let e = run::<()>(&lua, "kumo.dns.define_resolver('x', { name_servers = {} })")
        .await
        .unwrap_err();
    assert!(
        e.starts_with("test.lua:1: kumo.dns.define_resolver: "),
        "{e}"
    );
    let e = run::<()>(
        &lua,
        "kumo.dns.configure_test_resolver { '$ORIGIN x.\\n@ 30 MX nope\\n' }",
    )
    .await
    .unwrap_err();
    assert!(e.contains("cannot parse zone text"), "{e}");
}

#[tokio::test]
async fn configure_resolver_accepts_kumomtas_documented_table() {
    let _turn = GLOBAL_STATE.lock().await;
    let lua = lua();
    run::<()>(
        &lua,
        r#"
        kumo.dns.configure_resolver {
          name_servers = {
            '127.0.0.1:53',
            { socket_addr = '127.0.0.1:5353', protocol = 'tcp',
              trust_negative_responses = true, bind_addr = '127.0.0.1:0' },
          },
          options = { edns0 = true, use_hosts_file = 'Auto', timeout = '3s' },
        }
        "#,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn mx_timeout_and_negative_cache_ttl_take_durations() {
    let _turn = GLOBAL_STATE.lock().await;
    let lua = lua();
    // Set back to KumoMTA's defaults, so other tests see no change.
    run::<()>(
        &lua,
        "kumo.dns.set_mx_timeout(5)\nkumo.dns.set_mx_timeout('5s')\n\
         kumo.dns.set_mx_negative_cache_ttl('5 minutes')",
    )
    .await
    .unwrap();
    let e = run::<()>(&lua, "\nkumo.dns.set_mx_timeout('soon')")
        .await
        .unwrap_err();
    assert!(
        e.starts_with("test.lua:2: kumo.dns.set_mx_timeout: "),
        "{e}"
    );
    assert!(e.contains("invalid duration \"soon\""), "{e}");
    let e = run::<()>(&lua, "kumo.dns.set_mx_negative_cache_ttl(-1)")
        .await
        .unwrap_err();
    assert!(
        e.contains("must be a non-negative number of seconds"),
        "{e}"
    );
}
