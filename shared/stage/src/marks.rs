//! Exactly-once effects at batch cost: per (stage, input shard, origin) the highest origin
//! sequence whose effects are durable, read once and written once per batch
//! (docs/adr/0010-exactly-once-at-batch-cost.md).
//!
//! Every record names its origin ([`crate::dedup::origin_of`]): a producer channel with its
//! counter, or the upstream stage with the input shard and position it read the record at.
//! Records of one origin reach each shard in order (producers and stages keep order per
//! target shard and stop at the first failure), so a record whose sequence is not above its
//! origin's mark is a copy of one already applied: a producer retry, an upstream re-publish
//! or a redelivery. That is Kafka's idempotent producer: state per origin, never per event.
//!
//! A batch [`Gate::admit`]s each record (new or seen), marks the new ones [`Gate::done`] as
//! their effects land, and [`Marks::commit`]s: per origin the mark moves to the last record
//! of the unbroken run of done records, so a record whose effect did not land (a failed
//! publish, an object not written) is never covered, whatever landed after it. The write is
//! conditional on the version read, so two readers of one shard (a lease overlap) cannot
//! both move a mark: the second fails its batch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::KinesisEventRecord;
use aws_sdk_dynamodb::types::AttributeValue;
use riffle_aws::AwsError;
use riffle_codec::{CodecError, Envelope};

use crate::Failures;
use crate::dedup::{
    Position, REDRIVE_ORIGIN_PREFIX, origin_of, record_positions, redriven_elsewhere,
    republished_origin_id,
};
use crate::ports::OutputError;

/// How long an origin's mark is kept after it last moved unless configured. Copies further
/// apart than this are not recognised; it must exceed every record age limit upstream.
pub const DEFAULT_MARK_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Origins kept per (stage, shard) item: at about 120 bytes each, far below DynamoDB's
/// 400 KB item limit. Past it the marks that moved longest ago are dropped (and counted).
pub const MAX_ORIGINS_PER_SHARD: usize = 2_000;
/// Prefix of a marks item's partition key: `marks#<stage>#<shard>`.
pub const MARKS_KEY_PREFIX: &str = "marks#";

/// One origin's mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The highest sequence whose effects are durable.
    pub seq: Position,
    /// Epoch seconds the mark last moved.
    pub at: i64,
}

/// The stored marks of one (stage, input shard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMarks {
    /// The version stored; 0 when there is no item yet.
    pub version: u64,
    /// Origin id -> mark.
    pub marks: HashMap<String, Mark>,
}

/// Where marks are kept.
pub trait MarkStore: Send + Sync + 'static {
    /// The marks of (`stage`, `shard`), strongly consistent; empty (version 0) if none.
    ///
    /// # Errors
    /// The store could not be reached.
    fn load(
        &self,
        stage: &str,
        shard: &str,
    ) -> impl Future<Output = Result<ShardMarks, OutputError>> + Send;

    /// Stores `marks` as version `marks.version` if the stored version is still
    /// `marks.version - 1`; `Ok(false)` when another writer got there first.
    ///
    /// # Errors
    /// The store could not be reached.
    fn save(
        &self,
        stage: &str,
        shard: &str,
        marks: &ShardMarks,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool, OutputError>> + Send;
}

/// A batch's admitted records, per shard and origin.
#[derive(Debug, Default)]
pub struct Gate {
    shards: Vec<ShardGate>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct ShardGate {
    shard: String,
    stored: ShardMarks,
    origins: Vec<Lane>,
    by_origin: HashMap<String, usize>,
    /// Admitted into without [`Marks::open`]: a caller's mistake, refused at commit.
    unread: bool,
}

/// The new records of one origin in one shard, in stream order (sequences strictly rise).
#[derive(Debug)]
struct Lane {
    origin: String,
    /// The highest sequence admitted or stored.
    running: Option<Position>,
    /// Entries admitted as new.
    new: Vec<usize>,
    /// `new[..committed]` are covered by the stored mark.
    committed: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    shard: usize,
    lane: usize,
    seq: Position,
    done: bool,
}

/// A record [`Gate::admit`] let in, to hand back to [`Gate::done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(usize);

/// What [`Marks::commit`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Items written (one per shard whose marks moved).
    pub writes: usize,
    /// Origins dropped past [`MAX_ORIGINS_PER_SHARD`] (their later copies are not caught).
    pub evicted: usize,
}

impl Gate {
    /// Decides one record of `shard` (opened in [`Marks::open`]) from `origin` at `seq`:
    /// `Some` if it is new (above its origin's mark and every earlier record of the origin
    /// in this batch), `None` if it is a copy of one applied or admitted already.
    ///
    /// A shard that was not opened has no marks read: its records are all new, and
    /// [`Marks::commit`] refuses the batch rather than store marks it never read.
    pub fn admit(&mut self, shard: &str, origin: &str, seq: Position) -> Option<Ticket> {
        let s = match self.shards.iter().position(|g| g.shard == shard) {
            Some(s) => s,
            None => {
                self.shards.push(ShardGate {
                    shard: shard.to_owned(),
                    stored: ShardMarks::default(),
                    origins: Vec::new(),
                    by_origin: HashMap::new(),
                    unread: true,
                });
                self.shards.len() - 1
            }
        };
        let gate = &mut self.shards[s];
        let lane = match gate.by_origin.get(origin) {
            Some(&lane) => lane,
            None => {
                gate.origins.push(Lane {
                    origin: origin.to_owned(),
                    running: gate.stored.marks.get(origin).map(|m| m.seq),
                    new: Vec::new(),
                    committed: 0,
                });
                gate.by_origin
                    .insert(origin.to_owned(), gate.origins.len() - 1);
                gate.origins.len() - 1
            }
        };
        let lane_state = &mut gate.origins[lane];
        if lane_state.running.is_some_and(|r| seq <= r) {
            return None;
        }
        lane_state.running = Some(seq);
        let ticket = self.entries.len();
        lane_state.new.push(ticket);
        self.entries.push(Entry {
            shard: s,
            lane,
            seq,
            done: false,
        });
        Some(Ticket(ticket))
    }

    /// The effects of `ticket`'s record are durable (written, published, parked or found
    /// written by an earlier attempt).
    pub fn done(&mut self, ticket: Ticket) {
        if let Some(e) = self.entries.get_mut(ticket.0) {
            e.done = true;
        }
    }

    /// Whether `ticket`'s record is covered by the marks as last committed.
    pub fn covered(&self, ticket: Ticket) -> bool {
        let Some(e) = self.entries.get(ticket.0) else {
            return false;
        };
        let Some(gate) = self.shards.get(e.shard) else {
            return false;
        };
        let Some(lane) = gate.origins.get(e.lane) else {
            return false;
        };
        gate.stored
            .marks
            .get(&lane.origin)
            .is_some_and(|m| e.seq <= m.seq)
    }

    /// The marks each shard would store now, or `None` for a shard where none moved.
    fn advanced(&self, now_secs: i64) -> Vec<Option<(ShardMarks, Vec<usize>)>> {
        self.shards
            .iter()
            .map(|gate| {
                let mut next = gate.stored.clone();
                let mut committed = Vec::with_capacity(gate.origins.len());
                let mut moved = false;
                for lane in &gate.origins {
                    let run = lane.new[lane.committed..]
                        .iter()
                        .take_while(|&&i| self.entries.get(i).is_some_and(|e| e.done))
                        .count();
                    committed.push(lane.committed + run);
                    if run == 0 {
                        continue;
                    }
                    let last = lane.new[lane.committed + run - 1];
                    if let Some(e) = self.entries.get(last) {
                        next.marks.insert(
                            lane.origin.clone(),
                            Mark {
                                seq: e.seq,
                                at: now_secs,
                            },
                        );
                        moved = true;
                    }
                }
                moved.then(|| {
                    next.version = gate.stored.version + 1;
                    (next, committed)
                })
            })
            .collect()
    }
}

/// Drops marks that have not moved for `window_secs`, then, past [`MAX_ORIGINS_PER_SHARD`],
/// redrive origins and the oldest; returns how many were dropped past the cap.
fn prune(marks: &mut ShardMarks, now_secs: i64, window_secs: i64) -> usize {
    marks
        .marks
        .retain(|_, m| m.at >= now_secs.saturating_sub(window_secs));
    let excess = marks.marks.len().saturating_sub(MAX_ORIGINS_PER_SHARD);
    if excess == 0 {
        return 0;
    }
    // Redriven records' origins go first (each stands for one record put back, and only a
    // second redrive of that same record needs it), then the marks that moved longest ago.
    let mut ages: Vec<(bool, i64, String)> = marks
        .marks
        .iter()
        .map(|(k, m)| (!k.starts_with(REDRIVE_ORIGIN_PREFIX), m.at, k.clone()))
        .collect();
    ages.sort_unstable();
    for (_, _, origin) in ages.into_iter().take(excess) {
        marks.marks.remove(&origin);
    }
    excess
}

/// The marks of every stage's shards, in a [`MarkStore`].
#[derive(Debug, Clone)]
pub struct Marks<M> {
    store: M,
    window_secs: i64,
}

impl<M: MarkStore> Marks<M> {
    /// Marks in `store` kept for `window` after they last moved.
    pub fn new(store: M, window: Duration) -> Self {
        Marks {
            store,
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The store.
    pub fn store(&self) -> &M {
        &self.store
    }

    /// A gate over the stored marks of `stage` for `shards` (one read each).
    ///
    /// # Errors
    /// The store could not be reached.
    pub async fn open(&self, stage: &str, shards: &[&str]) -> Result<Gate, OutputError> {
        let mut gate = Gate::default();
        for shard in shards {
            if gate.shards.iter().any(|g| g.shard == *shard) {
                continue;
            }
            let stored = self.store.load(stage, shard).await?;
            gate.shards.push(ShardGate {
                shard: (*shard).to_owned(),
                stored,
                origins: Vec::new(),
                by_origin: HashMap::new(),
                unread: false,
            });
        }
        Ok(gate)
    }

    /// Moves each origin's mark over its unbroken run of done records and stores the shards
    /// whose marks moved (one conditional write each). Can be called again as more records
    /// are done.
    ///
    /// # Errors
    /// The store could not be reached, or another writer moved the marks since they were
    /// read (`MarksConflict`, retryable: the batch runs again on fresh marks).
    pub async fn commit(
        &self,
        stage: &str,
        gate: &mut Gate,
        now_secs: i64,
    ) -> Result<Committed, OutputError> {
        let mut out = Committed::default();
        let advanced = gate.advanced(now_secs);
        for (shard_gate, next) in gate.shards.iter_mut().zip(advanced) {
            let Some((mut next, committed)) = next else {
                continue;
            };
            if shard_gate.unread {
                return Err(OutputError(AwsError::Call {
                    operation: "PutItem",
                    code: "MarksNotRead".into(),
                    message: format!("marks of {stage} on {} were never read", shard_gate.shard),
                    retryable: false,
                }));
            }
            out.evicted += prune(&mut next, now_secs, self.window_secs);
            let expires_at = now_secs.saturating_add(self.window_secs);
            if !self
                .store
                .save(stage, &shard_gate.shard, &next, expires_at)
                .await?
            {
                return Err(OutputError(AwsError::Call {
                    operation: "PutItem",
                    code: "MarksConflict".into(),
                    message: format!(
                        "marks of {stage} on {} moved since they were read (version {})",
                        shard_gate.shard, shard_gate.stored.version
                    ),
                    retryable: true,
                }));
            }
            for (lane, upto) in shard_gate.origins.iter_mut().zip(committed) {
                lane.committed = upto;
            }
            shard_gate.stored = next;
            out.writes += 1;
        }
        Ok(out)
    }
}

/// A re-publishing stage's batch (validator, enricher): which records are copies, and the
/// tickets of the new ones, whose envelopes now carry the stage's own origin.
#[derive(Debug)]
pub struct Republish {
    gate: Gate,
    tickets: Vec<Option<Ticket>>,
    copies: Vec<bool>,
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
        })
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
}

/// [`MarkStore`] in process memory, for benches, tests and one-process tools. Clones share
/// the marks.
#[derive(Debug, Clone, Default)]
pub struct MemoryMarks {
    items: Arc<Mutex<HashMap<(String, String), ShardMarks>>>,
    writes: Arc<Mutex<u64>>,
}

impl MemoryMarks {
    /// The marks stored for (`stage`, `shard`).
    pub fn get(&self, stage: &str, shard: &str) -> ShardMarks {
        lock(&self.items)
            .get(&(stage.to_owned(), shard.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Items written so far.
    pub fn writes(&self) -> u64 {
        *lock(&self.writes)
    }

    /// Forgets every mark (benches run one batch again as new).
    pub fn clear(&self) {
        lock(&self.items).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of a plain map.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MarkStore for MemoryMarks {
    async fn load(&self, stage: &str, shard: &str) -> Result<ShardMarks, OutputError> {
        Ok(self.get(stage, shard))
    }

    async fn save(
        &self,
        stage: &str,
        shard: &str,
        marks: &ShardMarks,
        _expires_at: i64,
    ) -> Result<bool, OutputError> {
        let mut items = lock(&self.items);
        let key = (stage.to_owned(), shard.to_owned());
        let stored = items.get(&key).map_or(0, |m| m.version);
        if stored + 1 != marks.version {
            return Ok(false);
        }
        items.insert(key, marks.clone());
        *lock(&self.writes) += 1;
        Ok(true)
    }
}

/// [`MarkStore`] in a DynamoDB table with hash key `pk` (S) and TTL on `expires_at` (the
/// platform's claims table): one item per (stage, shard),
/// `{pk: "marks#<stage>#<shard>", version, marks: {"o:<origin>": "<position>|<at>"}, expires_at}`.
/// Map keys carry a prefix because DynamoDB map keys cannot be empty and an origin id can.
#[derive(Debug, Clone)]
pub struct DynamoMarks {
    client: aws_sdk_dynamodb::Client,
    table: Arc<str>,
}

const PK: &str = "pk";
const VERSION: &str = "version";
const MARKS: &str = "marks";
const EXPIRES_AT: &str = "expires_at";
const ORIGIN_PREFIX: &str = "o:";

impl DynamoMarks {
    /// Marks in `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoMarks {
            client,
            table: Arc::from(table.into()),
        }
    }
}

/// The partition key of (stage, shard)'s marks.
pub fn marks_key(stage: &str, shard: &str) -> String {
    format!("{MARKS_KEY_PREFIX}{stage}#{shard}")
}

fn parse_mark(value: &AttributeValue) -> Option<Mark> {
    let (seq, at) = value.as_s().ok()?.split_once('|')?;
    Some(Mark {
        seq: Position::decode(seq)?,
        at: at.parse().ok()?,
    })
}

impl MarkStore for DynamoMarks {
    async fn load(&self, stage: &str, shard: &str) -> Result<ShardMarks, OutputError> {
        let out = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key(PK, AttributeValue::S(marks_key(stage, shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| OutputError(AwsError::from_sdk("GetItem", e)))?;
        let Some(item) = out.item() else {
            return Ok(ShardMarks::default());
        };
        let version = item
            .get(VERSION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut marks = HashMap::new();
        if let Some(Ok(map)) = item.get(MARKS).map(AttributeValue::as_m) {
            for (key, value) in map {
                // An entry of another shape is skipped, not trusted: its origin starts over.
                if let (Some(origin), Some(mark)) =
                    (key.strip_prefix(ORIGIN_PREFIX), parse_mark(value))
                {
                    marks.insert(origin.to_owned(), mark);
                }
            }
        }
        Ok(ShardMarks { version, marks })
    }

    async fn save(
        &self,
        stage: &str,
        shard: &str,
        marks: &ShardMarks,
        expires_at: i64,
    ) -> Result<bool, OutputError> {
        let map: HashMap<String, AttributeValue> = marks
            .marks
            .iter()
            .map(|(origin, m)| {
                (
                    format!("{ORIGIN_PREFIX}{origin}"),
                    AttributeValue::S(format!("{}|{}", m.seq.encode(), m.at)),
                )
            })
            .collect();
        let mut request = self
            .client
            .put_item()
            .table_name(&*self.table)
            .item(PK, AttributeValue::S(marks_key(stage, shard)))
            .item(VERSION, AttributeValue::N(marks.version.to_string()))
            .item(MARKS, AttributeValue::M(map))
            .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()));
        request = if marks.version <= 1 {
            request.condition_expression("attribute_not_exists(#pk)")
        } else {
            request
                .condition_expression("#v = :prev")
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(
                    ":prev",
                    AttributeValue::N((marks.version - 1).to_string()),
                )
        };
        if marks.version <= 1 {
            request = request.expression_attribute_names("#pk", PK);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let conflict = e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception());
                if conflict {
                    Ok(false)
                } else {
                    Err(OutputError(AwsError::from_sdk("PutItem", e)))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pos(n: u64) -> Position {
        Position::new(&n.to_string(), 0).unwrap()
    }

    fn marks() -> Marks<MemoryMarks> {
        Marks::new(MemoryMarks::default(), DEFAULT_MARK_WINDOW)
    }

    #[tokio::test]
    async fn copies_and_redeliveries_are_seen_once_committed() {
        let m = marks();
        let mut gate = m.open("s", &["sh-1"]).await.unwrap();
        let a = gate.admit("sh-1", "p/0", pos(1)).unwrap();
        let b = gate.admit("sh-1", "p/0", pos(2)).unwrap();
        // The same event twice in one batch, and one from before its predecessor.
        assert_eq!(gate.admit("sh-1", "p/0", pos(2)), None);
        assert_eq!(gate.admit("sh-1", "p/0", pos(1)), None);
        let c = gate.admit("sh-1", "q/0", pos(1)).unwrap();
        for t in [a, b, c] {
            gate.done(t);
        }
        let done = m.commit("s", &mut gate, 100).await.unwrap();
        assert_eq!(done.writes, 1);
        assert!(gate.covered(a) && gate.covered(c));

        let mut again = m.open("s", &["sh-1"]).await.unwrap();
        assert_eq!(again.admit("sh-1", "p/0", pos(2)), None);
        assert!(again.admit("sh-1", "p/0", pos(3)).is_some());
        assert!(again.admit("sh-1", "q/1", pos(1)).is_some());
        // Another shard keeps marks of its own.
        let mut other = m.open("s", &["sh-2"]).await.unwrap();
        assert!(other.admit("sh-2", "p/0", pos(1)).is_some());
        // And another stage.
        let mut stage = m.open("t", &["sh-1"]).await.unwrap();
        assert!(stage.admit("sh-1", "p/0", pos(1)).is_some());
    }

    #[tokio::test]
    async fn a_mark_never_passes_a_record_whose_effect_did_not_land() {
        let m = marks();
        let mut gate = m.open("s", &["sh"]).await.unwrap();
        let t: Vec<Ticket> = (1..=5)
            .map(|i| gate.admit("sh", "p/0", pos(i)).unwrap())
            .collect();
        let other = gate.admit("sh", "r/0", pos(9)).unwrap();
        // 1, 2 and 4 landed; 3 did not (a failed publish), 5 did not either.
        for i in [0, 1, 3] {
            gate.done(t[i]);
        }
        gate.done(other);
        m.commit("s", &mut gate, 1).await.unwrap();
        let stored = m.store().get("s", "sh");
        assert_eq!(stored.marks["p/0"].seq, pos(2));
        assert_eq!(stored.marks["r/0"].seq, pos(9));
        assert!(gate.covered(t[1]) && !gate.covered(t[3]));
        // The redelivery from record 3 on applies 3, 4 and 5 again (their effects are
        // idempotent at the same position, or dropped downstream as copies).
        let mut redelivery = m.open("s", &["sh"]).await.unwrap();
        assert_eq!(redelivery.admit("sh", "p/0", pos(2)), None);
        assert!(redelivery.admit("sh", "p/0", pos(3)).is_some());
        // Committing the rest later in the same batch goes on from the first commit.
        gate.done(t[2]);
        gate.done(t[4]);
        let second = m.commit("s", &mut gate, 2).await.unwrap();
        assert_eq!(second.writes, 1);
        assert_eq!(m.store().get("s", "sh").marks["p/0"].seq, pos(5));
        assert_eq!(m.store().get("s", "sh").version, 2);
        // Nothing moved: no write.
        assert_eq!(m.commit("s", &mut gate, 3).await.unwrap().writes, 0);
    }

    #[tokio::test]
    async fn a_second_reader_of_the_shard_cannot_move_the_marks() {
        let m = marks();
        let mut first = m.open("s", &["sh"]).await.unwrap();
        let mut second = m.open("s", &["sh"]).await.unwrap();
        let a = first.admit("sh", "p/0", pos(1)).unwrap();
        let b = second.admit("sh", "p/0", pos(1)).unwrap();
        first.done(a);
        second.done(b);
        m.commit("s", &mut first, 1).await.unwrap();
        let err = m.commit("s", &mut second, 1).await.unwrap_err();
        assert!(err.retryable());
        assert!(err.to_string().contains("MarksConflict"), "{err}");
    }

    #[tokio::test]
    async fn idle_origins_expire_and_the_oldest_go_past_the_cap() {
        let m = Marks::new(MemoryMarks::default(), Duration::from_secs(100));
        let mut gate = m.open("s", &["sh"]).await.unwrap();
        let old = gate.admit("sh", "old", pos(1)).unwrap();
        gate.done(old);
        m.commit("s", &mut gate, 0).await.unwrap();
        let mut gate = m.open("s", &["sh"]).await.unwrap();
        for i in 0..=MAX_ORIGINS_PER_SHARD {
            let t = gate.admit("sh", &format!("o{i}"), pos(1)).unwrap();
            gate.done(t);
        }
        let done = m.commit("s", &mut gate, 150).await.unwrap();
        let stored = m.store().get("s", "sh");
        assert!(
            !stored.marks.contains_key("old"),
            "expired after the window"
        );
        assert_eq!(stored.marks.len(), MAX_ORIGINS_PER_SHARD);
        assert_eq!(done.evicted, 1);
        // A redriven record's origin goes before any stage's or producer's, however new.
        let mut gate = m.open("s", &["sh"]).await.unwrap();
        let redriven = gate.admit("sh", "redrive:s/m-1/0", pos(0)).unwrap();
        gate.done(redriven);
        let done = m.commit("s", &mut gate, 160).await.unwrap();
        let stored = m.store().get("s", "sh");
        assert_eq!(done.evicted, 1);
        assert!(!stored.marks.contains_key("redrive:s/m-1/0"));
        assert_eq!(stored.marks.len(), MAX_ORIGINS_PER_SHARD);
    }

    #[tokio::test]
    async fn a_shard_not_opened_drops_nothing_and_is_never_committed() {
        let m = marks();
        let mut gate = Gate::default();
        let t = gate.admit("sh", "p", pos(1)).unwrap();
        gate.done(t);
        let err = m.commit("s", &mut gate, 1).await.unwrap_err();
        assert!(!err.retryable());
        assert_eq!(m.store().writes(), 0);
    }
}
