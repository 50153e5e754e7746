//! The ground truth of a run: what the view must hold and what the validator must reject.
//!
//! Sums of `f64` depend on the order of addition, and the pipeline adds in whatever order
//! batches arrive, so a view must be compared with [`Totals::approx_eq`] (relative tolerance
//! [`RELATIVE_TOLERANCE`]), never with `==`. Counts are exact.

use std::collections::{BTreeMap, BTreeSet};

use crate::generator::{Expected, GeneratedEvent};

/// Relative tolerance for comparing floating sums, min and max.
pub const RELATIVE_TOLERANCE: f64 = 1e-9;
/// Absolute tolerance for values near zero.
pub const ABSOLUTE_TOLERANCE: f64 = 1e-6;

/// Whether two floats are equal within [`RELATIVE_TOLERANCE`] (or [`ABSOLUTE_TOLERANCE`]).
pub fn approx_eq(a: f64, b: f64) -> bool {
    let diff = (a - b).abs();
    diff <= ABSOLUTE_TOLERANCE || diff <= RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

/// The aggregate of one view row: `(agg_key, window_start)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// Number of events.
    pub count: u64,
    /// Sum of their metrics.
    pub sum: f64,
    /// Smallest metric.
    pub min: f64,
    /// Largest metric.
    pub max: f64,
}

impl Totals {
    /// The totals of a single metric.
    pub fn of(metric: f64) -> Self {
        Totals {
            count: 1,
            sum: metric,
            min: metric,
            max: metric,
        }
    }

    /// Adds one metric.
    pub fn add(&mut self, metric: f64) {
        self.count += 1;
        self.sum += metric;
        self.min = self.min.min(metric);
        self.max = self.max.max(metric);
    }

    /// Exact count, floats within tolerance.
    pub fn approx_eq(&self, other: &Totals) -> bool {
        self.count == other.count
            && approx_eq(self.sum, other.sum)
            && approx_eq(self.min, other.min)
            && approx_eq(self.max, other.max)
    }
}

/// Accumulates the [`Expected`] outcome of every event put.
#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    view: BTreeMap<(String, i64), Totals>,
    valid_ids: BTreeSet<String>,
    rejects: BTreeMap<String, u64>,
    rejected_ids: BTreeMap<String, &'static str>,
    unreadable_rejects: u64,
    missing_reference: u64,
}

impl GroundTruth {
    /// An empty ground truth.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one event that was put. Record each event once, after it was accepted by
    /// Kinesis: the pipeline's view counts each event once however often it was retried.
    pub fn record(&mut self, event: &GeneratedEvent) {
        match &event.expected {
            Expected::Valid {
                agg_key,
                window_start,
                metric,
                reference_found,
                ..
            } => {
                self.view
                    .entry((agg_key.clone(), *window_start))
                    .and_modify(|t| t.add(*metric))
                    .or_insert_with(|| Totals::of(*metric));
                self.valid_ids.insert(event.event_id.clone());
                if *reference_found == Some(false) {
                    self.missing_reference += 1;
                }
            }
            Expected::Rejected {
                code,
                envelope_readable,
            } => {
                *self.rejects.entry((*code).to_string()).or_default() += 1;
                if *envelope_readable {
                    self.rejected_ids.insert(event.event_id.clone(), code);
                } else {
                    self.unreadable_rejects += 1;
                }
            }
        }
    }

    /// What the materialized view must hold: `(agg_key, window_start)` -> totals.
    pub fn view(&self) -> &BTreeMap<(String, i64), Totals> {
        &self.view
    }

    /// Number of valid events.
    pub fn valid(&self) -> u64 {
        self.valid_ids.len() as u64
    }

    /// Number of rejected events.
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }

    /// Number of events recorded.
    pub fn total(&self) -> u64 {
        self.valid() + self.rejected()
    }

    /// Valid events whose product or device is not in the reference catalogue.
    pub fn missing_reference(&self) -> u64 {
        self.missing_reference
    }

    /// Reject counts by reject code.
    pub fn rejects_by_code(&self) -> &BTreeMap<String, u64> {
        &self.rejects
    }

    /// Ids of the valid events: each must be in the archive.
    pub fn valid_event_ids(&self) -> &BTreeSet<String> {
        &self.valid_ids
    }

    /// Rejected events whose envelope still decodes, by event id, with their reject code.
    /// The others ([`GroundTruth::unreadable_rejects`]) can only be counted, not named.
    pub fn rejected_event_ids(&self) -> &BTreeMap<String, &'static str> {
        &self.rejected_ids
    }

    /// Rejected events whose envelope does not decode (bad frame or envelope bytes).
    pub fn unreadable_rejects(&self) -> u64 {
        self.unreadable_rejects
    }
}
