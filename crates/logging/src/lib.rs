//! hermod-logging
