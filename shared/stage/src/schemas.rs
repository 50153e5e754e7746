//! Schema resolution for a whole batch: each id is resolved once per batch, never per record.

use std::collections::HashMap;
use std::sync::Arc;

use riffle_codec::envelope::ENVELOPE_SUBJECT;
use riffle_codec::source::SchemaSource;
use riffle_codec::{CodecError, CompiledSchema, Envelope, EnvelopeCodec, SchemaCache, frame};

/// Teaches `codec` the envelope versions in `records` it has not seen (written by newer
/// producers or stages); returns the ids the registry could not be asked about, whose records
/// must be retried rather than rejected.
pub async fn learn_envelope_versions<'a, S: SchemaSource>(
    codec: &EnvelopeCodec,
    cache: &SchemaCache<S>,
    records: impl Iterator<Item = &'a [u8]>,
) -> Vec<u32> {
    let mut unknown: Vec<u32> = records
        .filter_map(|data| frame::split(data).ok().map(|(id, _)| id))
        .filter(|id| !codec.knows(*id))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    let mut unavailable = Vec::new();
    for id in unknown {
        match cache.get(id).await {
            // Only an envelope-shaped schema may become an envelope version; any other schema
            // id in an envelope frame is a producer error, rejected when decoding.
            Ok(schema) if schema.full_name().as_deref() == Some(ENVELOPE_SUBJECT) => {
                codec.learn(schema)
            }
            Ok(_) => {}
            Err(e) if e.retryable() => unavailable.push(id),
            Err(e) => tracing::debug!(id, error = %e, "envelope version not learned"),
        }
    }
    unavailable
}

/// The payload schemas of a batch, by id.
pub type BatchSchemas = HashMap<u32, Result<Arc<CompiledSchema>, CodecError>>;

/// Resolves each distinct payload schema id of the decoded envelopes once.
pub async fn resolve_payload_schemas<S: SchemaSource>(
    cache: &SchemaCache<S>,
    envelopes: &[Result<Envelope, CodecError>],
) -> BatchSchemas {
    let mut resolved = HashMap::new();
    for envelope in envelopes.iter().flatten() {
        let Ok(id) = u32::try_from(envelope.schema_id) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(id) {
            slot.insert(cache.get(id).await);
        }
    }
    resolved
}
