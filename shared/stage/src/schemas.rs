//! Schema resolution for a whole batch: each id is resolved once per batch, never per record,
//! and the ids not cached yet are fetched concurrently (a cold process's first batch carries
//! several, and one registry round trip after another was most of its first answer).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;

use riffle_codec::envelope::ENVELOPE_SUBJECT;
use riffle_codec::source::SchemaSource;
use riffle_codec::{
    CodecError, CompiledSchema, Envelope, EnvelopeCodec, EnvelopeHead, SchemaCache, frame,
};

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
    for (id, answer) in fetch_all(cache, unknown).await {
        match answer {
            // Only an envelope-shaped schema may become an envelope version; any other schema
            // id in an envelope frame is a producer error, rejected when decoding.
            Ok(schema) if schema.full_name() == Some(ENVELOPE_SUBJECT) => codec.learn(schema),
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
    resolve_schemas_of(cache, envelopes.iter().flatten()).await
}

/// Resolves each distinct payload schema id of `envelopes` once. An id that is no registry id
/// (negative) is not asked for; [`payload_schema`] then rejects its records.
pub async fn resolve_schemas_of<'a, S: SchemaSource, E: EnvelopeHead + 'a>(
    cache: &SchemaCache<S>,
    envelopes: impl IntoIterator<Item = &'a E>,
) -> BatchSchemas {
    resolve_schema_ids(cache, payload_schema_ids(envelopes)).await
}

/// The registry ids among the payload schema ids of `envelopes` (negative ids are no registry
/// ids), repeats included.
pub fn payload_schema_ids<'a, E: EnvelopeHead + 'a>(
    envelopes: impl IntoIterator<Item = &'a E>,
) -> Vec<u32> {
    envelopes
        .into_iter()
        .filter_map(|e| u32::try_from(e.schema_id()).ok())
        .collect()
}

/// Resolves each distinct id of `ids` once: from the cache, or fetched concurrently.
pub async fn resolve_schema_ids<S: SchemaSource>(
    cache: &SchemaCache<S>,
    ids: impl IntoIterator<Item = u32>,
) -> BatchSchemas {
    let mut resolved = HashMap::new();
    let mut missing = Vec::new();
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = resolved.entry(id) {
            match cache.get_cached(id) {
                Some(schema) => {
                    slot.insert(Ok(schema));
                }
                None => missing.push(id),
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();
    resolved.extend(fetch_all(cache, missing).await);
    resolved
}

/// Registry requests in flight at once for one batch: enough for the few ids a batch
/// normally brings, few enough that a batch of made-up ids cannot flood the registry.
pub const CONCURRENT_FETCHES: usize = 8;

/// Each of `ids` (distinct) from `cache`, up to [`CONCURRENT_FETCHES`] at a time.
async fn fetch_all<S: SchemaSource>(
    cache: &SchemaCache<S>,
    ids: Vec<u32>,
) -> Vec<(u32, Result<Arc<CompiledSchema>, CodecError>)> {
    futures_util::stream::iter(ids)
        .map(|id| async move { (id, cache.get(id).await) })
        .buffer_unordered(CONCURRENT_FETCHES)
        .collect()
        .await
}

/// Takes out of `schemas` an error worth retrying (the registry could not be asked), if any:
/// stages that cannot retry single records fail the whole batch with it.
pub fn take_outage(schemas: &mut BatchSchemas) -> Option<CodecError> {
    let id = schemas
        .iter()
        .find_map(|(id, s)| matches!(s, Err(e) if e.retryable()).then_some(*id))?;
    schemas.remove(&id).and_then(Result::err)
}

/// The writer schema of `envelope`'s payload among the batch's, or why the record cannot be
/// read: a reject code and its detail.
///
/// # Errors
/// The schema id was not resolved (negative, or not in the batch) or the registry refused it.
pub fn payload_schema<'a, E: EnvelopeHead>(
    schemas: &'a BatchSchemas,
    envelope: &E,
) -> Result<&'a Arc<CompiledSchema>, (&'static str, String)> {
    match u32::try_from(envelope.schema_id())
        .ok()
        .and_then(|id| schemas.get(&id))
    {
        Some(Ok(schema)) => Ok(schema),
        Some(Err(e)) => Err((e.code(), e.to_string())),
        None => Err((
            "unknown_schema",
            format!("schema id {} not registered", envelope.schema_id()),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testing::{MapSource, enriched_envelope};

    const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");

    #[tokio::test]
    async fn each_id_is_resolved_once_and_outages_are_taken_out() {
        let cache = SchemaCache::new(MapSource::with([(3, ORDER)], [5]));
        let mut envelopes = vec![enriched_envelope("a", 1.0, 0); 3];
        envelopes[1].schema_id = 4;
        envelopes[2].schema_id = 5;
        let mut negative = enriched_envelope("b", 1.0, 0);
        negative.schema_id = -1;
        envelopes.push(negative.clone());
        envelopes.push(enriched_envelope("c", 1.0, 0));

        let mut schemas = resolve_schemas_of(&cache, &envelopes).await;
        let mut fetched = cache.source().fetched();
        fetched.sort_unstable();
        assert_eq!(fetched, vec![3, 4, 5]);
        assert_eq!(payload_schema(&schemas, &envelopes[0]).unwrap().id(), 3);
        assert_eq!(
            payload_schema(&schemas, &envelopes[1]).unwrap_err().0,
            "unknown_schema"
        );
        assert_eq!(
            payload_schema(&schemas, &negative).unwrap_err().0,
            "unknown_schema"
        );

        assert!(take_outage(&mut schemas).unwrap().retryable());
        assert!(take_outage(&mut schemas).is_none());
        assert_eq!(schemas.len(), 2);
    }

    /// Answers every id as unknown after a pause, counting the fetches in flight.
    #[derive(Default)]
    struct SlowSource {
        in_flight: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        asked: std::sync::Mutex<Vec<u32>>,
    }

    impl SchemaSource for SlowSource {
        async fn fetch_schema(
            &self,
            id: u32,
        ) -> Result<riffle_codec::source::Fetched, riffle_codec::source::SourceError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.asked.lock().unwrap().push(id);
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            Err(riffle_codec::source::SourceError::NotFound(id))
        }
    }

    #[tokio::test]
    async fn a_batchs_new_ids_are_fetched_together_a_bounded_number_at_a_time() {
        use std::sync::atomic::Ordering::SeqCst;
        let cache = SchemaCache::new(SlowSource::default());
        let envelopes: Vec<_> = (0..40_i32)
            .map(|i| {
                let mut e = enriched_envelope("k", 1.0, 0);
                e.schema_id = 100 + i % 20;
                e
            })
            .collect();
        let schemas = resolve_schemas_of(&cache, &envelopes).await;
        assert_eq!(schemas.len(), 20);
        assert!(
            schemas
                .values()
                .all(|s| s.as_ref().is_err_and(|e| !e.retryable()))
        );
        let mut asked = cache.source().asked.lock().unwrap().clone();
        asked.sort_unstable();
        assert_eq!(asked, (100..120).collect::<Vec<_>>(), "each id once");
        assert_eq!(cache.source().most.load(SeqCst), CONCURRENT_FETCHES);

        // Two new ids: both in flight at once.
        let cache = SchemaCache::new(SlowSource::default());
        let two = [
            envelopes[0].clone(),
            envelopes[1].clone(),
            envelopes[0].clone(),
        ];
        resolve_schemas_of(&cache, &two).await;
        assert_eq!(cache.source().most.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unknown_id_is_asked_again_only_after_a_while() {
        let ttl = std::time::Duration::from_millis(300);
        let cache = SchemaCache::new(SlowSource::default()).with_unknown_ttl(ttl);
        let mut envelope = enriched_envelope("k", 1.0, 0);
        envelope.schema_id = 999_999;
        for _ in 0..3 {
            let schemas = resolve_schemas_of(&cache, [&envelope]).await;
            assert_eq!(
                payload_schema(&schemas, &envelope).unwrap_err().0,
                "unknown_schema"
            );
        }
        assert_eq!(cache.source().asked.lock().unwrap().len(), 1);
        tokio::time::sleep(ttl).await;
        resolve_schemas_of(&cache, [&envelope]).await;
        assert_eq!(cache.source().asked.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_outage_is_not_remembered() {
        let cache = SchemaCache::new(MapSource::with([], [7]));
        let mut envelope = enriched_envelope("k", 1.0, 0);
        envelope.schema_id = 7;
        for _ in 0..2 {
            let mut schemas = resolve_schemas_of(&cache, [&envelope]).await;
            assert!(take_outage(&mut schemas).is_some());
        }
        assert_eq!(cache.source().fetches(), 2);
    }
}
