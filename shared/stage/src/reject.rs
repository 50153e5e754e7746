//! The message a rejected record becomes on the rejects queue.
//!
//! It carries the reason in machine-readable form and the original bytes, so a fixed record
//! can be replayed and nothing is lost.

use crate::KinesisEventRecord;
use base64::Engine as _;
use riffle_codec::EnvelopeHead;
use serde::{Deserialize, Serialize};

use crate::batch::shard_id;

/// Body of one message on the rejects queue (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectMessage {
    /// Stable reason code, e.g. `pattern_mismatch`.
    pub code: String,
    /// Human-readable detail.
    pub detail: String,
    /// The stage that rejected it.
    pub stage: String,
    /// Envelope event id, when the envelope could be read.
    pub event_id: Option<String>,
    /// Envelope subject, when the envelope could be read.
    pub subject: Option<String>,
    /// Envelope source, when the envelope could be read.
    pub source: Option<String>,
    /// Where the record was on its stream.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// Its partition key.
    pub partition_key: String,
    /// The record's bytes exactly as received, base64.
    pub data_base64: String,
}

impl RejectMessage {
    /// A reject for `record` with reason `code`.
    pub fn new(stage: &str, record: &KinesisEventRecord, code: &str, detail: String) -> Self {
        RejectMessage {
            code: code.to_string(),
            detail,
            stage: stage.to_string(),
            event_id: None,
            subject: None,
            source: None,
            shard_id: shard_id(record).to_string(),
            sequence_number: record.kinesis.sequence_number.clone(),
            partition_key: record.kinesis.partition_key.clone(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(&record.kinesis.data),
        }
    }

    /// The same reject naming the event it carried (when its envelope could be read).
    pub fn with_envelope<E: EnvelopeHead>(mut self, envelope: &E) -> Self {
        self.event_id = Some(envelope.event_id().to_owned());
        self.subject = Some(envelope.subject().to_owned());
        self.source = Some(envelope.source().to_owned());
        self
    }

    /// The original record bytes.
    ///
    /// # Errors
    /// If `data_base64` is not base64 (a message not written by Riffle).
    pub fn data(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.data_base64)
    }

    /// As an SQS message; the id is unique within a batch, attributes allow filtering by reason.
    pub fn to_sqs(&self, id: String) -> riffle_aws::SqsMessage {
        riffle_aws::SqsMessage {
            id,
            body: serde_json::to_string(self).unwrap_or_default(),
            attributes: vec![
                ("code".to_string(), self.code.clone()),
                ("stage".to_string(), self.stage.clone()),
            ],
        }
    }
}

/// The body of one message on a rejects or dead-letter queue: the rejects of one batch, as
/// many as fit in one SQS message. Packing them is what keeps a queue's cost (and, locally,
/// moto's per-message work) proportional to batches rather than to bad records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectBatch {
    /// The rejected records, in batch order.
    pub rejects: Vec<RejectMessage>,
}

/// Reads a queue message body: a [`RejectBatch`], or a single [`RejectMessage`].
///
/// # Errors
/// A body that is neither.
pub fn parse_body(body: &str) -> Result<Vec<RejectMessage>, serde_json::Error> {
    match serde_json::from_str::<RejectBatch>(body) {
        Ok(batch) => Ok(batch.rejects),
        Err(_) => serde_json::from_str::<RejectMessage>(body).map(|one| vec![one]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_original_bytes() {
        let mut record = KinesisEventRecord::default();
        record.kinesis.data = vec![1, 2, 3, 255];
        record.kinesis.sequence_number = "7".into();
        record.kinesis.partition_key = "k".into();
        let msg = RejectMessage::new("validator", &record, "bad_magic", "byte 0 is 0x01".into());
        let sqs = msg.to_sqs("0".into());
        let back: RejectMessage = serde_json::from_str(&sqs.body).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.data().unwrap(), vec![1, 2, 3, 255]);
        assert_eq!(parse_body(&sqs.body).unwrap(), vec![msg.clone()]);
        let batch = serde_json::to_string(&RejectBatch {
            rejects: vec![msg.clone(), msg.clone()],
        })
        .unwrap();
        assert_eq!(parse_body(&batch).unwrap(), vec![msg.clone(), msg]);
        assert!(parse_body("{}").is_err());
    }
}
