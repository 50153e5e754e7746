//! A re-publishing stage's batch (validator, enricher): copies found by their origins, and
//! the new records given the stage's own origin, so the next stage drops what a retry of
//! this one publishes again.

use riffle_codec::source::SchemaSource;
use riffle_codec::{CodecError, Envelope, SchemaCache};
use riffle_telemetry::{Metrics, names};

use super::{Committed, Gate, MarkStore, Marks, Ticket};
use crate::dedup::{origin_of, record_positions, redriven_elsewhere, republished_origin_id};
use crate::ports::OutputError;
use crate::schemas::{BatchSchemas, payload_schema_ids, resolve_schema_ids};
use crate::{Failures, KinesisEventRecord};

/// A re-publishing stage's batch (validator, enricher): which records are copies, and the
/// tickets of the new ones, whose envelopes now carry the stage's own origin.
#[derive(Debug)]
pub struct Republish {
    gate: Gate,
    tickets: Vec<Option<Ticket>>,
    copies: Vec<bool>,
    /// Per record, the index of its shard in `watermarks`.
    shard_of: Vec<Option<usize>>,
    /// Per shard of the batch, its event-time watermark: stored, then moved by every record
    /// [`Republish::judge`]d in stream order.
    watermarks: Vec<Option<i64>>,
}

impl Republish {
    /// Whether record `index` is a copy of one this stage already handled: skip it.
    pub fn is_copy(&self, index: usize) -> bool {
        self.copies.get(index).copied().unwrap_or(false)
    }

    /// How many records are copies.
    pub fn copies(&self) -> usize {
        self.copies.iter().filter(|c| **c).count()
    }

    /// Whether new record `index` comes late (ADR 0021): its shard's event-time watermark
    /// (the latest event time seen on the shard before it) has reached `closes_at`, the
    /// watermark at which the record's window is final. Then `time` (the record's event time
    /// capped by the stream's clock) moves the watermark for the records after it, and is
    /// kept with the origin's mark once the record's effects land. Call it in stream order.
    pub fn judge(&mut self, index: usize, closes_at: i64, time: i64) -> bool {
        let Some(Some(shard)) = self.shard_of.get(index) else {
            return false;
        };
        let Some(watermark) = self.watermarks.get_mut(*shard) else {
            return false;
        };
        let late = watermark.is_some_and(|w| w >= closes_at);
        *watermark = (*watermark).max(Some(time));
        if let Some(Some(ticket)) = self.tickets.get(index) {
            self.gate.observe(*ticket, time);
        }
        late
    }
}

impl<M: MarkStore> Marks<M> {
    /// Admits a re-publishing stage's batch: each decoded envelope with a Kinesis position is
    /// admitted by its origin and, when new, given the origin `<stage>/<shard>` at its input
    /// position, which is the same on every retry, so the next stage drops the copies a retry
    /// of this one publishes. Undecodable records and records without a position pass
    /// unguarded (they are rejected, or carry no origin).
    ///
    /// # Errors
    /// The marks could not be read.
    pub async fn republish(
        &self,
        stage: &str,
        records: &[KinesisEventRecord],
        envelopes: &mut [Result<Envelope, CodecError>],
    ) -> Result<Republish, OutputError> {
        let positions = record_positions(records);
        let mut shards: Vec<&str> = positions.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut gate = self.open(stage, &shards).await?;
        // The stage's origin id per shard, made once: `<stage>/<shard>`.
        let ids: Vec<(&str, String)> = shards
            .iter()
            .map(|shard| (*shard, republished_origin_id(stage, shard)))
            .collect();
        let mut tickets = vec![None; records.len()];
        let mut copies = vec![false; records.len()];
        let watermarks = shards.iter().map(|s| gate.watermark(s)).collect();
        let shard_of = positions
            .iter()
            .map(|(shard, _)| shards.iter().position(|s| s == shard))
            .collect();
        for (i, (((shard, position), envelope), record)) in
            positions.iter().zip(envelopes).zip(records).enumerate()
        {
            let (Some(position), Ok(envelope)) = (position, envelope) else {
                continue;
            };
            if redriven_elsewhere(envelope, stage) {
                copies[i] = true;
                continue;
            }
            let (origin, seq) = origin_of(envelope, *position);
            match gate.admit(shard, origin, seq) {
                None => copies[i] = true,
                Some(ticket) => {
                    tickets[i] = Some(ticket);
                    let id = ids
                        .iter()
                        .find(|(s, _)| s == shard)
                        .map(|(_, id)| id.clone())
                        .unwrap_or_default();
                    // The record's own sequence number is the position's decimal form.
                    envelope.origin = Some(riffle_codec::Origin {
                        id,
                        seq: record.kinesis.sequence_number.clone(),
                        sub: i32::try_from(position.sub()).unwrap_or(i32::MAX),
                    });
                }
            }
        }
        Ok(Republish {
            gate,
            tickets,
            copies,
            shard_of,
            watermarks,
        })
    }

    /// [`Marks::republish`], with the payload schemas of `envelopes` resolved through `cache`
    /// at the same time: a cold process's first batch reads its marks while it fetches its
    /// schemas, where one round trip used to wait for the other. Admitting only sets the
    /// envelopes' origins, never their schema ids, so both see the same ids.
    ///
    /// # Errors
    /// The marks could not be read (the schemas resolved are kept in the cache).
    pub async fn republish_resolving<S: SchemaSource>(
        &self,
        stage: &str,
        records: &[KinesisEventRecord],
        envelopes: &mut [Result<Envelope, CodecError>],
        cache: &SchemaCache<S>,
    ) -> Result<(Republish, BatchSchemas), OutputError> {
        let ids = payload_schema_ids(envelopes.iter().flatten());
        let (batch, schemas) = futures_util::future::join(
            self.republish(stage, records, envelopes),
            resolve_schema_ids(cache, ids),
        )
        .await;
        Ok((batch?, schemas))
    }

    /// Marks done every admitted record that `failures` does not hold and commits.
    ///
    /// # Errors
    /// As [`Marks::commit`].
    pub async fn finish(
        &self,
        stage: &str,
        mut batch: Republish,
        records: &[KinesisEventRecord],
        failures: &Failures,
        now_secs: i64,
    ) -> Result<Committed, OutputError> {
        for (record, ticket) in records.iter().zip(&batch.tickets) {
            if let Some(ticket) = ticket
                && !failures.contains(record)
            {
                batch.gate.done(*ticket);
            }
        }
        self.commit(stage, &mut batch.gate, now_secs).await
    }

    /// [`Marks::finish`] at the end of a re-publishing stage's batch, with the batch's last
    /// metrics: the records failed for a retry and the marks items written, then `metrics`
    /// printed (whether the marks were written or not, so a failed batch is counted too).
    ///
    /// # Errors
    /// As [`Marks::finish`].
    pub async fn finish_reported(
        &self,
        stage: &str,
        batch: Republish,
        records: &[KinesisEventRecord],
        failures: &Failures,
        now_secs: i64,
        mut metrics: Metrics,
    ) -> Result<(), OutputError> {
        metrics.count(names::RECORDS_FAILED, failures.len() as u64);
        let committed = self.finish(stage, batch, records, failures, now_secs).await;
        metrics.count(
            names::MARK_WRITES,
            committed.as_ref().map_or(0, |c| c.writes) as u64,
        );
        metrics.flush();
        committed.map(|_| ())
    }
}
