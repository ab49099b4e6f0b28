//! Published payloads are the spooled message: Hermod's trace headers
//! (`X-KumoRef:` then `Received:`) in front of the exact bytes the client sent.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

use super::smtp::Sent;

/// A payload split into its trace headers and the rest.
#[derive(Debug)]
pub struct Traced<'a> {
    /// The `Received:` field, continuation lines included.
    pub received: String,
    /// The `X-KumoRef:` JSON, decoded.
    pub kumo_ref: Value,
    /// The id named by `Received: ... id <id>`.
    pub id: String,
    /// Everything after the trace headers.
    pub rest: &'a [u8],
}

/// Split the leading `Received:` and `X-KumoRef:` fields (exactly one of
/// each, in any order) off `payload`. Any other leading field ends the prefix.
pub fn split_trace(payload: &[u8]) -> Result<Traced<'_>, String> {
    let mut pos = 0;
    let mut received = None;
    let mut kumo_ref = None;
    loop {
        let (field, end) = field_at(payload, pos);
        let lower = field.to_ascii_lowercase();
        if lower.starts_with("received:") {
            if received.replace(field).is_some() {
                return Err("two Received: headers".into());
            }
        } else if lower.starts_with("x-kumoref:") {
            if kumo_ref.replace(field).is_some() {
                return Err("two X-KumoRef: headers".into());
            }
        } else {
            break;
        }
        pos = end;
    }
    let received = received.ok_or("no leading Received: header")?;
    let kumo_ref = kumo_ref.ok_or("no leading X-KumoRef: header")?;
    let id = received
        .split_whitespace()
        .skip_while(|w| *w != "id")
        .nth(1)
        .ok_or_else(|| format!("no `id` in {received:?}"))?
        .trim_end_matches(';')
        .to_string();
    let b64: String = kumo_ref["X-KumoRef:".len()..].split_whitespace().collect();
    let json = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("X-KumoRef is not base64: {e}"))?;
    let kumo_ref: Value =
        serde_json::from_slice(&json).map_err(|e| format!("X-KumoRef is not JSON: {e}"))?;
    Ok(Traced {
        received,
        kumo_ref,
        id,
        rest: &payload[pos..],
    })
}

/// The header field starting at `pos` (with its folded continuation lines)
/// as text, and the offset just after it.
fn field_at(data: &[u8], pos: usize) -> (String, usize) {
    let mut end = pos;
    loop {
        let Some(nl) = data[end..].iter().position(|&b| b == b'\n') else {
            return (String::from_utf8_lossy(&data[pos..]).into(), data.len());
        };
        end += nl + 1;
        match data.get(end) {
            Some(b' ') | Some(b'\t') => continue,
            _ => return (String::from_utf8_lossy(&data[pos..end]).into(), end),
        }
    }
}

/// Assert that every payload is one of `sent`, byte for byte, behind only
/// Hermod's trace headers for `recipient`, and that each sent message
/// appears exactly once. Returns the payloads' ids in order.
pub fn assert_exact_payloads(payloads: &[Vec<u8>], sent: &[Sent], recipient: &str) -> Vec<String> {
    let by_id: HashMap<&str, &Sent> = sent.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ids = Vec::with_capacity(payloads.len());
    for (n, p) in payloads.iter().enumerate() {
        let t = split_trace(p).unwrap_or_else(|e| {
            panic!(
                "payload {n}: {e}; payload starts {:?}",
                String::from_utf8_lossy(&p[..p.len().min(400)])
            )
        });
        let s = by_id
            .get(t.id.as_str())
            .unwrap_or_else(|| panic!("payload {n}: Received id {} was never returned", t.id));
        assert!(
            t.rest == s.data.as_slice(),
            "payload {n} ({}): content differs from what was sent\n sent: {:?}\n got:  {:?}",
            t.id,
            String::from_utf8_lossy(&s.data),
            String::from_utf8_lossy(t.rest)
        );
        assert!(
            t.received.contains(&format!("for <{recipient}>")),
            "payload {n}: Received does not name {recipient}: {:?}",
            t.received
        );
        assert_eq!(
            t.kumo_ref["recipient"], recipient,
            "payload {n}: X-KumoRef recipient"
        );
        *seen.entry(t.id.clone()).or_default() += 1;
        ids.push(t.id);
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, &c)| c > 1).collect();
    assert!(dupes.is_empty(), "published more than once: {dupes:?}");
    let missing: Vec<_> = sent
        .iter()
        .filter(|s| !seen.contains_key(&s.id))
        .map(|s| &s.id)
        .collect();
    assert!(missing.is_empty(), "never published: {missing:?}");
    ids
}
