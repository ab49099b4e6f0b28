//! Rejection records: an SMTP 4xx/5xx reply. There is no message yet, so
//! the record has no id, queue or size, and it never feeds a log hook.

use chrono::Utc;
use hermod_message::RejectionInfo;

use crate::record::{EnhancedCode, LogRecord, PeerAddress, RecordType, Response};

/// `"5.1.1 no such user"` → the enhanced code and the rest of the text.
fn split_enhanced(text: &str) -> (Option<EnhancedCode>, &str) {
    let (head, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = head.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (None, text);
    };
    match (class.parse(), subject.parse(), detail.parse()) {
        (Ok(class @ 2..=5), Ok(subject), Ok(detail)) => (
            Some(EnhancedCode {
                class,
                subject,
                detail,
            }),
            rest,
        ),
        _ => (None, text),
    }
}

pub(crate) fn rejection_record(r: &RejectionInfo, node_id: &str) -> LogRecord {
    let now = Utc::now();
    let (enhanced, content) = split_enhanced(&r.text);
    let mut response = Response::new(r.code, enhanced, content);
    response.command = r.command.clone();
    let bounce_classification = crate::bounce::classify(RecordType::Rejection, &response);
    let recipient = if r.recipients.is_empty() {
        vec![String::new()]
    } else {
        r.recipients.clone()
    };
    LogRecord {
        kind: RecordType::Rejection,
        id: String::new(),
        sender: r.sender.clone().unwrap_or_default(),
        recipient,
        queue: String::new(),
        site: String::new(),
        size: 0,
        response,
        peer_address: Some(PeerAddress {
            name: r.peer.peer_name.clone(),
            addr: r.peer.peer_addr.clone(),
            is_secure: r.peer.tls_cipher.is_some(),
        }),
        timestamp: now.timestamp(),
        event_time: now,
        created: now.timestamp(),
        created_time: now,
        num_attempts: 0,
        bounce_classification,
        egress_pool: None,
        egress_source: None,
        source_address: None,
        feedback_report: None,
        meta: serde_json::Map::new(),
        headers: serde_json::Map::new(),
        delivery_protocol: None,
        reception_protocol: Some(r.peer.protocol.as_str().to_string()),
        nodeid: node_id.to_string(),
        tls_cipher: r.peer.tls_cipher.clone(),
        tls_protocol_version: r.peer.tls_protocol_version.clone(),
        tls_peer_subject_name: None,
        provider_name: None,
        session_id: r.peer.session_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_message::{Protocol, ReceptionInfo};

    #[test]
    fn rejection_record_carries_reply_command_envelope_and_peer() {
        let info = RejectionInfo {
            code: 550,
            text: "5.7.1 relaying denied".into(),
            command: Some("RCPT TO:<x@elsewhere>".into()),
            sender: Some("a@b.example".into()),
            recipients: vec!["x@elsewhere".into()],
            meta: Default::default(),
            peer: ReceptionInfo {
                protocol: Protocol::Esmtp,
                peer_name: "client.example".into(),
                peer_addr: "10.0.0.1".into(),
                session_id: Some("s-1".into()),
                tls_cipher: None,
                tls_protocol_version: None,
            },
        };
        let rec = rejection_record(&info, "node");
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v["type"], "Rejection");
        assert_eq!(v["id"], "");
        assert_eq!(v["recipient"], "x@elsewhere");
        assert_eq!(v["response"]["code"], 550);
        assert_eq!(
            v["response"]["enhanced_code"],
            serde_json::json!({"class": 5, "subject": 7, "detail": 1})
        );
        assert_eq!(v["response"]["content"], "relaying denied");
        assert_eq!(v["response"]["command"], "RCPT TO:<x@elsewhere>");
        assert_eq!(v["peer_address"]["addr"], "10.0.0.1");
        assert_eq!(v["session_id"], "s-1");
        assert_eq!(v["reception_protocol"], "ESMTP");
    }

    #[test]
    fn reply_without_an_enhanced_code_keeps_its_whole_text() {
        assert_eq!(split_enhanced("bad command").1, "bad command");
        assert!(split_enhanced("bad command").0.is_none());
        assert!(split_enhanced("1.2.3 odd").0.is_none());
        let (code, rest) = split_enhanced("4.5.3 too many");
        assert_eq!((code.map(|c| c.detail), rest), (Some(3), "too many"));
    }
}
