//! Values that init-global propagation may copy from the context that ran
//! `init` into every later context. Rust-backed client handles opt in with
//! [`register_handle`]: their clones share one underlying connection.

use std::sync::{Arc, OnceLock};

use mlua::{AnyUserData, Lua, LuaSerdeExt, UserData, Value};
use parking_lot::RwLock;

type Cloner = Arc<dyn Fn(&AnyUserData) -> Option<Handle> + Send + Sync>;

fn registry() -> &'static RwLock<Vec<Cloner>> {
    static R: OnceLock<RwLock<Vec<Cloner>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

type Restore = dyn Fn(&Lua) -> mlua::Result<Value> + Send + Sync;

/// A shareable handle taken from one context, to be re-created in another.
#[derive(Clone)]
pub struct Handle(Arc<Restore>);

/// Declare that userdata of type `T` is a cheap shared handle (e.g. a NATS client).
pub fn register_handle<T: UserData + Clone + Send + Sync + 'static>() {
    let cloner: Cloner = Arc::new(|ud: &AnyUserData| {
        let v = ud.borrow::<T>().ok()?.clone();
        Some(Handle(Arc::new(move |lua: &Lua| {
            lua.create_userdata(v.clone()).map(Value::UserData)
        })))
    });
    registry().write().push(cloner);
}

/// A deep copy of a Lua value that can cross into another Lua state.
#[derive(Clone)]
pub enum Portable {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Vec<u8>),
    Table(Vec<(Portable, Portable)>, bool),
    Handle(Handle),
}

impl Portable {
    /// `None` for values that cannot be shared (functions, coroutines, other userdata, cycles).
    pub fn capture(lua: &Lua, v: &Value) -> Option<Portable> {
        Self::capture_depth(lua, v, 0)
    }

    fn capture_depth(lua: &Lua, v: &Value, depth: usize) -> Option<Portable> {
        if depth > 32 {
            return None;
        }
        Some(match v {
            Value::Nil => Portable::Nil,
            Value::Boolean(b) => Portable::Bool(*b),
            Value::Integer(i) => Portable::Int(*i),
            Value::Number(n) => Portable::Num(*n),
            Value::String(s) => Portable::Str(s.as_bytes().to_vec()),
            Value::Table(t) => {
                let is_array = t.metatable().is_some_and(|m| m == lua.array_metatable());
                let mut pairs = Vec::new();
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, v) = pair.ok()?;
                    pairs.push((
                        Self::capture_depth(lua, &k, depth + 1)?,
                        Self::capture_depth(lua, &v, depth + 1)?,
                    ));
                }
                Portable::Table(pairs, is_array)
            }
            Value::UserData(ud) => {
                let reg = registry().read();
                let h = reg.iter().find_map(|c| c(ud))?;
                Portable::Handle(h)
            }
            _ => return None,
        })
    }

    pub fn restore(&self, lua: &Lua) -> mlua::Result<Value> {
        Ok(match self {
            Portable::Nil => Value::Nil,
            Portable::Bool(b) => Value::Boolean(*b),
            Portable::Int(i) => Value::Integer(*i),
            Portable::Num(n) => Value::Number(*n),
            Portable::Str(s) => Value::String(lua.create_string(s)?),
            Portable::Table(pairs, is_array) => {
                let t = lua.create_table()?;
                for (k, v) in pairs {
                    t.raw_set(k.restore(lua)?, v.restore(lua)?)?;
                }
                if *is_array {
                    t.set_metatable(Some(lua.array_metatable()));
                }
                Value::Table(t)
            }
            Portable::Handle(h) => (h.0)(lua)?,
        })
    }
}
