//! Per-record failures of one batch, reported the way Lambda expects them.

use crate::KinesisEventRecord;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};

/// Sequence numbers of the records a handler could not finish.
///
/// Lambda (and the local runtime) restarts the shard from the lowest failed sequence number,
/// so reporting one failure re-delivers it and everything after it; effects downstream must be
/// idempotent for that reason.
#[derive(Debug, Default)]
pub struct Failures {
    sequence_numbers: Vec<String>,
}

impl Failures {
    /// Marks a record as failed.
    pub fn fail(&mut self, record: &KinesisEventRecord) {
        self.sequence_numbers
            .push(record.kinesis.sequence_number.clone());
    }

    /// Whether `record` was marked failed.
    pub fn contains(&self, record: &KinesisEventRecord) -> bool {
        self.sequence_numbers
            .contains(&record.kinesis.sequence_number)
    }

    /// How many records failed.
    pub fn len(&self) -> usize {
        self.sequence_numbers.len()
    }

    /// True when every record succeeded.
    pub fn is_empty(&self) -> bool {
        self.sequence_numbers.is_empty()
    }

    /// The partial batch response.
    pub fn into_response(self) -> KinesisEventResponse {
        let mut response = KinesisEventResponse::default();
        response.batch_item_failures = self
            .sequence_numbers
            .into_iter()
            .map(|seq| {
                let mut failure = KinesisBatchItemFailure::default();
                failure.item_identifier = Some(seq);
                failure
            })
            .collect();
        response
    }
}

/// The shard a record came from (Lambda's `eventID` is `shardId-...:<sequence>`).
pub fn shard_id(record: &KinesisEventRecord) -> &str {
    &record.source.shard_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_become_item_identifiers() {
        let mut record = KinesisEventRecord::default();
        record.kinesis.sequence_number = "4955".into();
        record.source = crate::Source::of_shard("shardId-000000000001");
        let mut failures = Failures::default();
        assert!(failures.is_empty());
        failures.fail(&record);
        assert_eq!(shard_id(&record), "shardId-000000000001");
        let response = failures.into_response();
        assert_eq!(response.batch_item_failures.len(), 1);
        assert_eq!(
            response.batch_item_failures[0].item_identifier.as_deref(),
            Some("4955")
        );
    }
}
