//! `require 'policy-extras.<name>'`: helper modules compiled into the binary,
//! plus a `package.path` that finds modules next to the policy file.

use std::path::Path;

use mlua::{Lua, Table};

const MODULES: &[(&str, &str)] = &[
    (
        "policy-extras.log_hooks",
        include_str!("extras/log_hooks.lua"),
    ),
    (
        "policy-extras.dkim_sign",
        include_str!("extras/dkim_sign.lua"),
    ),
    (
        "policy-extras.listener_domains",
        include_str!("extras/listener_domains.lua"),
    ),
    (
        "policy-extras.policy_utils",
        include_str!("extras/policy_utils.lua"),
    ),
    ("policy-extras.queue", include_str!("extras/queue.lua")),
    ("policy-extras.shaping", include_str!("extras/shaping.lua")),
    ("policy-extras.sources", include_str!("extras/sources.lua")),
];

pub(crate) fn install(lua: &Lua, policy_path: &Path) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let dir = policy_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".into());
    let old: String = package.get("path")?;
    package.set(
        "path",
        format!(
            "{dir}/?.lua;{dir}/?/init.lua;/opt/kumomta/etc/policy/?.lua;/opt/kumomta/etc/policy/?/init.lua;{old}"
        ),
    )?;
    let preload: Table = package.get("preload")?;
    for (name, source) in MODULES {
        let chunk_name = format!("=[builtin {name}]");
        let source = *source;
        let loader = lua.create_function(move |lua, _: mlua::MultiValue| {
            // The module's private capabilities travel as chunk arguments,
            // so no policy can reach them through `kumo`.
            let mark_route = lua.create_function(crate::log_hook_route::mark_log_hook_route)?;
            lua.load(source)
                .set_name(chunk_name.as_str())
                .call::<mlua::Value>(mark_route)
        })?;
        preload.set(*name, loader)?;
    }
    Ok(())
}
