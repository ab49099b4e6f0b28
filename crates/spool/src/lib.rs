//! hermod-spool
