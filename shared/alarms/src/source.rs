//! Where an evaluation reads metric values from: a port, so the same evaluation runs over
//! EMF lines collected locally, gauge readings, or a recorded series in a test.

use std::collections::BTreeMap;

use crate::model::MetricId;

/// One raw value of a metric, as an EMF line or a gauge reading gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub value: f64,
}

/// Raw values of metrics.
pub trait MetricSource {
    /// The samples of exactly `metric` (same namespace, name and dimension set: CloudWatch
    /// does not aggregate across dimensions for an alarm) with `from_ms <= at_ms < to_ms`.
    /// Samples outside that range, or not finite, are ignored by the evaluation.
    fn samples(&self, metric: &MetricId, from_ms: i64, to_ms: i64) -> Vec<Sample>;
}

/// Samples kept in memory, per metric.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    series: BTreeMap<MetricId, Vec<Sample>>,
}

impl Recorded {
    pub fn new() -> Recorded {
        Recorded::default()
    }

    /// Adds one value of `metric` at `at_ms`.
    pub fn record(&mut self, metric: &MetricId, at_ms: i64, value: f64) {
        self.series
            .entry(metric.clone())
            .or_default()
            .push(Sample { at_ms, value });
    }
}

impl MetricSource for Recorded {
    fn samples(&self, metric: &MetricId, from_ms: i64, to_ms: i64) -> Vec<Sample> {
        self.series
            .get(metric)
            .into_iter()
            .flatten()
            .filter(|s| (from_ms..to_ms).contains(&s.at_ms))
            .copied()
            .collect()
    }
}
