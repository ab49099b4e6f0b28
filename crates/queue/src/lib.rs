//! Queues and delivery: scheduled queues resolved through `get_queue_config`,
//! a timer for messages waiting to retry, ready queues with their delivery
//! sessions (one driver; `custom_lua`, `maildir`, `smtp`), retries and expiry, and the
//! `Acceptor` that listeners hand new messages to.

mod admin;
mod delivery;
mod egress;
mod held;
mod hooks;
mod ingress;
mod inspect;
mod manager;
mod outcome;
mod ready;
mod rebind;
mod resolve;
pub mod retry;
mod route;
mod schedule;
mod throttle;
mod timer;

pub use egress::EgressConfigError;
pub use hooks::HookBridge;
pub use manager::{QueueManager, QueueOptions};
pub use ready::ReadyQueueState;
pub use resolve::{metrics_protocol, metrics_service};
