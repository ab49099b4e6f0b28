//! hermod-connectors
