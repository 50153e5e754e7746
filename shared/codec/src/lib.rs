//! Riffle's wire format: Confluent framing, the envelope, payload schemas cached per id,
//! payload validation against subject rules.
//!
//! Layout:
//! - [`frame`]: the 5-byte Confluent header.
//! - [`envelope`]: the [`Envelope`] every stage passes on, encoded with serde straight to and
//!   from Avro (never through apache-avro's `Value`).
//! - [`schema`]: writer schemas parsed once per registry id ([`SchemaCache`]).
//! - [`datum`]: a schema-directed reader for payloads of any registered schema, which checks the
//!   bytes and lends out top-level fields without building a tree.
//! - [`rules`]: per-subject contracts (validation rules, enrichment), written in
//!   `schemas/rules/`; [`registered`]: the same as Confluent data-contract fields, as the
//!   registry stores them with each schema version.
//! - [`source`]: the port through which schemas are fetched.
//! - [`kpl`]: KPL-compatible aggregation of many records into one Kinesis record.
//! - [`position`]: a record's place on its shard ([`Position`]), as marks and view items keep it.
//! - [`compatibility`]: the compatibility levels a registry subject may have.

pub mod compatibility;
pub mod datum;
pub mod envelope;
mod error;
pub mod frame;
pub mod kpl;
pub mod position;
pub mod registered;
pub mod rules;
pub mod schema;
pub mod source;

pub use envelope::{
    Enrichment, EnrichmentRef, Envelope, EnvelopeCodec, EnvelopeHead, EnvelopeRef, Origin,
    OriginRef, stamp_origin, stamped_growth, unstamp_origin,
};
pub use error::CodecError;
pub use position::Position;
pub use schema::{CompiledSchema, SchemaCache};
