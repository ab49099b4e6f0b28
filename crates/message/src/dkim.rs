//! The seam between `msg:dkim_sign(signer)` and the crate that builds signers.
//!
//! The Message object policies see is defined in this crate, but DKIM signers come from
//! `hermod-dkim` (`kumo.dkim.rsa_sha256_signer`, `kumo.dkim.ed25519_signer`), which depends on
//! `hermod-policy` and through it on this crate, so this crate cannot name its types. Instead a
//! signer reaches Lua as a [`DkimSigner`] handle around anything that implements
//! [`SignMessage`]; `dkim_sign` borrows that handle and makes a plain Rust trait call. Nothing
//! is looked up by name at run time, so a policy cannot pass a table that merely looks like a
//! signer.

use std::sync::Arc;

use mlua::{Lua, MetaMethod, UserData, UserDataMethods};

/// What `msg:dkim_sign` needs from a signer.
pub trait SignMessage: Send + Sync + 'static {
    /// The value of the `DKIM-Signature` field for `message` (the complete message as it is
    /// now): without the field name and without the final CRLF; folded lines continue with
    /// whitespace. `lua` is the calling context, so that errors can name the policy's
    /// `file:line`.
    fn dkim_signature(&self, lua: &Lua, message: &[u8]) -> mlua::Result<String>;

    /// A short description for `tostring(signer)`: never key material.
    fn describe(&self) -> String;
}

/// A signer as Lua holds it: a cheap clone of a shared signer.
#[derive(Clone)]
pub struct DkimSigner(pub Arc<dyn SignMessage>);

impl UserData for DkimSigner {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.0.describe()));
    }
}
