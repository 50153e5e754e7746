//! Turning a Lambda batch of `enriched` records into envelopes, parking what cannot be; the
//! first step of the stages that read `enriched` (aggregator, archiver).
//!
//! The envelope version is in every record's frame. Versions this binary was not built
//! with are fetched from the registry once per id for the whole batch (never per record)
//! and taught to the codec ([`crate::schemas`]). Only a registry outage is worth a retry,
//! and it concerns the whole batch, so it is the one error returned; everything about the
//! bytes themselves becomes a dead-letter message (see [`crate::dead_letter`]).

use crate::KinesisEventRecord;
use riffle_codec::source::SchemaSource;
use riffle_codec::{CodecError, EnvelopeCodec, EnvelopeRef, SchemaCache};

use crate::dead_letter::park_message;
use crate::reject::RejectMessage;
use crate::schemas::learn_envelope_versions;

/// A decoded record: its position in the batch and its envelope (with `enrichment` set),
/// read in place from the record's bytes (these stages only read envelopes).
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// Index of the record in the Lambda event.
    pub index: usize,
    /// The envelope.
    pub envelope: EnvelopeRef<'a>,
}

/// What a batch decoded to.
#[derive(Debug, Default)]
pub struct DecodedBatch<'a> {
    /// Records to process, in batch order.
    pub records: Vec<Decoded<'a>>,
    /// Records that can never be processed, as dead-letter messages.
    pub parked: Vec<RejectMessage>,
}

/// Decodes every record of the batch.
///
/// # Errors
/// [`CodecError::RegistryUnavailable`] when an unknown envelope version could not be fetched.
pub async fn decode_batch<'a, S: SchemaSource>(
    stage: &str,
    codec: &EnvelopeCodec,
    schemas: &SchemaCache<S>,
    records: &'a [KinesisEventRecord],
) -> Result<DecodedBatch<'a>, CodecError> {
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

    // Sized for the whole batch up front: a decoded record is a few hundred bytes, and a
    // batch growing by doubling copied megabytes into freshly faulted pages.
    let mut batch = DecodedBatch {
        records: Vec::with_capacity(records.len()),
        parked: Vec::new(),
    };
    for (index, record) in records.iter().enumerate() {
        match codec.decode_ref(&record.kinesis.data) {
            Ok(envelope) if envelope.enrichment.is_none() => {
                let message = park_message(
                    stage,
                    record,
                    "no_enrichment",
                    format!("envelope of event {} has no enrichment", envelope.event_id),
                );
                batch.parked.push(message.with_envelope(&envelope));
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
mod tests {
    use riffle_codec::envelope::ENVELOPE_SCHEMA;

    use super::*;
    use crate::testing::{MapSource, enriched_envelope, kinesis_event};

    #[tokio::test]
    async fn parks_garbage_and_unenriched_and_keeps_the_rest() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let cache = SchemaCache::new(MapSource::default());
        let mut plain = enriched_envelope("k", 1.0, 0);
        plain.enrichment = None;
        let ev = kinesis_event(&[
            codec.encode(&enriched_envelope("k", 1.0, 0)).unwrap(),
            vec![1, 2, 3],
            codec.encode(&plain).unwrap(),
            codec.encode(&enriched_envelope("k", 2.0, 0)).unwrap(),
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
        let cache = SchemaCache::new(MapSource::with([(9, ENVELOPE_SCHEMA)], []));
        let ev = kinesis_event(&[
            newer.encode(&enriched_envelope("a", 1.0, 0)).unwrap(),
            newer.encode(&enriched_envelope("b", 1.0, 0)).unwrap(),
            // Version 11 is unknown to the registry: parked, not retried.
            {
                let mut b = newer.encode(&enriched_envelope("c", 1.0, 0)).unwrap();
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
        assert_eq!(cache.source().fetched(), vec![9, 11]);
    }

    #[tokio::test]
    async fn a_registry_outage_fails_the_batch() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let other = EnvelopeCodec::new(9).unwrap();
        let source = MapSource::default();
        source.set_down(true);
        let cache = SchemaCache::new(source);
        let ev = kinesis_event(&[other.encode(&enriched_envelope("a", 1.0, 0)).unwrap()]);
        let err = decode_batch("test", &codec, &cache, &ev.records)
            .await
            .unwrap_err();
        assert!(err.retryable());
    }
}
