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
//!
//! Layout, one job per file:
//! - this file: the constants every part shares;
//! - `store`: [`MarkStore`], where marks are kept, the [`Mark`] and [`ShardMarks`] it keeps,
//!   and [`MemoryMarks`], the in-process store;
//! - `gate`: [`Gate`] (a batch's records admitted and done) and [`Marks`] (open, commit, and
//!   the pruning of idle and excess origins);
//! - `republish`: [`Republish`], a re-publishing stage's batch (validator, enricher);
//! - `dynamo`: [`DynamoMarks`], the marks as DynamoDB items, and their layout;
//! - `tests`: the unit tests of the gate and commit, on [`MemoryMarks`].

mod dynamo;
mod gate;
mod republish;
mod store;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use dynamo::{DynamoMarks, MARKS_KEY_PREFIX, marks_key};
pub use gate::{Committed, Gate, Marks, Ticket};
pub use republish::Republish;
pub use store::{Mark, MarkStore, MemoryMarks, ShardMarks};

/// How long an origin's mark is kept after it last moved unless configured. Copies further
/// apart than this are not recognised; it must exceed every record age limit upstream.
pub const DEFAULT_MARK_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Origins kept per (stage, shard) item: at about 120 bytes each, far below DynamoDB's
/// 400 KB item limit. Past it the marks that moved longest ago are dropped (and counted).
pub const MAX_ORIGINS_PER_SHARD: usize = 2_000;
