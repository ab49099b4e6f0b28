//! `kumo.dkim`: DKIM signers for policies, with KumoMTA's functions and parameters.
//!
//! - `kumo.dkim.rsa_sha256_signer { PARAMS }` and `kumo.dkim.ed25519_signer { PARAMS }` return
//!   a signer (parameters in [`SignerParams`]); `msg:dkim_sign(signer)` (defined with
//!   the Message object in `hermod-message`, see `hermod_message::dkim`) prepends the
//!   `DKIM-Signature` field. Signatures are made by mail-auth with ring keys (`key.rs`).
//! - Signers are cached by their parameters and keys by their source, each for the signer's
//!   `ttl` (300 s by default), so a policy that builds its signer for every message reads and
//!   parses the key once per `ttl` (`cache.rs`).
//! - `kumo.dkim.set_signing_threads(n)` is accepted for KumoMTA policies and changes nothing:
//!   Hermod signs on the thread that runs the event, which is KumoMTA's default too.

mod cache;
mod key;
mod params;
mod signer;

use std::sync::{Arc, LazyLock, Once};

use hermod_message::DkimSigner;
use hermod_policy::config::from_lua_strict;
use hermod_policy::errors::located;
use hermod_policy::{KeySource, KeySourceError};
use mlua::{Lua, Value};

pub use key::KeyError;
pub use params::{SignerParams, DEFAULT_TTL};
pub use signer::{SignError, Signer};

use cache::{TtlCache, CAPACITY};

static SIGNERS: LazyLock<TtlCache<SignerParams, Arc<Signer>>> =
    LazyLock::new(|| TtlCache::new(CAPACITY));
static KEYS: LazyLock<TtlCache<KeySource, key::SharedKey>> =
    LazyLock::new(|| TtlCache::new(CAPACITY));

/// Why a signer could not be made from valid parameters. Names the key's file (or says the
/// data was inline), never the key data.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Read(#[from] KeySourceError),
    #[error("key '{source_name}' is not usable: {error}")]
    Key {
        source_name: String,
        error: KeyError,
    },
}

/// Add `kumo.dkim` to `lua`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    // Registered once per process: the registry is global and this runs for every context.
    static PORTABLE: Once = Once::new();
    PORTABLE.call_once(hermod_policy::portable::register_handle::<DkimSigner>);

    let dkim = hermod_policy::kumo_subtable(lua, "dkim")?;
    for (name, what) in [
        ("rsa_sha256_signer", "kumo.dkim.rsa_sha256_signer"),
        ("ed25519_signer", "kumo.dkim.ed25519_signer"),
    ] {
        dkim.set(
            name,
            lua.create_function(move |lua, params: Value| make_signer(lua, params, what))?,
        )?;
    }
    dkim.set(
        "set_signing_threads",
        lua.create_function(|lua, n: Value| {
            let ok = match n {
                Value::Integer(n) => n >= 1,
                Value::Number(n) => n >= 1.0 && n.fract() == 0.0,
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(located(
                    lua,
                    "kumo.dkim.set_signing_threads: expected a positive whole number of threads",
                ))
            }
        })?,
    )?;
    Ok(())
}

/// The Lua function behind both constructors (the key decides the algorithm, see `key.rs`).
/// Errors start with the policy's `file:line` and name `what`.
fn make_signer(lua: &Lua, params: Value, what: &str) -> mlua::Result<DkimSigner> {
    let params: SignerParams = from_lua_strict(lua, params, what)?;
    params
        .validate()
        .map_err(|e| located(lua, format!("{what}: {e}")))?;
    let signer = cached_signer(&params).map_err(|e| located(lua, format!("{what}: {e}")))?;
    Ok(DkimSigner(signer))
}

/// The signer for `params`, from the cache or made now (reading the key through its own cache).
pub fn cached_signer(params: &SignerParams) -> Result<Arc<Signer>, BuildError> {
    SIGNERS.get_or_try_insert(params, params.ttl, || {
        let key = KEYS.get_or_try_insert(&params.key, params.ttl, || {
            let data = params.key.load()?;
            key::parse(&data).map_err(|error| BuildError::Key {
                source_name: params.key.describe().to_string(),
                error,
            })
        })?;
        Ok(Arc::new(Signer::new(params.clone(), key)))
    })
}

#[cfg(test)]
mod tests;
