//! hermod-http
