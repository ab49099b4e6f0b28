//! `kumo.define_spool` decoding through a real Lua state.

use hermod_spool::{parse_definition, register, SpoolKind, SpoolName, Threshold};
use mlua::{Lua, Value};

fn lua() -> Lua {
    let lua = Lua::new();
    lua.load("package.loaded.kumo = {}")
        .exec()
        .expect("create kumo table");
    register(&lua).expect("register define_spool");
    lua
}

fn call_err(lua: &Lua, code: &str) -> String {
    match lua.load(code).set_name("@policy.lua").exec() {
        Ok(()) => panic!("expected an error from {code}"),
        Err(e) => hermod_policy::errors::describe(&e),
    }
}

#[test]
fn unknown_key_is_rejected_and_named() {
    let lua = lua();
    let err = call_err(
        &lua,
        "local kumo = require 'kumo'\nkumo.define_spool{name='data', path='/tmp/x', flsuh=true}",
    );
    assert!(err.contains("flsuh"), "{err}");
    assert!(err.contains("kumo.define_spool"), "{err}");
    assert!(
        err.contains("policy.lua:2"),
        "error should carry file:line: {err}"
    );
}

#[test]
fn name_other_than_data_or_meta_is_rejected_with_the_allowed_names() {
    let lua = lua();
    let err = call_err(
        &lua,
        "kumo = require 'kumo'; kumo.define_spool{name='logs', path='/tmp/x'}",
    );
    assert!(
        err.contains("\"data\" or \"meta\"") && err.contains("logs"),
        "{err}"
    );
}

#[test]
fn unknown_kind_and_bad_thresholds_are_rejected() {
    let lua = lua();
    let err = call_err(
        &lua,
        "require('kumo').define_spool{name='data', path='/x', kind='Tape'}",
    );
    assert!(err.contains("kind") && err.contains("Tape"), "{err}");
    let err = call_err(
        &lua,
        "require('kumo').define_spool{name='data', path='/x', min_free_space='120%'}",
    );
    assert!(err.contains("min_free_space"), "{err}");
    let err = call_err(
        &lua,
        "require('kumo').define_spool{name='data', path='/x', min_free_inodes='lots'}",
    );
    assert!(err.contains("min_free_inodes"), "{err}");
}

#[test]
fn unknown_rocks_param_is_rejected_at_definition() {
    let lua = lua();
    let err = call_err(
        &lua,
        "require('kumo').define_spool{name='data', path='/x', rocks_params={no_such_option=1}}",
    );
    assert!(
        err.contains("rocks_params") && err.contains("no_such_option"),
        "{err}"
    );
}

#[test]
fn valid_table_decodes_every_field() {
    let lua = lua();
    let v: Value = lua
        .load(
            "return {name='meta', path='/var/spool/meta', kind='RocksDB', flush=true,
                     rocks_params={max_background_jobs=4}, min_free_space='5%', min_free_inodes=1000}",
        )
        .eval()
        .expect("table");
    let def = parse_definition(&lua, v).expect("valid definition");
    assert_eq!(def.name, SpoolName::Meta);
    assert_eq!(def.path, std::path::PathBuf::from("/var/spool/meta"));
    assert_eq!(def.kind, SpoolKind::RocksDB);
    assert!(def.flush);
    assert_eq!(
        def.rocks_params
            .get("max_background_jobs")
            .map(String::as_str),
        Some("4")
    );
    assert_eq!(def.min_free_space, Threshold::Percent(5.0));
    assert_eq!(def.min_free_inodes, Threshold::Absolute(1000));
}

#[test]
fn defaults_are_local_disk_and_ten_percent() {
    let lua = lua();
    let v: Value = lua
        .load("return {name='data', path='/s'}")
        .eval()
        .expect("table");
    let def = parse_definition(&lua, v).expect("valid definition");
    assert_eq!(def.kind, SpoolKind::LocalDisk);
    assert!(!def.flush);
    assert_eq!(def.min_free_space, Threshold::Percent(10.0));
    assert_eq!(def.min_free_inodes, Threshold::Percent(10.0));
}

#[test]
fn valid_call_outside_startup_is_refused_by_the_startup_collector() {
    // hermod_policy exposes no public constructor for its start-up state, so
    // a bare Lua cannot collect items; this proves a valid call passes
    // validation and reaches startup::push (which refuses outside init).
    let lua = lua();
    let err = call_err(
        &lua,
        "require('kumo').define_spool{name='data', path='/tmp/spool'}",
    );
    assert!(err.contains("pre_init or init"), "{err}");
}

#[tokio::test]
async fn define_spool_in_init_records_definitions_for_start_up() {
    let mut opts = hermod_policy::EngineOptions::new("policy.lua");
    opts.policy_source = Some(
        "local kumo = require 'kumo'
         kumo.on('init', function()
           kumo.define_spool{name='data', path='/var/spool/hermod/data', kind='RocksDB'}
           kumo.define_spool{name='meta', path='/var/spool/hermod/meta'}
         end)"
            .into(),
    );
    opts.registrars.push(register);
    let (_engine, collected) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        hermod_policy::Engine::start(opts),
    )
    .await
    .expect("engine start is bounded")
    .expect("policy starts");
    let defs: Vec<hermod_spool::SpoolDefinition> = collected.take();
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[0].name, SpoolName::Data);
    assert_eq!(defs[0].kind, SpoolKind::RocksDB);
    assert_eq!(defs[1].name, SpoolName::Meta);
    assert_eq!(
        defs[1].path,
        std::path::PathBuf::from("/var/spool/hermod/meta")
    );
}

#[tokio::test]
async fn define_spool_typo_in_init_fails_start_up_naming_the_key() {
    let mut opts = hermod_policy::EngineOptions::new("policy.lua");
    opts.policy_source = Some(
        "local kumo = require 'kumo'
         kumo.on('init', function()
           kumo.define_spool{name='data', path='/x', min_free_spaec='10%'}
         end)"
            .into(),
    );
    opts.registrars.push(register);
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        hermod_policy::Engine::start(opts),
    )
    .await
    .expect("engine start is bounded");
    match res {
        Ok(_) => panic!("a typo must fail start-up"),
        Err(e) => assert!(e.to_string().contains("min_free_spaec"), "{e}"),
    }
}
