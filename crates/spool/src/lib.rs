//! `hermod-spool`: `kumo.define_spool` and the RocksDB-backed message spool.
//!
//! Each message is stored under its 16 raw id bytes in two column
//! families: `data` (the message bytes) and `meta` (the spool record JSON).
//! One RocksDB instance is opened per distinct spool path, at
//! `<path>/db`; if `data` and `meta` share a path they share one instance
//! and a message's two writes become one atomic batch.
//!
//! Durability: a dedicated writer thread group-commits every queued request
//! with one synced WAL write per instance, so `store` returning `Ok` means
//! the message is on stable storage. Data is written before meta; meta is
//! the commit point, which is what start-up enumeration trusts. Entries that
//! cannot be trusted are moved to `<meta path>/corrupt/` and logged.

mod config;
mod db;
mod dirs;
mod enumerate;
mod error;
mod load;
mod space;
mod spool;
mod writer;

pub use config::{parse_definition, register, SpoolDefinition, SpoolKind, SpoolName, Threshold};
pub use enumerate::Enumeration;
pub use error::SpoolError;
pub use spool::{Spool, SpoolOptions, SpoolStats};
