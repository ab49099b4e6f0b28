//! The message model shared by every Hermod crate: spool ids, envelope
//! addresses, the message itself (meta, data, attempts), scheduled-queue
//! names, the reception/delivery protocol, header editing and reception
//! trace headers. `lua` exposes the Message object to policies; `dkim` is the
//! interface through which it calls the DKIM signers of `hermod-dkim`.

pub mod accept;
mod address;
pub mod address_header;
pub mod admin;
pub mod conformance;
mod count;
pub mod dkim;
pub mod headers;
mod id;
mod json_line;
pub mod lua;
mod message;
mod protocol;
pub mod queue_name;
pub mod report;
pub mod scheduling;
mod spool_record;
pub mod trace;

pub use accept::{
    AcceptError, Accepted, Acceptor, InboundReport, Received, ReceptionInfo, RejectionInfo,
};
pub use address::{AddressError, EnvelopeAddress};
pub use admin::Admin;
pub use count::{message_count, Counted};
pub use dkim::{DkimSigner, SignMessage};
pub use id::{IdError, SpoolId};
pub use json_line::{write_json_str, JsonLine};
pub use message::{Message, MessageError, SpoolWrite};
pub use protocol::Protocol;
pub use queue_name::QueueNameComponents;
pub use scheduling::{ScheduleError, Scheduling};
pub use spool_record::{SpoolRecord, SpoolRecordError, LOG_RECORD_KEY};
