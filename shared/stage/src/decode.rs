//! Turning a Lambda batch of `enriched` records into envelopes, parking what cannot be.
//!
//! The envelope version is in every record's frame. Versions this binary was not built
//! with are fetched from the registry once per id for the whole batch (never per record)
//! and taught to the codec (`riffle_stage::schemas`). Only a registry outage is worth a retry, and it concerns the
//! whole batch, so it is the one error returned; everything about the bytes themselves
//! becomes a dead-letter message (see [`crate::dead_letter`]).

use aws_lambda_events::event::kinesis::KinesisEventRecord;
use riffle_codec::source::SchemaSource;
use riffle_codec::{CodecError, Envelope, EnvelopeCodec, SchemaCache};

use riffle_stage::RejectMessage;
use riffle_stage::schemas::learn_envelope_versions;

use crate::dead_letter::park_message;

/// A decoded record: its position in the batch and its envelope (with `enrichment` set).
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Index of the record in the Lambda event.
    pub index: usize,
    /// The envelope.
    pub envelope: Envelope,
}

/// What a batch decoded to.
#[derive(Debug, Default)]
pub struct DecodedBatch {
    /// Records to process, in batch order.
    pub records: Vec<Decoded>,
    /// Records that can never be processed, as dead-letter messages.
    pub parked: Vec<RejectMessage>,
}

/// Decodes every record of the batch.
///
/// # Errors
/// [`CodecError::RegistryUnavailable`] when an unknown envelope version could not be fetched.
pub async fn decode_batch<S: SchemaSource>(
    stage: &str,
    codec: &EnvelopeCodec,
    schemas: &SchemaCache<S>,
    records: &[KinesisEventRecord],
) -> Result<DecodedBatch, CodecError> {
    let unavailable = learn_envelope_versions(
        codec,
        schemas,
        records.iter().map(|r| r.kinesis.data.as_slice()),
    )
    .await;
    if !unavailable.is_empty() {
        return Err(CodecError::RegistryUnavailable(format!(
            "envelope versions {unavailable:?} could not be fetched"
        )));
    }

    let mut batch = DecodedBatch::default();
    for (index, record) in records.iter().enumerate() {
        match codec.decode(&record.kinesis.data) {
            Ok(envelope) if envelope.enrichment.is_none() => {
                let mut message = park_message(
                    stage,
                    record,
                    "no_enrichment",
                    format!("envelope of event {} has no enrichment", envelope.event_id),
                );
                message.event_id = Some(envelope.event_id);
                message.subject = Some(envelope.subject);
                message.source = Some(envelope.source);
                batch.parked.push(message);
            }
            Ok(envelope) => batch.records.push(Decoded { index, envelope }),
            Err(e) => batch
                .parked
                .push(park_message(stage, record, e.code(), e.to_string())),
        }
    }
    Ok(batch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use aws_lambda_events::event::kinesis::KinesisEvent;
    use riffle_codec::envelope::ENVELOPE_SCHEMA;
    use riffle_codec::source::SourceError;
    use riffle_codec::{Enrichment, Envelope};

    use super::*;

    /// An in-memory registry: the schema port, not an AWS service.
    #[derive(Default)]
    pub(crate) struct MemorySource {
        pub schemas: HashMap<u32, String>,
        pub down: bool,
        pub fetches: Mutex<Vec<u32>>,
    }

    impl SchemaSource for MemorySource {
        async fn fetch_schema(&self, id: u32) -> Result<String, SourceError> {
            self.fetches.lock().unwrap().push(id);
            if self.down {
                return Err(SourceError::Unavailable("down".into()));
            }
            self.schemas
                .get(&id)
                .cloned()
                .ok_or(SourceError::NotFound(id))
        }
    }

    pub(crate) fn envelope(agg_key: &str, metric: f64, window_start: i64) -> Envelope {
        Envelope {
            event_id: format!("ev-{agg_key}-{metric}"),
            source: "test".into(),
            subject: "com.riffle.shop.OrderPlaced".into(),
            schema_id: 3,
            event_time: window_start + 1_000,
            ingest_time: window_start + 1_100,
            stage_times: HashMap::new(),
            trace_header: None,
            payload: vec![],
            enrichment: Some(Enrichment {
                agg_key: agg_key.into(),
                metric,
                window_start,
                reference_found: true,
                attributes: HashMap::new(),
            }),
        }
    }

    /// A Lambda event as Lambda sends it (JSON), one record per data blob.
    pub(crate) fn event(datas: &[Vec<u8>]) -> KinesisEvent {
        let records: Vec<serde_json::Value> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut blob = aws_lambda_events::encodings::Base64Data::default();
                blob.extend_from_slice(d);
                serde_json::json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": format!("pk-{i}"),
                        "sequenceNumber": format!("4959{i:04}"),
                        "data": blob,
                        "approximateArrivalTimestamp": 1_764_000_000.5
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("shardId-000000000000:4959{i:04}"),
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::000000000000:role/riffle",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/enriched"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    #[tokio::test]
    async fn parks_garbage_and_unenriched_and_keeps_the_rest() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let cache = SchemaCache::new(MemorySource::default());
        let mut plain = envelope("k", 1.0, 0);
        plain.enrichment = None;
        let ev = event(&[
            codec.encode(&envelope("k", 1.0, 0)).unwrap(),
            vec![1, 2, 3],
            codec.encode(&plain).unwrap(),
            codec.encode(&envelope("k", 2.0, 0)).unwrap(),
        ]);
        let batch = decode_batch("test", &codec, &cache, &ev.records)
            .await
            .unwrap();
        assert_eq!(
            batch.records.iter().map(|d| d.index).collect::<Vec<_>>(),
            vec![0, 3]
        );
        let reasons: Vec<_> = batch.parked.iter().map(|l| l.code.as_str()).collect();
        assert_eq!(reasons, vec!["bad_magic", "no_enrichment"]);
        assert_eq!(batch.parked[0].data().unwrap(), vec![1, 2, 3]);
        assert_eq!(batch.parked[1].event_id.as_deref(), Some("ev-k-1"));
        assert_eq!(batch.parked[0].sequence_number, "49590001");
    }

    #[tokio::test]
    async fn other_envelope_versions_are_fetched_once_per_batch() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let newer = EnvelopeCodec::new(9).unwrap();
        let source = MemorySource {
            schemas: HashMap::from([(9, ENVELOPE_SCHEMA.to_string())]),
            ..MemorySource::default()
        };
        let cache = SchemaCache::new(source);
        let ev = event(&[
            newer.encode(&envelope("a", 1.0, 0)).unwrap(),
            newer.encode(&envelope("b", 1.0, 0)).unwrap(),
            // Version 11 is unknown to the registry: parked, not retried.
            {
                let mut b = newer.encode(&envelope("c", 1.0, 0)).unwrap();
                b[4] = 11;
                b
            },
        ]);
        let batch = decode_batch("test", &codec, &cache, &ev.records)
            .await
            .unwrap();
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.parked.len(), 1);
        assert_eq!(batch.parked[0].code, "unknown_schema");
        assert_eq!(*cache.source().fetches.lock().unwrap(), vec![9, 11]);
    }

    #[tokio::test]
    async fn a_registry_outage_fails_the_batch() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let other = EnvelopeCodec::new(9).unwrap();
        let cache = SchemaCache::new(MemorySource {
            down: true,
            ..MemorySource::default()
        });
        let ev = event(&[other.encode(&envelope("a", 1.0, 0)).unwrap()]);
        let err = decode_batch("test", &codec, &cache, &ev.records)
            .await
            .unwrap_err();
        assert!(err.retryable());
    }
}
