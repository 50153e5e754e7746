//! The gate a batch's records pass ([`Gate`]: new or seen, then done) and the commit that
//! moves each origin's mark over its unbroken run of done records ([`Marks`]), pruning idle
//! and excess origins on the way.

use std::collections::HashMap;
use std::time::Duration;

use riffle_aws::AwsError;

use super::{MAX_ORIGINS_PER_SHARD, Mark, MarkStore, ShardMarks};
use crate::dedup::{Position, REDRIVE_ORIGIN_PREFIX};
use crate::ports::OutputError;

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
    /// The record's event time, if the stage observes one ([`Gate::observe`]).
    time: Option<i64>,
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
            time: None,
        });
        Some(Ticket(ticket))
    }

    /// `ticket`'s record happened at `time` (event time capped by the stream's clock): once
    /// its origin's mark covers it, the mark keeps the latest such time (ADR 0021).
    pub fn observe(&mut self, ticket: Ticket, time: i64) {
        if let Some(e) = self.entries.get_mut(ticket.0) {
            e.time = Some(time);
        }
    }

    /// The stored event-time watermark of `shard` ([`ShardMarks::watermark`]) as last read
    /// or committed.
    pub fn watermark(&self, shard: &str) -> Option<i64> {
        self.stored(shard).and_then(ShardMarks::watermark)
    }

    /// The stored marks of `shard` as last read or committed.
    pub fn stored(&self, shard: &str) -> Option<&ShardMarks> {
        self.shards
            .iter()
            .find(|g| g.shard == shard)
            .map(|g| &g.stored)
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
                    let run_entries = &lane.new[lane.committed..lane.committed + run];
                    let observed = run_entries
                        .iter()
                        .filter_map(|&i| self.entries.get(i).and_then(|e| e.time))
                        .max();
                    let before = gate.stored.marks.get(&lane.origin).and_then(|m| m.time);
                    let last = lane.new[lane.committed + run - 1];
                    if let Some(e) = self.entries.get(last) {
                        next.marks.insert(
                            lane.origin.clone(),
                            Mark {
                                seq: e.seq,
                                at: now_secs,
                                time: before.max(observed),
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
