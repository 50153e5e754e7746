//! The four stages' names, one definition each: they name `stage_times` entries, reject and
//! park messages, origins (`<stage>/<shard>`), metrics' `Service` dimension and the harness's
//! processes.

/// The validator.
pub const VALIDATOR: &str = "validator";
/// The enricher.
pub const ENRICHER: &str = "enricher";
/// The aggregator.
pub const AGGREGATOR: &str = "aggregator";
/// The archiver.
pub const ARCHIVER: &str = "archiver";
/// All four, in pipeline order.
pub const ALL: [&str; 4] = [VALIDATOR, ENRICHER, AGGREGATOR, ARCHIVER];
