//! The Message and EnvelopeAddress objects as policies see them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mlua::{
    ExternalResult, IntoLua, Lua, LuaSerdeExt, MetaMethod, SerializeOptions, UserData,
    UserDataFields, UserDataMethods, Value as LuaValue,
};
use serde_json::Value;

use crate::{DkimSigner, EnvelopeAddress, Message};

/// JSON → Lua: null becomes nil and arrays carry the array marker, so they
/// re-encode as arrays even when empty.
pub fn json_to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    let opts = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.to_value_with(v, opts)
}

/// Lua → JSON with mlua's rules: nil → null, sequences → arrays, other tables
/// → objects, functions and threads → error.
pub fn lua_to_json(lua: &Lua, v: LuaValue) -> mlua::Result<Value> {
    lua.from_value(v)
}

fn address_arg(v: LuaValue) -> mlua::Result<EnvelopeAddress> {
    match v {
        LuaValue::String(s) => EnvelopeAddress::parse(&s.to_str()?).into_lua_err(),
        LuaValue::UserData(ud) => Ok(ud.borrow::<EnvelopeAddress>()?.clone()),
        other => Err(mlua::Error::runtime(format!(
            "expected an address string or EnvelopeAddress, got {}",
            other.type_name()
        ))),
    }
}

impl UserData for EnvelopeAddress {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("user", |_, this| Ok(this.user().to_string()));
        fields.add_field_method_get("domain", |_, this| Ok(this.domain().to_string()));
        fields.add_field_method_get("email", |_, this| Ok(this.email().to_string()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.to_string()));
        methods.add_meta_method(MetaMethod::Eq, |_, this, other: mlua::AnyUserData| {
            Ok(other
                .borrow::<EnvelopeAddress>()
                .map(|o| *o == *this)
                .unwrap_or(false))
        });
    }
}

/// Something Lua sees as a Message. `touch` lets the legacy-constructor
/// mode learn whether a constructor used its `message` global.
trait MessageHandle: Send + 'static {
    fn message(&self) -> &Message;
    fn touch(&self) {}
}

impl MessageHandle for Message {
    fn message(&self) -> &Message {
        self
    }
}

/// A Message that records any use, bound to the legacy global `message`.
#[derive(Clone)]
pub struct TrackedMessage {
    pub message: Message,
    pub touched: Arc<AtomicBool>,
}

impl MessageHandle for TrackedMessage {
    fn message(&self) -> &Message {
        &self.message
    }
    fn touch(&self) {
        self.touched.store(true, Ordering::SeqCst);
    }
}

fn register<T: MessageHandle, M: UserDataMethods<T>>(methods: &mut M) {
    methods.add_method("id", |_, this, ()| {
        this.touch();
        Ok(this.message().id().to_string())
    });
    methods.add_method("get_data", |lua, this, ()| {
        this.touch();
        lua.create_string(this.message().data().into_lua_err()?.as_ref())
    });
    methods.add_method("set_data", |_, this, data: mlua::String| {
        this.touch();
        this.message().set_data(data.as_bytes().to_vec());
        Ok(())
    });
    methods.add_method("get_meta", |lua, this, key: String| {
        this.touch();
        match this.message().get_meta(&key) {
            Some(v) => json_to_lua(lua, &v),
            None => Ok(LuaValue::Nil),
        }
    });
    methods.add_method("set_meta", |lua, this, (key, value): (String, LuaValue)| {
        this.touch();
        let json = lua_to_json(lua, value)?;
        this.message().set_meta(key, json);
        Ok(())
    });
    methods.add_method("sender", |_, this, ()| {
        this.touch();
        Ok(this.message().sender())
    });
    methods.add_method("set_sender", |_, this, v: LuaValue| {
        this.touch();
        this.message().set_sender(address_arg(v)?);
        Ok(())
    });
    methods.add_method("recipient", |lua, this, ()| {
        this.touch();
        let r = this.message().recipients();
        match r.len() {
            0 => Ok(LuaValue::Nil),
            1 => r.into_iter().next().into_lua(lua),
            _ => r.into_lua(lua),
        }
    });
    methods.add_method("recipient_list", |_, this, ()| {
        this.touch();
        Ok(this.message().recipients())
    });
    methods.add_method("set_recipient", |_, this, v: LuaValue| {
        this.touch();
        let list = match v {
            LuaValue::Table(t) => t
                .sequence_values::<LuaValue>()
                .map(|v| v.and_then(address_arg))
                .collect::<mlua::Result<Vec<_>>>()?,
            other => vec![address_arg(other)?],
        };
        this.message().set_recipients(list);
        Ok(())
    });
    methods.add_method("queue_name", |_, this, ()| {
        this.touch();
        this.message().queue_name().into_lua_err()
    });
    methods.add_method("num_attempts", |_, this, ()| {
        this.touch();
        Ok(this.message().num_attempts())
    });
    // KumoMTA's scheduling (crates/message/src/scheduling.rs): both return
    // the scheduling as a table, and raise an error that names the field.
    methods.add_method("set_scheduling", |lua, this, params: LuaValue| {
        this.touch();
        let json = lua_to_json(lua, params)?;
        let sched = crate::Scheduling::from_json(&json)
            .map_err(|e| mlua::Error::runtime(format!("set_scheduling: {e}")))?;
        this.message().set_scheduling(sched);
        scheduling_table(lua, sched)
    });
    methods.add_method(
        "import_scheduling_header",
        |lua, this, (name, remove): (String, Option<bool>)| {
            this.touch();
            let msg = this.message();
            let Some(text) = msg.get_first_named_header_value(&name).into_lua_err()? else {
                return Ok(LuaValue::Nil);
            };
            let sched = serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("is not JSON ({e})"))
                .and_then(|v| crate::Scheduling::from_json(&v).map_err(|e| e.to_string()))
                .map_err(|e| {
                    mlua::Error::runtime(format!(
                        "import_scheduling_header: the {name} header {text:?}: {e}"
                    ))
                })?;
            msg.set_scheduling(sched);
            if remove.unwrap_or(false) {
                msg.remove_all_named_headers(&name).into_lua_err()?;
            }
            scheduling_table(lua, sched)
        },
    );
    methods.add_method("get_first_named_header_value", |_, this, name: String| {
        this.touch();
        this.message()
            .get_first_named_header_value(&name)
            .into_lua_err()
    });
    methods.add_method("get_all_named_header_values", |_, this, name: String| {
        this.touch();
        this.message()
            .get_all_named_header_values(&name)
            .into_lua_err()
    });
    methods.add_method(
        "append_header",
        |_, this, (name, value, encode): (String, String, Option<bool>)| {
            this.touch();
            this.message()
                .append_header(&name, &value, encode.unwrap_or(false))
                .into_lua_err()
        },
    );
    methods.add_method(
        "prepend_header",
        |_, this, (name, value, encode): (String, String, Option<bool>)| {
            this.touch();
            this.message()
                .prepend_header(&name, &value, encode.unwrap_or(false))
                .into_lua_err()
        },
    );
    methods.add_method("remove_all_named_headers", |_, this, name: String| {
        this.touch();
        this.message()
            .remove_all_named_headers(&name)
            .into_lua_err()
    });
    // KumoMTA's address-header accessors: nil when the header is absent or
    // holds no address (crate::address_header).
    methods.add_method("from_header", |_, this, ()| {
        this.touch();
        Ok(address_header(this.message(), "From"))
    });
    methods.add_method("to_header", |_, this, ()| {
        this.touch();
        Ok(address_header(this.message(), "To"))
    });
    methods.add_method("get_address_header", |_, this, name: String| {
        this.touch();
        Ok(address_header(this.message(), &name))
    });
    methods.add_method(
        "check_fix_conformance",
        |_, this, (checks, fixes, settings): (String, Option<String>, Option<mlua::Table>)| {
            this.touch();
            check_fix_conformance(this.message(), &checks, fixes.as_deref(), settings)
        },
    );
    // KumoMTA's `msg:dkim_sign(signer)`: the signature is computed over the message as it is
    // now and prepended, which marks the data dirty so the spool stores the signed message.
    // The signer is any `DkimSigner` handle (see crate::dkim for why it is a trait object).
    methods.add_method("dkim_sign", |lua, this, signer: LuaValue| {
        this.touch();
        let signer = match &signer {
            LuaValue::UserData(ud) => ud.borrow::<DkimSigner>().ok().map(|s| s.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            mlua::Error::runtime(format!(
                "dkim_sign: expected a signer made by kumo.dkim.rsa_sha256_signer or \
                 kumo.dkim.ed25519_signer, got {}",
                signer.type_name()
            ))
        })?;
        let data = this.message().data().into_lua_err()?;
        let value = signer.0.dkim_signature(lua, &data)?;
        this.message()
            .prepend_header("DKIM-Signature", &value, false)
            .into_lua_err()
    });
    methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
        Ok(format!("Message({})", this.message().id()))
    });
}

impl UserData for Message {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        register(methods);
    }
}

impl UserData for TrackedMessage {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        register(methods);
    }
}

/// `msg:check_fix_conformance(CHECKS, FIXES, SETTINGS)`: the text to reject
/// with when a checked issue is present, otherwise nil (after repairing what
/// FIXES names). See crates/message/src/conformance.rs.
fn check_fix_conformance(
    msg: &Message,
    checks: &str,
    fixes: Option<&str>,
    settings: Option<mlua::Table>,
) -> mlua::Result<Option<String>> {
    use crate::conformance::{check_fix, Issues, Verdict};
    if let Some(t) = settings {
        for pair in t.pairs::<String, LuaValue>() {
            let (key, value) = pair?;
            match key.as_str() {
                "detect_encoding" if value.as_boolean() == Some(true) => {
                    return Err(mlua::Error::runtime(
                        "check_fix_conformance: detect_encoding is not supported by Hermod yet",
                    ))
                }
                "detect_encoding" | "include_encodings" | "exclude_encodings" => {}
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "check_fix_conformance: unknown setting '{other}'"
                    )))
                }
            }
        }
    }
    let checks = Issues::parse(checks).into_lua_err()?;
    let fixes = Issues::parse(fixes.unwrap_or_default()).into_lua_err()?;
    let data = msg.data().into_lua_err()?;
    let sender = msg.sender();
    let host = match sender.domain() {
        "" => "localhost",
        d => d,
    };
    match check_fix(&data, checks, fixes, host).into_lua_err()? {
        Verdict::Failed(text) => Ok(Some(text)),
        Verdict::Passed(Some(fixed)) => {
            msg.set_data(fixed);
            Ok(None)
        }
        Verdict::Passed(None) => Ok(None),
    }
}

fn scheduling_table(lua: &Lua, sched: Option<crate::Scheduling>) -> mlua::Result<LuaValue> {
    match sched {
        Some(s) => json_to_lua(lua, &Value::Object(s.to_json())),
        None => Ok(LuaValue::Nil),
    }
}

fn address_header(msg: &Message, name: &str) -> Option<crate::address_header::AddressHeader> {
    let raw = msg.get_first_named_header_value(name).ok()??;
    crate::address_header::AddressHeader::parse(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpoolId;
    use serde_json::{json, Map};

    fn lua_with_msg() -> (Lua, Message) {
        let lua = Lua::new();
        let m = Message::new(
            SpoolId::new(),
            EnvelopeAddress::parse("a@example.com").unwrap(),
            vec![EnvelopeAddress::parse("b@nats").unwrap()],
            Map::new(),
            &b"Subject: hi\r\n\r\nbody"[..],
        );
        lua.globals().set("msg", m.clone()).unwrap();
        (lua, m)
    }

    #[test]
    fn lua_can_read_and_edit_a_message() {
        let (lua, m) = lua_with_msg();
        lua.load(
            r#"
            assert(msg:sender().email == 'a@example.com')
            assert(msg:sender().domain == 'example.com')
            assert(tostring(msg:recipient()) == 'b@nats')
            assert(#msg:id() == 32)
            assert(msg:get_first_named_header_value('subject') == 'hi')
            msg:set_meta('x_list', {})
            msg:set_meta('x_n', 5)
            msg:set_meta('queue', 'q1')
            assert(msg:get_meta('nope') == nil)
            assert(msg:queue_name() == 'q1')
            msg:append_header('X-A', 'v')
            msg:set_recipient({'c@d', 'e@f'})
            assert(#msg:recipient() == 2)
        "#,
        )
        .exec()
        .unwrap();
        assert_eq!(m.get_meta("x_list"), Some(json!({})));
        assert_eq!(m.get_meta("x_n"), Some(json!(5)));
        assert!(String::from_utf8_lossy(&m.data().unwrap()).contains("X-A: v\r\n\r\n"));
    }

    #[test]
    fn meta_arrays_keep_their_array_marker() {
        let (lua, m) = lua_with_msg();
        m.set_meta("x_arr", json!([]));
        lua.load("msg:set_meta('x_copy', msg:get_meta('x_arr'))")
            .exec()
            .unwrap();
        assert_eq!(m.get_meta("x_copy"), Some(json!([])));
    }

    #[test]
    fn setting_a_function_as_meta_is_an_error() {
        let (lua, _m) = lua_with_msg();
        assert!(lua
            .load("msg:set_meta('x', function() end)")
            .exec()
            .is_err());
    }

    #[test]
    fn tracked_message_records_use() {
        let lua = Lua::new();
        let (_, m) = lua_with_msg();
        let t = TrackedMessage {
            message: m,
            touched: Arc::new(AtomicBool::new(false)),
        };
        lua.globals().set("message", t.clone()).unwrap();
        lua.load("local x = 1").exec().unwrap();
        assert!(!t.touched.load(Ordering::SeqCst));
        lua.load("local d = message:get_data()").exec().unwrap();
        assert!(t.touched.load(Ordering::SeqCst));
    }
}
