//! Riffle's load generator: deterministic (seeded) events from several sources, and the ground
//! truth the end-to-end test and the demo compare the pipeline's outcome against.
//!
//! The ground truth is computed from the generated values and the rules files' meaning, never by
//! the pipeline's own code, so a bug there cannot hide by agreeing with itself. The crate is pure:
//! putting records on Kinesis is the publisher's job (`riffle-aws`).
//!
//! Layout:
//! - [`bench`]: what the stages' handler benchmarks share (timing loop, load average, enriched
//!   records built from generated events).
//! - [`reference`]: the fixed product and device catalogue seeded into the reference table.
//! - [`generator`]: [`Generator`], its [`GeneratorConfig`], the sources, the payloads, the
//!   invalid kinds and the [`Expected`] outcome of each [`GeneratedEvent`], one file each.
//! - [`truth`]: [`GroundTruth`], the expected view and rejects of a run.
//! - `events` (private): the payload structs, encoded with serde straight into their schemas.
//! - `rules` (private): the generator's own reading of `schemas/rules/*.json`.

pub mod bench;
mod events;
pub mod generator;
pub mod reference;
mod rules;
pub mod truth;

pub use generator::{
    Expected, GeneratedEvent, Generator, GeneratorConfig, InvalidKind, SchemaIds, Source,
    UNREGISTERED_SCHEMA_ID, parse_mix,
};
pub use reference::{ReferenceItem, reference_items};
pub use truth::{GroundTruth, Totals, approx_eq};

/// Why a generator could not be built or an event could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The caller's configuration is unusable.
    #[error("invalid generator config: {0}")]
    Config(String),
    /// A rules file the generator cannot read or follow.
    #[error("rules file {file}: {reason}")]
    Rules {
        /// The rules file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A schema that does not parse or a payload that does not fit it.
    #[error(transparent)]
    Codec(#[from] riffle_codec::CodecError),
}

impl LoadError {
    /// Nothing here heals by retrying: every error is about the config, the rules or the code.
    pub fn retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
