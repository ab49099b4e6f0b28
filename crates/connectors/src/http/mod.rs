//! `kumo.http`: an HTTP client for webhooks and lookups (reqwest, rustls).

mod client;
mod error;
mod request;
mod response;

pub use client::{HttpClient, HttpClientConfig};
pub use error::HttpClientError;
pub use request::HttpRequest;
pub use response::HttpResponse;

use mlua::{Lua, Value};

/// Add `kumo.http.build_client`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    hermod_policy::portable::register_handle::<HttpClient>();
    let http = hermod_policy::kumo_subtable(lua, "http")?;
    http.set(
        "build_client",
        lua.create_function(|lua, params: Value| {
            let config: HttpClientConfig = if params.is_nil() {
                HttpClientConfig::default()
            } else {
                hermod_policy::config::from_lua_strict(lua, params, "kumo.http.build_client")?
            };
            HttpClient::build(&config).map_err(|e| {
                hermod_policy::errors::located(lua, format!("kumo.http.build_client: {e}"))
            })
        })?,
    )?;
    Ok(())
}

/// A duration argument: seconds as a number, or a duration string.
pub(crate) fn duration_arg(v: &Value) -> Result<std::time::Duration, HttpClientError> {
    let d = match v {
        Value::Integer(i) => hermod_policy::duration::from_secs(*i as f64),
        Value::Number(n) => hermod_policy::duration::from_secs(*n),
        Value::String(s) => hermod_policy::duration::parse(&s.to_string_lossy()),
        other => return Err(HttpClientError::NotADuration(other.type_name())),
    };
    Ok(d?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_arguments_are_seconds_or_duration_strings() {
        let lua = Lua::new();
        let s = Value::String(lua.create_string("1m").unwrap());
        assert_eq!(duration_arg(&s).unwrap().as_secs(), 60);
        assert_eq!(duration_arg(&Value::Integer(5)).unwrap().as_secs(), 5);
        assert_eq!(
            duration_arg(&Value::Boolean(true)).unwrap_err().to_string(),
            "expected a duration, got boolean"
        );
        assert_eq!(
            duration_arg(&Value::Number(-1.0)).unwrap_err().to_string(),
            "invalid duration -1: must be a non-negative number of seconds"
        );
    }
}
