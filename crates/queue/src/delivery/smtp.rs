//! The SMTP protocol (queues without `custom_lua` or `maildir_path`). Until the SMTP client
//! is built, every attempt fails transiently with a clear reason, so mail waits in the spool
//! instead of being lost.

use hermod_message::Protocol;

use super::{Attempt, Batching, Dispatcher, Health};
use crate::ready::{Entry, ReadyQueue};

pub(super) struct Smtp;

impl Dispatcher for Smtp {
    fn protocol(&self) -> Protocol {
        Protocol::Esmtp
    }

    fn service(&self, rq: &ReadyQueue) -> String {
        format!("smtp_client:{}", rq.name)
    }

    fn batching(&self) -> Batching {
        Batching {
            size: 64,
            min: 1,
            max_latency: std::time::Duration::ZERO,
        }
    }

    async fn connect(&mut self, _rq: &ReadyQueue, _first: &[Entry]) -> Result<(), Attempt> {
        Err(Attempt::all_transient(
            451,
            "Hermod has no SMTP client yet: configure a custom_lua or maildir_path protocol for this queue".into(),
            Health::Unknown,
        ))
    }

    async fn deliver(&mut self, _batch: &[Entry]) -> Attempt {
        Attempt::all_transient(451, "no SMTP connection".into(), Health::Unknown)
    }

    async fn close(&mut self) {}
}
