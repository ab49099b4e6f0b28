use std::time::Duration;

use hermod_policy::config::from_lua_strict;
use hickory_resolver::config::{ProtocolConfig, ResolveHosts};
use mlua::{Lua, Value};

use super::*;
use crate::hickory_config::translate;

/// Decode the Lua expression `expr` as `T`, as a policy line `test.lua:1`
/// would pass it.
fn decode<T: serde::de::DeserializeOwned + 'static>(expr: &str) -> Result<T, String> {
    let lua = Lua::new();
    let f = lua
        .create_function(|lua, v: Value| from_lua_strict::<T>(lua, v, "kumo.dns.test").map(|_| ()))
        .unwrap();
    lua.globals().set("decode", f).unwrap();
    lua.load(format!("decode({expr})"))
        .set_name("@test.lua")
        .exec()
        .map_err(|e| hermod_policy::errors::describe(&e))?;
    let value: Value = lua.load(format!("return {expr}")).eval().unwrap();
    Ok(from_lua_strict::<T>(&lua, value, "kumo.dns.test").unwrap())
}

#[test]
fn name_servers_and_options_translate_to_hickory_settings() {
    let config: DnsResolverConfig = decode(
        r#"{
        name_servers = {
            '10.0.0.1:53',
            { socket_addr = '10.0.0.2:5353', protocol = 'tcp', bind_addr = '10.0.0.9:0',
              trust_negative_responses = false },
        },
        options = { timeout = '2s', attempts = 3, use_hosts_file = 'Never', edns0 = true },
    }"#,
    )
    .unwrap();
    let (resolver, opts) = translate(&config).unwrap();
    let servers = resolver.name_servers();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0].ip.to_string(), "10.0.0.1");
    let protocols: Vec<_> = servers[0]
        .connections
        .iter()
        .map(|c| c.protocol.clone())
        .collect();
    assert_eq!(
        protocols,
        [ProtocolConfig::Udp, ProtocolConfig::Tcp],
        "udp_then_tcp by default"
    );
    assert!(servers[0].trust_negative_responses);
    assert_eq!(servers[1].connections.len(), 1);
    assert_eq!(servers[1].connections[0].protocol, ProtocolConfig::Tcp);
    assert_eq!(servers[1].connections[0].port, 5353);
    assert_eq!(
        servers[1].connections[0]
            .bind_addr
            .map(|a| a.to_string())
            .as_deref(),
        Some("10.0.0.9:0")
    );
    assert!(!servers[1].trust_negative_responses);
    assert_eq!(opts.timeout, Duration::from_secs(2));
    assert_eq!(opts.attempts, 3);
    assert!(opts.edns0);
    assert_eq!(opts.use_hosts_file, ResolveHosts::Never);
}

#[test]
fn unknown_keys_are_refused_with_the_policy_line() {
    let e = decode::<DnsResolverConfig>("{ nameservers = { '10.0.0.1:53' } }").unwrap_err();
    assert!(e.starts_with("test.lua:1: kumo.dns.test: "), "{e}");
    assert!(e.contains("unknown field `nameservers`"), "{e}");
    let e =
        decode::<DnsResolverConfig>("{ name_servers = {'10.0.0.1:53'}, options = { timout = 1 } }")
            .unwrap_err();
    assert!(e.contains("unknown field `timout`"), "{e}");
    let e = decode::<DnsResolverConfig>(
        "{ name_servers = { { socket_addr = '10.0.0.1:53', proto = 'tcp' } } }",
    )
    .unwrap_err();
    assert!(e.contains("unknown field `proto`"), "{e}");
    let e = decode::<DnsResolverConfig>(
        "{ name_servers = {'10.0.0.1:53'}, options = { ip_strategy = 'Both' } }",
    )
    .unwrap_err();
    assert!(e.contains("unknown variant `Both`"), "{e}");
}

#[test]
fn bad_addresses_and_dnssec_options_are_configuration_errors() {
    let config: DnsResolverConfig = decode("{ name_servers = { '10.0.0.1' } }").unwrap();
    let e = translate(&config).unwrap_err().to_string();
    assert!(
        e.contains("name server \"10.0.0.1\" is not an 'IP:PORT' address"),
        "{e}"
    );
    let config: DnsResolverConfig =
        decode("{ name_servers = { '10.0.0.1:53' }, options = { validate = true } }").unwrap();
    let e = translate(&config).unwrap_err().to_string();
    assert!(e.contains("DNSSEC validation"), "{e}");
    let config: DnsResolverConfig = decode("{ options = { attempts = 1 } }").unwrap();
    let e = translate(&config).unwrap_err().to_string();
    assert!(
        e.contains("name_servers must list at least one server"),
        "{e}"
    );
}

#[test]
fn kumomtas_tagged_resolver_forms_decode() {
    assert!(matches!(
        decode::<ResolverSpec>("'HickorySystemConfig'").unwrap(),
        ResolverSpec::HickorySystemConfig
    ));
    let spec: ResolverSpec = decode("{ Hickory = { name_servers = { '10.0.0.1:53' } } }").unwrap();
    assert!(matches!(spec, ResolverSpec::Hickory(ref c) if c.name_servers.len() == 1));
    let spec: ResolverSpec =
        decode("{ Test = { '$ORIGIN a.test.\\n@ 30 A 192.0.2.1\\n' } }").unwrap();
    let ResolverSpec::Test(test) = spec else {
        panic!("not a Test spec")
    };
    assert_eq!(test.zones.len(), 1);
    assert!(!test.zones[0].secure);
    assert!(spec_builds(ResolverSpec::Test(test)));
}

#[test]
fn the_detailed_test_form_takes_secure_zones_and_servfail_names() {
    let config: TestResolverConfig = decode(
        "{ zones = { { zone = '$ORIGIN s.test.\\n@ 30 A 192.0.2.1\\n', secure = true }, \
                     '$ORIGIN p.test.\\n@ 30 A 192.0.2.2\\n' }, \
           servfail = { 'broken.test' } }",
    )
    .unwrap();
    assert_eq!(config.zones.len(), 2);
    assert!(config.zones[0].secure && !config.zones[1].secure);
    assert_eq!(config.servfail, ["broken.test"]);
    config.build().unwrap();
    let e = decode::<TestResolverConfig>("{ zone = {} }").unwrap_err();
    assert!(
        e.contains("unknown field `zone`, expected `zones` or `servfail`"),
        "{e}"
    );
    let e = decode::<TestResolverConfig>("{ { zone = 'x', secured = true } }").unwrap_err();
    assert!(e.contains("unknown field `secured`"), "{e}");
}

#[test]
fn unbound_and_aggregate_resolvers_are_refused_when_built() {
    let spec: ResolverSpec = decode("{ Unbound = { name_servers = { '10.0.0.1:53' } } }").unwrap();
    let e = spec
        .build()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("the Unbound resolver is not supported by Hermod"),
        "{e}"
    );
    let spec: ResolverSpec = decode("{ Aggregate = { 'HickorySystemConfig' } }").unwrap();
    assert!(spec.build().is_err());
    let e = decode::<ResolverSpec>("{ Hickery = {} }").unwrap_err();
    assert!(e.contains("unknown variant `Hickery`"), "{e}");
}

fn spec_builds(spec: ResolverSpec) -> bool {
    spec.build().is_ok()
}
