//! hermod-queue
