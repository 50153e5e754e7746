//! What a run of the local twin measured, per event: the inputs of the cost model. Written by
//! `riffle-dev demo` next to its state, read by `riffle cost`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where `riffle-dev demo` leaves its figures, under the project root.
pub const DEMO_FIGURES: &str = ".riffle/demo-figures.json";

/// The committed load report `riffle cost` prices unless told otherwise: a release run of
/// `riffle-dev load` on the project's 2-core machine (docs/cost.md says how it was made).
pub const BASELINE_REPORT: &str = "docs/load/baseline/report.json";

/// Per-event figures of one run. Per event means per valid event, the ones that reach every
/// stage; what invalid events cost is in the validator's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// How they were measured (the command line).
    pub source: String,
    /// When (RFC 3339).
    pub measured_at: String,
    /// Events produced in the run.
    pub events: u64,
    /// Of which valid.
    pub valid_events: u64,
    /// Average raw record, envelope and partition key (bytes).
    pub event_bytes: f64,
    /// Kinesis PUT payload units per event: the producer's and the stages'.
    pub put_units: f64,
    /// DynamoDB items read by key per event (all bookkeeping included).
    pub dynamo_reads: f64,
    /// DynamoDB items written per event.
    pub dynamo_writes: f64,
    /// Archive objects written per event.
    pub s3_puts: f64,
    /// Archive bytes per event (Parquet, compressed).
    pub archive_bytes: f64,
    /// Messages sent to the rejects and dead-letter queues per event.
    pub queue_messages: f64,
    /// Per stage: its invocations and handler time per event.
    pub stages: Vec<StageFigures>,
}

/// One stage's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFigures {
    /// The stage.
    pub stage: String,
    /// Batches (Lambda invocations) per event.
    pub batches: f64,
    /// Handler milliseconds per event.
    pub handler_ms: f64,
}

impl Figures {
    /// Reads figures written by [`Figures::write`].
    ///
    /// # Errors
    /// The file is missing or is not figures; the message says how to make one.
    pub fn read(path: &Path) -> Result<Figures, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read measured figures {}: {e}; run `riffle-dev load` or `riffle-dev \
                 demo` (both write them) and pass --figures",
                path.display()
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        // A load report (`riffle-dev load`'s report.json) holds its figures under `figures`.
        let figures = match value.get("figures") {
            Some(inner) if value.get("seconds").is_some() => inner.clone(),
            _ => value,
        };
        serde_json::from_value(figures)
            .map_err(|e| format!("{} holds no figures: {e}", path.display()))
    }

    /// Writes the figures as JSON.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}
