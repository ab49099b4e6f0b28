//! Which message a broker publish belongs to. A custom_lua session sets the
//! scope around each `send`/`send_batch`, so broker modules can attach the
//! Hermod message id as their default deduplication key without the policy
//! passing it explicitly.

use bytes::Bytes;
use mlua::Lua;

#[derive(Default, Clone)]
pub struct DeliveryScope {
    /// `(message id, message data)`; the data is shared, not copied.
    messages: Vec<(String, Bytes)>,
}

/// Enter a scope for these `(message id, message data)` pairs.
pub fn enter(lua: &Lua, messages: impl IntoIterator<Item = (String, Bytes)>) {
    lua.set_app_data(DeliveryScope {
        messages: messages.into_iter().collect(),
    });
}

pub fn leave(lua: &Lua) {
    lua.remove_app_data::<DeliveryScope>();
}

/// The Hermod message id a publish of `payload` belongs to: the one message
/// in scope whose data is exactly `payload`. A publish of anything else (a
/// batch's combined payload, say) gets no default id: reusing one id for two
/// different payloads would make a deduplicating broker drop the second one.
/// Neither does a payload that two messages in scope share, since each of
/// them would claim it.
///
/// Compared byte for byte, lengths first: a batch is at most a few hundred
/// messages, and hashing every message of it cost more than comparing.
pub fn message_id_for(lua: &Lua, payload: &[u8]) -> Option<String> {
    let scope = lua.app_data_ref::<DeliveryScope>()?;
    let mut same = scope
        .messages
        .iter()
        .filter(|(_, data)| data.len() == payload.len() && data.as_ref() == payload);
    let (id, _) = same.next()?;
    if same.next().is_some() {
        return None;
    }
    Some(id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_maps_to_the_message_with_exactly_that_data() {
        let lua = Lua::new();
        enter(
            &lua,
            [
                ("A".to_string(), Bytes::from_static(b"one")),
                ("B".to_string(), Bytes::from_static(b"two")),
            ],
        );
        assert_eq!(message_id_for(&lua, b"two").as_deref(), Some("B"));
        assert_eq!(message_id_for(&lua, b"one").as_deref(), Some("A"));
        assert_eq!(
            message_id_for(&lua, b"[one,two]"),
            None,
            "a combined payload has no id"
        );
        assert_eq!(
            message_id_for(&lua, b"thr"),
            None,
            "same length, other bytes"
        );
        leave(&lua);
        assert_eq!(message_id_for(&lua, b"one"), None, "no scope, no id");
    }

    #[test]
    fn a_payload_two_messages_share_gets_no_id() {
        let lua = Lua::new();
        enter(
            &lua,
            [
                ("A".to_string(), Bytes::from_static(b"same")),
                ("B".to_string(), Bytes::from_static(b"same")),
            ],
        );
        assert_eq!(message_id_for(&lua, b"same"), None);
    }
}
