//! hermod-smtp
