//! Riffle's wire format: Confluent framing, the envelope, payload schemas cached per id.
//!
//! Layout: `source` (the port through which schemas are fetched by id).
//! The rest of the codec lands in following modules.

pub mod source;
