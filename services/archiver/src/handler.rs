//! The archiver's batch handler: decode, render payloads, drop copies by their origins'
//! marks, one Parquet object per partition group, then one write of the shard's marks
//! (ADR 0009 "Amendment: the archive", ADR 0010).
//!
//! Exactly once, in this order:
//! 1. **Marks** (`riffle_stage::marks`, stage `archiver`): a record not above its origin's
//!    mark is a copy of one whose row is durable (a producer retry, an upstream re-publish, a
//!    redelivery after the marks were written) and is dropped.
//! 2. **Recovery**: the shard's write intents ([`crate::intent`]) name the objects an
//!    earlier attempt was writing when it died or failed, before its marks were written. Each
//!    one that exists is read back and the records of this batch found in it are skipped (its
//!    footer lists the rows' sub-record indexes, so their positions are exact). One that never
//!    got written is forgotten. One compacted away since (named in a compacted object's
//!    `riffle.replaces`) is found in the compacted object, where this batch's records are
//!    matched by shard, sequence number and event id. An intent whose object exists stays
//!    until the shard has moved past its records, so every later cut is matched too.
//! 3. **Writes**: the rest are grouped by (partition, shard). The groups' intents are added
//!    to the shard's item before any object is written; the objects are put, the marks move
//!    over every record whose row is durable, and the intents the marks now cover are removed.
//!
//! A redelivery, cut however it is (bisection halves, a batch that grew, a restart at a
//! later record), therefore skips every event whose row is durable: covered by the marks, or
//! in an object an intent names. Object keys are made of the shard and the first and last
//! sequence numbers of the rows written; a key that names an existing object with other rows
//! (found during recovery) gets a tag, so no write ever replaces rows that are durable.
//! Nothing is ever reported as a batch item failure: a record no retry can fix is parked
//! (see `riffle_stage::dead_letter`), and any failure to write affects the whole batch, so
//! it fails the batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::streams::KinesisEventResponse;
use md5::{Digest, Md5};
use riffle_codec::datum::to_json;
use riffle_codec::source::SchemaSource;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_runtime::{HandlerError, KinesisHandler};
use riffle_runtime::{KinesisEvent, KinesisEventRecord};
use riffle_stage::batch::shard_id;
use riffle_stage::dead_letter::{park, park_message};
use riffle_stage::decode::{DecodedBatch, decode_batch};
use riffle_stage::dedup::{Position, origin_of, record_positions, redriven_elsewhere};
use riffle_stage::marks::{Gate, MarkStore, Marks, Ticket};
use riffle_stage::schemas::{BatchSchemas, payload_schema, resolve_schemas_of, take_outage};
use riffle_stage::{RejectMessage, Rejects};
use riffle_telemetry::Metrics;
use tokio::task::JoinSet;

use crate::ArchiverError;
use crate::intent::{Intent, Intents, MAX_INTENTS_PER_WAVE};
use riffle_archive::bucket::ArchiveBucket;
use riffle_archive::key::{Partition, cmp_sequence, object_key, tagged_key};
use riffle_archive::scan::{is_compacted, replaces};
use riffle_archive::table::{ArchivedRow, attributes_json, read_rows, write_rows_with_metadata};

/// The `Service` dimension of the archiver's metrics, and its stage name in the marks.
pub const SERVICE: &str = "archiver";
/// Objects written at the same time.
pub const MAX_CONCURRENT_PUTS: usize = 8;
/// `stage_times` key of the validator's emit time.
pub const VALIDATOR_STAGE: &str = "validator";
/// `stage_times` key of the enricher's emit time.
pub const ENRICHER_STAGE: &str = "enricher";
/// Footer key of an archived object: the sub-record index of each row (its index among the
/// user records of its Kinesis record), comma-separated in row order. With the row's shard
/// and sequence number it gives the row's exact position, so recovery can tell every row of
/// an object that a crashed attempt wrote.
pub const SUB_INDEXES_KEY: &str = "riffle.sub_indexes";

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Records in the batch.
    pub records: usize,
    /// Records sent to the dead-letter queue.
    pub parked: usize,
    /// Rows archived by this batch.
    pub rows: usize,
    /// Records dropped as copies: not above their origin's mark.
    pub duplicates: usize,
    /// Records skipped: found in an object of an earlier attempt that had not marked them.
    pub recovered: usize,
    /// Keys of the objects written, sorted.
    pub objects: Vec<String>,
    /// Bytes written.
    pub bytes: usize,
    /// Marks items written.
    pub mark_writes: usize,
}

/// The archiver: writes every `enriched` event to the S3 archive once.
pub struct Archiver<S, O, M, I, D> {
    codec: EnvelopeCodec,
    schemas: SchemaCache<S>,
    store: Arc<O>,
    marks: Marks<M>,
    intents: I,
    dead_letters: D,
    prefix: String,
}

impl<S, O, M, I, D> std::fmt::Debug for Archiver<S, O, M, I, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("envelope_id", &self.codec.id())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A usable record, before its origin's mark is known.
struct Candidate {
    partition: Partition,
    row: ArchivedRow,
    sub: u32,
    origin: (String, Position),
}

/// A record admitted as new.
struct Fresh {
    partition: Partition,
    row: ArchivedRow,
    sub: u32,
    ticket: Ticket,
}

/// One object to write and the records it holds.
struct Group {
    shard: String,
    intent: Intent,
    body: Vec<u8>,
    rows: usize,
    tickets: Vec<Ticket>,
}

/// What recovery learned about one shard's intents.
#[derive(Default)]
struct Recovery {
    /// (shard, sequence number, event id) of rows found durable in the bucket.
    durable: HashSet<(String, String, String)>,
    /// Object keys seen in the partitions looked at.
    existing: HashSet<String>,
}

impl<S, O, M, I, D> Archiver<S, O, M, I, D>
where
    S: SchemaSource,
    O: ArchiveBucket,
    M: MarkStore,
    I: Intents,
    D: Rejects,
{
    /// An archiver reading envelopes with `codec`, payload (and other envelope) schemas from
    /// `schemas`, writing objects under `prefix`, each event once by the origin marks in
    /// `marks` (stage [`SERVICE`]) and the write intents in `intents`.
    pub fn new(
        codec: EnvelopeCodec,
        schemas: SchemaCache<S>,
        store: O,
        marks: Marks<M>,
        intents: I,
        dead_letters: D,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            codec,
            schemas,
            store: Arc::new(store),
            marks,
            intents,
            dead_letters,
            prefix: prefix.into(),
        }
    }

    /// Handles one Lambda batch: `Ok` with no item failures once every record is archived,
    /// parked or dropped as a copy; `Err` (the whole batch is retried) when the bucket,
    /// the marks, the registry or the queue failed.
    ///
    /// # Errors
    /// See [`ArchiverError::retryable`].
    pub async fn handle_batch(
        &self,
        event: KinesisEvent,
    ) -> Result<KinesisEventResponse, ArchiverError> {
        let started = Instant::now();
        let mut metrics = Metrics::new(SERVICE);
        let result = self
            .process(&event, chrono::Utc::now().timestamp_millis())
            .await;
        match &result {
            Ok(report) => {
                metrics.count("RecordsIn", report.records as u64);
                metrics.count("RecordsParked", report.parked as u64);
                metrics.count("RowsArchived", report.rows as u64);
                metrics.count("DuplicatesDropped", report.duplicates as u64);
                metrics.count("RecordsReplayed", report.recovered as u64);
                metrics.count("RecordsRecovered", report.recovered as u64);
                metrics.count("ObjectsWritten", report.objects.len() as u64);
                metrics.count("BytesWritten", report.bytes as u64);
                metrics.count("MarkWrites", report.mark_writes as u64);
            }
            Err(e) => {
                tracing::error!(error = %e, retryable = e.retryable(), records = event.records.len(), "batch failed");
                metrics.count("BatchesFailed", 1);
            }
        }
        metrics.millis("BatchMs", started.elapsed().as_secs_f64() * 1000.0);
        metrics.flush();
        result.map(|_| KinesisEventResponse::default())
    }

    /// [`Archiver::handle_batch`] at a given time (`archived_at`, and the marks' clock),
    /// reporting what it did.
    ///
    /// # Errors
    /// As [`Archiver::handle_batch`].
    pub async fn process(
        &self,
        event: &KinesisEvent,
        now_ms: i64,
    ) -> Result<BatchReport, ArchiverError> {
        let DecodedBatch {
            records,
            mut parked,
        } = decode_batch(SERVICE, &self.codec, &self.schemas, &event.records).await?;
        // The writer schema of every distinct payload schema id, fetched once; an id the
        // registry does not know parks its records, an outage fails the batch.
        let envelopes: Vec<&Envelope> = records.iter().map(|d| &d.envelope).collect();
        let mut schemas = resolve_schemas_of(&self.schemas, envelopes).await;
        if let Some(e) = take_outage(&mut schemas) {
            return Err(ArchiverError::Registry(e));
        }
        let positions = record_positions(&event.records);

        let mut candidates = Vec::with_capacity(records.len());
        let mut elsewhere = 0;
        for decoded in records {
            let Some(record) = event.records.get(decoded.index) else {
                continue;
            };
            if redriven_elsewhere(&decoded.envelope, SERVICE) {
                elsewhere += 1;
                continue;
            }
            let Some((_, Some(position))) = positions.get(decoded.index).copied() else {
                // Without a position a redelivery could not be told from a new event; Lambda
                // never sends one, so it is parked rather than archived unguarded.
                let detail = format!(
                    "sequence number {:?} is not a Kinesis one",
                    record.kinesis.sequence_number
                );
                parked.push(
                    park_message(SERVICE, record, "no_position", detail)
                        .with_envelope(&decoded.envelope),
                );
                continue;
            };
            let (origin, seq) = origin_of(&decoded.envelope, position);
            let origin = (origin.to_owned(), seq);
            match archived_row(record, decoded.envelope, &schemas, now_ms) {
                Ok((partition, row)) => candidates.push(Candidate {
                    partition,
                    row,
                    sub: position.sub(),
                    origin,
                }),
                Err(message) => parked.push(*message),
            }
        }

        // Parked first, so that a queue failure fails the batch before anything is written.
        let not_parked = park(&self.dead_letters, &parked).await?;
        if not_parked > 0 {
            return Err(ArchiverError::NotParked { count: not_parked });
        }
        let mut report = BatchReport {
            records: event.records.len(),
            parked: parked.len(),
            duplicates: elsewhere,
            ..BatchReport::default()
        };

        let now_secs = now_ms.div_euclid(1000);
        let mut shards: Vec<&str> = candidates
            .iter()
            .map(|c| c.row.kinesis_shard_id.as_str())
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let mut gate = self
            .marks
            .open(SERVICE, &shards)
            .await
            .map_err(ArchiverError::Marks)?;
        drop(shards);
        let mut fresh = Vec::with_capacity(candidates.len());
        for c in candidates {
            let (origin, seq) = &c.origin;
            match gate.admit(&c.row.kinesis_shard_id, origin, *seq) {
                None => report.duplicates += 1,
                Some(ticket) => fresh.push(Fresh {
                    partition: c.partition,
                    row: c.row,
                    sub: c.sub,
                    ticket,
                }),
            }
        }
        if report.duplicates > 0 {
            tracing::info!(
                duplicates = report.duplicates,
                "copies not above their origin's mark dropped"
            );
        }
        if fresh.is_empty() {
            return Ok(report);
        }

        let recovery = self.recover(event, &fresh).await?;
        let before = fresh.len();
        // Nothing found durable (every batch but one after a crash): no per-record lookup.
        fresh.retain(|c| {
            if recovery.durable.is_empty() {
                return true;
            }
            let durable = recovery.durable.contains(&(
                c.row.kinesis_shard_id.clone(),
                c.row.kinesis_sequence_number.clone(),
                c.row.event_id.clone(),
            ));
            if durable {
                gate.done(c.ticket);
            }
            !durable
        });
        report.recovered = before - fresh.len();
        if report.recovered > 0 {
            tracing::warn!(
                recovered = report.recovered,
                "records found in objects of an earlier attempt whose marks were not written"
            );
        }

        let groups = self.groups(fresh, &recovery.existing)?;
        self.write_groups(groups, &mut gate, now_secs, &mut report)
            .await?;
        // Records found durable with no group left to write still move the marks.
        report.mark_writes += self
            .marks
            .commit(SERVICE, &mut gate, now_secs)
            .await
            .map_err(ArchiverError::Marks)?
            .writes;
        report.objects.sort();
        Ok(report)
    }

    /// Settles the intents of the shards of `fresh`: says which of `fresh` an earlier
    /// attempt wrote, and forgets the intents no record can come back for.
    async fn recover(
        &self,
        event: &KinesisEvent,
        fresh: &[Fresh],
    ) -> Result<Recovery, ArchiverError> {
        let mut shards: Vec<&str> = fresh
            .iter()
            .map(|c| c.row.kinesis_shard_id.as_str())
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let mut recovery = Recovery::default();
        let mut listed: HashMap<String, Vec<String>> = HashMap::new();
        for shard in shards {
            let pending = self.intents.pending(shard).await?;
            if pending.is_empty() {
                continue;
            }
            // The batch starts at the shard's first record not yet done: nothing before it
            // comes again.
            let start = event
                .records
                .iter()
                .filter(|r| shard_id(r) == shard)
                .map(|r| r.kinesis.sequence_number.as_str())
                .min_by(|a, b| cmp_sequence(a, b))
                .unwrap_or_default();
            let mut settled = Vec::new();
            for intent in pending {
                if intent.is_behind(start) {
                    settled.push(intent);
                    continue;
                }
                let Some(dir) = intent.key.rsplit_once('/').map(|(d, _)| format!("{d}/")) else {
                    settled.push(intent);
                    continue;
                };
                if !listed.contains_key(&dir) {
                    let keys: Vec<String> = self
                        .store
                        .list(&dir)
                        .await?
                        .into_iter()
                        .map(|o| o.key)
                        .collect();
                    recovery.existing.extend(keys.iter().cloned());
                    listed.insert(dir.clone(), keys);
                }
                let keys = listed.get(&dir).map(Vec::as_slice).unwrap_or_default();
                // An object found (or compacted) keeps its intent until the shard has moved
                // past it: a later cut of the same records (the other bisection half) must
                // find it too.
                if keys.contains(&intent.key) {
                    let bytes = self.store.get(&intent.key).await?;
                    let rows = read_rows(&bytes).map_err(|e| bad_archive(&intent.key, e))?;
                    recovery.durable.extend(rows.into_iter().map(|row| {
                        (
                            row.kinesis_shard_id,
                            row.kinesis_sequence_number,
                            row.event_id,
                        )
                    }));
                    continue;
                }
                match self.compacted_rows(keys, &intent, shard).await? {
                    Some(rows) => recovery.durable.extend(rows),
                    // Never written: nothing of it to find.
                    None => settled.push(intent),
                }
            }
            self.intents.remove(shard, &settled).await?;
        }
        Ok(recovery)
    }

    /// The rows of `shard` within `intent`'s range in the compacted object (of the listed
    /// `keys`) that replaces the intent's object; `None` when none does.
    async fn compacted_rows(
        &self,
        keys: &[String],
        intent: &Intent,
        shard: &str,
    ) -> Result<Option<Vec<(String, String, String)>>, ArchiverError> {
        let name = intent.key.rsplit('/').next().unwrap_or(&intent.key);
        for key in keys.iter().filter(|k| is_compacted(k)) {
            if !replaces(&*self.store, key).await?.iter().any(|n| n == name) {
                continue;
            }
            let bytes = self.store.get(key).await?;
            let rows = read_rows(&bytes).map_err(|e| bad_archive(key, e))?;
            return Ok(Some(
                rows.into_iter()
                    .filter(|r| {
                        r.kinesis_shard_id == shard && intent.covers(&r.kinesis_sequence_number)
                    })
                    .map(|r| (r.kinesis_shard_id, r.kinesis_sequence_number, r.event_id))
                    .collect(),
            ));
        }
        Ok(None)
    }

    /// One object per (partition, shard) of `fresh`, encoded.
    fn groups(
        &self,
        fresh: Vec<Fresh>,
        existing: &HashSet<String>,
    ) -> Result<Vec<Group>, ArchiverError> {
        // The (partition, shard) keys are few: one clone per group, not per record.
        let mut keys: Vec<((Partition, String), Vec<usize>)> = Vec::new();
        for (i, c) in fresh.iter().enumerate() {
            let found = keys
                .iter_mut()
                .find(|((p, s), _)| *p == c.partition && *s == c.row.kinesis_shard_id);
            match found {
                Some((_, members)) => members.push(i),
                None => keys.push((
                    (c.partition.clone(), c.row.kinesis_shard_id.clone()),
                    vec![i],
                )),
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let mut slots: Vec<Option<Fresh>> = fresh.into_iter().map(Some).collect();
        let mut groups = Vec::with_capacity(keys.len());
        for ((partition, shard), indexes) in keys {
            let members: Vec<Fresh> = indexes
                .iter()
                .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
                .collect();
            let (Some(first), Some(last)) = (
                members
                    .iter()
                    .map(|c| c.row.kinesis_sequence_number.as_str())
                    .min_by(|a, b| cmp_sequence(a, b)),
                members
                    .iter()
                    .map(|c| c.row.kinesis_sequence_number.as_str())
                    .max_by(|a, b| cmp_sequence(a, b)),
            ) else {
                continue;
            };
            let mut key = object_key(&self.prefix, &partition, &shard, first, last);
            if existing.contains(&key) {
                // An earlier attempt's object under this name holds rows this group does not
                // (they are skipped as durable): a new name keeps them.
                let mut hasher = Md5::new();
                for c in &members {
                    hasher.update(c.row.kinesis_sequence_number.as_bytes());
                    hasher.update(b":");
                    hasher.update(c.sub.to_string().as_bytes());
                    hasher.update(b"\n");
                }
                let tag: String = hasher.finalize()[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                key = tagged_key(&key, &tag);
            }
            let intent = Intent {
                first_sequence: first.to_owned(),
                last_sequence: last.to_owned(),
                key,
            };
            let subs: Vec<String> = members.iter().map(|c| c.sub.to_string()).collect();
            let mut rows = Vec::with_capacity(members.len());
            let mut tickets = Vec::with_capacity(members.len());
            for c in members {
                tickets.push(c.ticket);
                rows.push(c.row);
            }
            let body = write_rows_with_metadata(
                &rows,
                vec![(SUB_INDEXES_KEY.to_owned(), subs.join(","))],
            )?;
            groups.push(Group {
                shard,
                intent,
                body,
                rows: rows.len(),
                tickets,
            });
        }
        Ok(groups)
    }

    /// Writes `groups` in waves: intents added, objects put, the marks moved over every
    /// record whose row is durable, and the intents the marks now cover removed. On a failure
    /// the writes in flight finish and the batch fails with its intents in place, so the
    /// retry finds what reached the bucket.
    async fn write_groups(
        &self,
        mut groups: Vec<Group>,
        gate: &mut Gate,
        now_secs: i64,
        report: &mut BatchReport,
    ) -> Result<(), ArchiverError> {
        while !groups.is_empty() {
            let rest = groups.split_off(groups.len().min(MAX_INTENTS_PER_WAVE));
            let wave = std::mem::replace(&mut groups, rest);
            let mut by_shard: BTreeMap<String, Vec<Intent>> = BTreeMap::new();
            for g in &wave {
                by_shard
                    .entry(g.shard.clone())
                    .or_default()
                    .push(g.intent.clone());
            }
            for (shard, intents) in &by_shard {
                self.intents.add(shard, intents, now_secs).await?;
            }

            let mut tasks = JoinSet::new();
            let mut done: Vec<Written> = Vec::new();
            let mut failed: Option<ArchiverError> = None;
            for group in wave {
                while tasks.len() >= MAX_CONCURRENT_PUTS && failed.is_none() {
                    settle(tasks.join_next().await, &mut done, &mut failed);
                }
                if failed.is_some() {
                    break;
                }
                let store = Arc::clone(&self.store);
                tasks.spawn(async move { write_group(&*store, group).await });
            }
            while let Some(joined) = tasks.join_next().await {
                settle(Some(joined), &mut done, &mut failed);
            }
            if let Some(e) = failed {
                return Err(e);
            }
            for w in &done {
                report.rows += w.rows;
                report.bytes += w.bytes;
                report.objects.push(w.intent.key.clone());
                for t in &w.tickets {
                    gate.done(*t);
                }
            }
            report.mark_writes += self
                .marks
                .commit(SERVICE, gate, now_secs)
                .await
                .map_err(ArchiverError::Marks)?
                .writes;
            let mut covered: BTreeMap<String, Vec<Intent>> = BTreeMap::new();
            for w in done {
                if w.tickets.iter().all(|t| gate.covered(*t)) {
                    covered.entry(w.shard).or_default().push(w.intent);
                }
            }
            for (shard, intents) in &covered {
                if let Err(e) = self.intents.remove(shard, intents).await {
                    // Harmless: the next batch finds the objects and drops the intents once
                    // the shard is past them.
                    tracing::warn!(error = %e, shard, "write intents of covered objects not removed");
                }
            }
        }
        Ok(())
    }
}

/// What a finished write task tells.
struct Written {
    shard: String,
    intent: Intent,
    rows: usize,
    bytes: usize,
    tickets: Vec<Ticket>,
}

/// Puts one object.
async fn write_group<O: ArchiveBucket>(store: &O, group: Group) -> Result<Written, ArchiverError> {
    let bytes = group.body.len();
    store.put(&group.intent.key, group.body).await?;
    Ok(Written {
        shard: group.shard,
        intent: group.intent,
        rows: group.rows,
        bytes,
        tickets: group.tickets,
    })
}

fn settle(
    joined: Option<Result<Result<Written, ArchiverError>, tokio::task::JoinError>>,
    done: &mut Vec<Written>,
    failed: &mut Option<ArchiverError>,
) {
    match joined {
        None => {}
        Some(Ok(Ok(w))) => done.push(w),
        Some(Ok(Err(e))) => {
            failed.get_or_insert(e);
        }
        Some(Err(e)) => {
            failed.get_or_insert(ArchiverError::Task(e.to_string()));
        }
    }
}

/// The sub-record indexes in an object's footer, when it has one entry per row (what
/// recovery could match rows by; tests read it to check the footer).
/// An object that should hold archive rows and does not, named by its key.
fn bad_archive(key: &str, e: riffle_archive::ArchiveError) -> ArchiverError {
    riffle_archive::ArchiveError::BadArchive(format!("{key}: {e}")).into()
}

#[cfg(test)]
fn sub_indexes(bytes: &[u8], rows: usize) -> Option<Vec<u32>> {
    use riffle_archive::table::{Footer, footer_key_values};
    let Ok(Footer::KeyValues(pairs)) = footer_key_values(bytes) else {
        return None;
    };
    let (_, value) = pairs.into_iter().find(|(k, _)| k == SUB_INDEXES_KEY)?;
    if rows == 0 {
        return Some(Vec::new());
    }
    let subs: Vec<u32> = value
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (subs.len() == rows).then_some(subs)
}

impl<S, O, M, I, D> KinesisHandler for Archiver<S, O, M, I, D>
where
    S: SchemaSource + 'static,
    O: ArchiveBucket,
    M: MarkStore,
    I: Intents,
    D: Rejects + 'static,
{
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        self.handle_batch(event).await.map_err(Into::into)
    }
}

/// The archive row of one record with its partition, or the message that parks it.
fn archived_row(
    record: &KinesisEventRecord,
    envelope: Envelope,
    schemas: &BatchSchemas,
    now_ms: i64,
) -> Result<(Partition, ArchivedRow), Box<RejectMessage>> {
    let park = |envelope: &Envelope, code: &str, detail: String| {
        Box::new(park_message(SERVICE, record, code, detail).with_envelope(envelope))
    };
    let schema = match payload_schema(schemas, &envelope) {
        Ok(schema) => schema,
        Err((code, detail)) => return Err(park(&envelope, code, detail)),
    };
    let mut payload_json = String::with_capacity(envelope.payload.len() * 2);
    if let Err(e) = to_json(schema, &envelope.payload, &mut payload_json) {
        return Err(park(&envelope, e.code(), e.to_string()));
    }
    let Some(partition) = Partition::of(&envelope.subject, envelope.event_time) else {
        let detail = format!("event_time {} is not a date", envelope.event_time);
        return Err(park(&envelope, "event_time_out_of_range", detail));
    };
    let Some(enrichment) = envelope.enrichment else {
        // decode_batch parks these already; kept total rather than trusting that.
        return Err(park(&envelope, "no_enrichment", "no enrichment".into()));
    };
    let row = ArchivedRow {
        validated_at: envelope.stage_times.get(VALIDATOR_STAGE).copied(),
        enriched_at: envelope.stage_times.get(ENRICHER_STAGE).copied(),
        event_id: envelope.event_id,
        source: envelope.source,
        subject: envelope.subject,
        schema_id: envelope.schema_id,
        event_time: envelope.event_time,
        ingest_time: envelope.ingest_time,
        archived_at: now_ms,
        trace_header: envelope.trace_header,
        attributes_json: attributes_json(&enrichment.attributes),
        agg_key: enrichment.agg_key,
        metric: enrichment.metric,
        window_start: enrichment.window_start,
        reference_found: enrichment.reference_found,
        payload_json,
        payload: envelope.payload,
        kinesis_partition_key: record.kinesis.partition_key.clone(),
        kinesis_sequence_number: record.kinesis.sequence_number.clone(),
        kinesis_shard_id: shard_id(record).to_owned(),
    };
    Ok((partition, row))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {

    use std::sync::atomic::Ordering;

    use apache_avro::Schema;
    use apache_avro::types::Value;
    use std::collections::HashMap;

    use riffle_stage::SqsMessage;
    use riffle_stage::marks::{DEFAULT_MARK_WINDOW, MemoryMarks};
    use riffle_stage::testing::{
        FailingMarks, MapSource, Sink, enriched_envelope as envelope, kinesis_event as event,
        reject_messages,
    };

    use super::*;
    use riffle_archive::ArchiveError;
    use riffle_archive::testing::MemoryBucket;

    use crate::intent::MemoryIntents;
    use riffle_archive::scan::REPLACES_KEY;
    use riffle_archive::store::ObjectStore;
    use riffle_archive::table::read_rows;

    const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");
    const ORDER_ID: i32 = 3;

    pub(crate) fn order_payload(quantity: i32) -> Vec<u8> {
        let schema = Schema::parse_str(ORDER).unwrap();
        let value = Value::Record(vec![
            ("order_id".into(), Value::String("ord-0123456789ab".into())),
            ("customer_id".into(), Value::String("cus-000001".into())),
            ("product_id".into(), Value::String("sku-0001".into())),
            ("quantity".into(), Value::Int(quantity)),
            ("unit_price".into(), Value::Double(9.5)),
            ("currency".into(), Value::Enum(1, "USD".into())),
            ("coupon".into(), Value::Union(0, Box::new(Value::Null))),
            (
                "placed_at".into(),
                Value::TimestampMillis(1_764_000_000_000),
            ),
            ("attributes".into(), Value::Map(HashMap::new())),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    type TestArchiver = Archiver<
        MapSource,
        MemoryBucket,
        FailingMarks<MemoryMarks>,
        MemoryIntents,
        Sink<SqsMessage>,
    >;

    fn archiver(bucket: MemoryBucket, registry_down: bool) -> TestArchiver {
        let source = MapSource::with([(ORDER_ID as u32, ORDER)], []);
        source.set_down(registry_down);
        Archiver::new(
            EnvelopeCodec::new(7).unwrap(),
            SchemaCache::new(source),
            bucket,
            Marks::new(FailingMarks::default(), DEFAULT_MARK_WINDOW),
            MemoryIntents::default(),
            Sink::new(),
            "events",
        )
    }

    /// An order event at `event_time` with quantity `q`.
    fn order(event_time: i64, q: i32) -> Envelope {
        let mut e = envelope(
            "orders:category=books",
            f64::from(q) * 9.5,
            event_time - event_time % 60_000,
        );
        e.event_id = format!("ev-{event_time}-{q}");
        e.event_time = event_time;
        e.schema_id = ORDER_ID;
        e.payload = order_payload(q);
        e.stage_times = HashMap::from([
            ("validator".to_owned(), event_time + 5),
            ("enricher".to_owned(), event_time + 9),
        ]);
        e.enrichment.as_mut().unwrap().attributes =
            HashMap::from([("category".to_owned(), "books".to_owned())]);
        e
    }

    // 2025-11-24T16:00:00Z and an hour later.
    const H16: i64 = 1_764_000_000_000;
    const H17: i64 = H16 + 3_600_000;
    const NOW: i64 = H17 + 3_600_000;

    /// `n` orders over two hours, as one batch.
    fn batch(n: i32) -> KinesisEvent {
        let codec = EnvelopeCodec::new(7).unwrap();
        let blobs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let at = if i % 3 == 0 { H17 } else { H16 };
                codec.encode(&order(at + i64::from(i), i)).unwrap()
            })
            .collect();
        event(&blobs)
    }

    fn slice(ev: &KinesisEvent, range: std::ops::Range<usize>) -> KinesisEvent {
        let mut out = ev.clone();
        out.records = ev.records[range].to_vec();
        out
    }

    fn once_each(arch: &TestArchiver, n: usize) {
        let counts = arch.store.rows_per_event();
        assert_eq!(counts.len(), n, "every event archived");
        let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
        assert!(doubled.is_empty(), "rows more than once: {doubled:?}");
    }

    #[tokio::test]
    async fn groups_land_under_their_partitions() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut page = order(H16 + 1, 1);
        page.subject = "com.riffle.web.PageView".into();
        page.event_id = "page-1".into();
        let ev = event(&[
            codec.encode(&order(H16 + 10, 1)).unwrap(),
            codec.encode(&order(H17 + 10, 2)).unwrap(),
            codec.encode(&order(H16 + 20, 3)).unwrap(),
            codec.encode(&page).unwrap(),
        ]);
        let report = arch.process(&ev, 42).await.unwrap();
        assert_eq!(report.rows, 4);
        assert_eq!(
            report.objects,
            vec![
                "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/shardId-000000000000-49590000-49590002.parquet",
                "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=17/shardId-000000000000-49590001-49590001.parquet",
                "events/subject=com.riffle.web.PageView/dt=2025-11-24/hour=16/shardId-000000000000-49590003-49590003.parquet",
            ]
        );
        let objects = arch.store.objects.lock().unwrap();
        let bytes = &objects[&report.objects[0]];
        let rows = read_rows(bytes).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(sub_indexes(bytes, 2), Some(vec![0, 0]));
        let first = &rows[0];
        assert_eq!(first.event_time, H16 + 10);
        assert_eq!(first.validated_at, Some(H16 + 15));
        assert_eq!(first.enriched_at, Some(H16 + 19));
        assert_eq!(first.archived_at, 42);
        assert_eq!(first.kinesis_sequence_number, "49590000");
        assert_eq!(first.kinesis_partition_key, "pk-0");
        assert_eq!(first.kinesis_shard_id, "shardId-000000000000");
        assert_eq!(first.attributes_json, r#"{"category":"books"}"#);
        assert_eq!(first.payload, order_payload(1));
        let payload: serde_json::Value = serde_json::from_str(&first.payload_json).unwrap();
        assert_eq!(payload["quantity"], 1);
        assert_eq!(payload["currency"], "USD");
        assert_eq!(rows[1].kinesis_sequence_number, "49590002");
        // One registry fetch for the one payload schema id of the batch.
        assert_eq!(arch.schemas.source().fetched(), vec![ORDER_ID as u32]);
        // Every object's intent is gone once the marks cover its rows.
        assert!(arch.intents.is_empty());
    }

    #[tokio::test]
    async fn a_batch_again_or_cut_in_halves_writes_nothing_more() {
        let arch = archiver(MemoryBucket::default(), false);
        let ev = batch(12);
        let first = arch.process(&ev, NOW).await.unwrap();
        assert_eq!(first.rows, 12);
        let again = arch.process(&ev, NOW + 1).await.unwrap();
        assert_eq!((again.rows, again.duplicates), (0, 12));
        assert!(again.objects.is_empty());
        for half in [slice(&ev, 0..6), slice(&ev, 6..12), slice(&ev, 3..12)] {
            let r = arch.process(&half, NOW + 2).await.unwrap();
            assert_eq!(r.rows, 0);
            assert_eq!(r.duplicates, half.records.len());
        }
        once_each(&arch, 12);
    }

    #[tokio::test]
    async fn a_duplicate_event_at_a_new_position_is_dropped() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let from = |q: i32, seq: &str| {
            let mut e = order(H16, q);
            e.origin = Some(riffle_codec::Origin {
                id: "producer-1/0".into(),
                seq: seq.into(),
                sub: 0,
            });
            codec.encode(&e).unwrap()
        };
        let blobs = vec![
            from(1, "1"),
            from(2, "2"),
            // A producer retry: the first event again, at a new sequence number.
            from(1, "1"),
        ];
        let report = arch.process(&event(&blobs), NOW).await.unwrap();
        assert_eq!((report.rows, report.duplicates), (2, 1));
        // And in a later batch (here: its own position is 49590000, the copy's 49590002).
        let later = arch
            .process(&slice(&event(&blobs), 2..3), NOW)
            .await
            .unwrap();
        assert_eq!((later.rows, later.duplicates), (0, 1));
        once_each(&arch, 2);
    }

    #[tokio::test]
    async fn a_crash_between_write_and_marks_is_finished_by_any_redelivery() {
        let ev = batch(12);
        // Bisection halves, a restart at a later record, a batch that grew: each cut
        // differently from the crashed attempt, so its object keys differ too.
        let cuts: [&[(usize, usize)]; 3] = [&[(0, 6), (6, 12)], &[(4, 12), (0, 12)], &[(0, 12)]];
        for (crashed, redeliveries) in [(0..9, cuts[0]), (0..12, cuts[1]), (2..9, cuts[2])] {
            let arch = archiver(MemoryBucket::default(), false);
            arch.marks.store().fail.store(1, Ordering::SeqCst);
            let err = arch.process(&slice(&ev, crashed.clone()), NOW).await;
            assert!(matches!(err, Err(ArchiverError::Marks(_))), "{err:?}");
            assert!(!arch.intents.is_empty(), "intents stay for the retry");
            arch.marks.store().fail.store(0, Ordering::SeqCst);
            let mut recovered = 0;
            for (from, to) in redeliveries {
                let r = arch
                    .process(&slice(&ev, *from..*to), NOW + 1)
                    .await
                    .unwrap();
                recovered += r.recovered;
            }
            assert!(recovered > 0, "{crashed:?}");
            once_each(&arch, 12);
            // The found objects' intents wait until the shard is past their records.
            assert!(!arch.intents.is_empty());
            let codec = EnvelopeCodec::new(7).unwrap();
            let mut next = event(&vec![codec.encode(&order(H16, 99)).unwrap(); 13]);
            next.records.drain(..12);
            arch.process(&next, NOW + 2).await.unwrap();
            assert!(arch.intents.is_empty());
        }
    }

    #[tokio::test]
    async fn an_object_compacted_away_before_the_redelivery_still_counts() {
        let arch = archiver(MemoryBucket::default(), false);
        let ev = batch(6);
        arch.marks.store().fail.store(1, Ordering::SeqCst);
        arch.process(&ev, NOW).await.unwrap_err();
        arch.marks.store().fail.store(0, Ordering::SeqCst);
        // Compaction merges the hour-16 object (with a neighbour) and deletes its inputs.
        let (key, bytes) = {
            let objects = arch.store.objects.lock().unwrap();
            let (k, v) = objects.iter().find(|(k, _)| k.contains("hour=16")).unwrap();
            (k.clone(), v.clone())
        };
        let dir = &key[..key.rfind('/').unwrap() + 1];
        let name = &key[dir.len()..];
        let merged = riffle_archive::table::write_rows_with_metadata(
            &read_rows(&bytes).unwrap(),
            vec![(REPLACES_KEY.to_owned(), format!("{name}\nother.parquet"))],
        )
        .unwrap();
        arch.store
            .put(&format!("{dir}compacted-x.parquet"), merged)
            .await
            .unwrap();
        arch.store.delete(std::slice::from_ref(&key)).await.unwrap();

        let r = arch.process(&slice(&ev, 0..4), NOW + 1).await.unwrap();
        assert_eq!(r.recovered, 4);
        let r = arch.process(&slice(&ev, 4..6), NOW + 1).await.unwrap();
        assert_eq!(r.recovered, 2);
        once_each(&arch, 6);
        // The compacted object's intent waits until the shard is past its records.
        assert_eq!(arch.intents.len(), 1);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut next = event(&vec![codec.encode(&order(H16, 99)).unwrap(); 7]);
        next.records.drain(..6);
        arch.process(&next, NOW + 2).await.unwrap();
        assert!(arch.intents.is_empty());
    }

    #[tokio::test]
    async fn an_intent_whose_object_never_landed_is_forgotten() {
        let arch = archiver(MemoryBucket::down(), false);
        let ev = batch(3);
        let err = arch.process(&ev, NOW).await.unwrap_err();
        assert!(err.retryable());
        assert_eq!(arch.intents.len(), 2);
        let arch = Archiver {
            store: Arc::new(MemoryBucket::default()),
            ..arch
        };
        let r = arch.process(&ev, NOW + 1).await.unwrap();
        assert_eq!((r.rows, r.recovered), (3, 0));
        assert!(arch.intents.is_empty());
        once_each(&arch, 3);
    }

    #[tokio::test]
    async fn a_taken_key_is_never_overwritten() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[
            codec.encode(&order(H16, 1)).unwrap(),
            codec.encode(&order(H16, 2)).unwrap(),
        ]);
        // An earlier attempt's object under the very key this batch computes, holding a row
        // this batch does not have (only a released claim or an expired one gets here).
        let key = "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/shardId-000000000000-49590000-49590001.parquet";
        let mut ghost = riffle_archive::testing::sample_row(1);
        ghost.event_id = "ghost".into();
        ghost.kinesis_shard_id = "shardId-000000000000".into();
        ghost.kinesis_sequence_number = "49590000".into();
        let body =
            write_rows_with_metadata(&[ghost], vec![(SUB_INDEXES_KEY.to_owned(), "7".to_owned())])
                .unwrap();
        arch.store.put(key, body).await.unwrap();
        let intent = Intent {
            first_sequence: "49590000".into(),
            last_sequence: "49590001".into(),
            key: key.into(),
        };
        arch.intents
            .add("shardId-000000000000", &[intent], 0)
            .await
            .unwrap();
        let report = arch.process(&ev, NOW).await.unwrap();
        assert_eq!((report.rows, report.recovered), (2, 0));
        assert_ne!(report.objects, vec![key.to_owned()]);
        assert!(report.objects[0].ends_with(".parquet"));
        let counts = arch.store.rows_per_event();
        assert_eq!(counts.values().sum::<usize>(), 3);
        assert_eq!(counts["ghost"], 1);
    }

    #[tokio::test]
    async fn unusable_records_are_parked() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut unknown = order(H16, 1);
        unknown.schema_id = 99;
        let mut malformed = order(H16, 2);
        malformed.payload.truncate(3);
        let mut timeless = order(H16, 3);
        timeless.event_time = i64::MAX;
        let mut ev = event(&[
            codec.encode(&order(H16, 4)).unwrap(),
            codec.encode(&unknown).unwrap(),
            codec.encode(&malformed).unwrap(),
            codec.encode(&timeless).unwrap(),
            vec![0, 0, 0],
            codec.encode(&order(H16, 5)).unwrap(),
        ]);
        ev.records[5].kinesis.sequence_number = "not-a-number".into();
        let report = arch.process(&ev, 1).await.unwrap();
        assert_eq!((report.rows, report.parked), (1, 5));
        let parked = reject_messages(&arch.dead_letters.take());
        let codes: Vec<String> = parked.iter().map(|m| m.code.clone()).collect();
        assert_eq!(
            codes,
            vec![
                "truncated",
                "unknown_schema",
                "malformed",
                "event_time_out_of_range",
                "no_position",
            ]
        );
        assert_eq!(
            parked[1].event_id.as_deref(),
            Some(unknown.event_id.as_str())
        );
    }

    #[tokio::test]
    async fn events_without_an_origin_or_id_are_deduplicated_by_position() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut a = order(H16, 1);
        a.event_id = String::new();
        let mut b = order(H16, 2);
        b.event_id = String::new();
        let ev = event(&[codec.encode(&a).unwrap(), codec.encode(&b).unwrap()]);
        assert_eq!(arch.process(&ev, NOW).await.unwrap().rows, 2);
        let again = arch.process(&slice(&ev, 1..2), NOW).await.unwrap();
        assert_eq!((again.rows, again.duplicates), (0, 1));
        assert_eq!(
            arch.store.rows_per_event(),
            BTreeMap::from([(String::new(), 2)])
        );
    }

    #[tokio::test]
    async fn outages_fail_the_batch_retryably() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[codec.encode(&order(H16, 1)).unwrap()]);

        let arch = archiver(MemoryBucket::default(), true);
        let err = arch.handle_batch(ev.clone()).await.unwrap_err();
        assert!(matches!(err, ArchiverError::Registry(_)));
        assert!(err.retryable());

        let arch = archiver(MemoryBucket::down(), false);
        let err = arch.handle_batch(ev).await.unwrap_err();
        assert!(matches!(
            err,
            ArchiverError::Archive(ArchiveError::Store(_))
        ));
        assert!(err.retryable());
    }
}
