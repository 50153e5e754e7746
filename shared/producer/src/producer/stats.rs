//! [`Stats`], the producer's counts since it was built; the atomic counters behind them,
//! which the background task adds to; and the EMF metrics of their change.

use riffle_telemetry::names;
use std::sync::atomic::{AtomicU64, Ordering};

use riffle_telemetry::Metrics;

/// Counts since the producer was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// User records acknowledged by Kinesis.
    pub records: u64,
    /// Their bytes (framed data plus partition key).
    pub bytes: u64,
    /// Kinesis records written (plain records and aggregates).
    pub kinesis_records: u64,
    /// Of those, KPL aggregates.
    pub aggregates: u64,
    /// PUT payload units the written Kinesis records cost (see [`crate::payload_units`]).
    pub payload_units: u64,
    /// PutRecords requests made, retries included.
    pub put_requests: u64,
    /// Entries answered with ProvisionedThroughputExceeded.
    pub throttled: u64,
    /// Entries scheduled for another attempt.
    pub retries: u64,
    /// User records given up on (reported by [`Producer::flush`](super::Producer::flush) /
    /// [`Producer::close`](super::Producer::close)).
    pub failed: u64,
    /// User records in the buffer now (queued, in flight or waiting for a retry).
    pub buffered_records: u64,
    /// Their bytes.
    pub buffered_bytes: u64,
}

/// The counts behind [`Stats`]: atomics, so the task adds and the handle reads without a lock.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) kinesis_records: AtomicU64,
    pub(super) aggregates: AtomicU64,
    pub(super) payload_units: AtomicU64,
    pub(super) put_requests: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            records: get(&self.records),
            bytes: get(&self.bytes),
            kinesis_records: get(&self.kinesis_records),
            aggregates: get(&self.aggregates),
            payload_units: get(&self.payload_units),
            put_requests: get(&self.put_requests),
            throttled: get(&self.throttled),
            retries: get(&self.retries),
            failed: get(&self.failed),
            buffered_records: 0,
            buffered_bytes: 0,
        }
    }
}

/// The EMF metrics for the change from `before` to `now`.
pub(super) fn emf_delta(service: &str, before: &Stats, now: &Stats) -> Metrics {
    let mut m = Metrics::new(service.to_owned());
    for (name, a, b) in [
        (names::RECORDS_PUT, before.records, now.records),
        (names::BYTES_PUT, before.bytes, now.bytes),
        (
            names::KINESIS_RECORDS_PUT,
            before.kinesis_records,
            now.kinesis_records,
        ),
        (
            names::PUT_PAYLOAD_UNITS,
            before.payload_units,
            now.payload_units,
        ),
        (names::PUT_REQUESTS, before.put_requests, now.put_requests),
        (names::THROTTLED, before.throttled, now.throttled),
        (names::RETRIES, before.retries, now.retries),
        (names::RECORDS_FAILED, before.failed, now.failed),
    ] {
        m.count(name, b.saturating_sub(a));
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn emf_reports_deltas() {
        let before = Stats {
            records: 10,
            put_requests: 1,
            ..Stats::default()
        };
        let now = Stats {
            records: 25,
            put_requests: 3,
            throttled: 2,
            ..Stats::default()
        };
        let line = emf_delta("producer-test", &before, &now)
            .to_line(0)
            .unwrap();
        let parsed = riffle_telemetry::parse_emf_line(&line).unwrap();
        assert_eq!(parsed.service, "producer-test");
        assert_eq!(parsed.sum("RecordsPut"), 15.0);
        assert_eq!(parsed.sum("PutRequests"), 2.0);
        assert_eq!(parsed.sum("Throttled"), 2.0);
        assert_eq!(parsed.sum("RecordsFailed"), 0.0);
    }
}
