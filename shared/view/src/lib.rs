//! riffle-view: the materialized view's data model and its DynamoDB item format, one
//! definition for the aggregator (writes), `riffle replay` (rebuilds) and everyone who reads
//! the view (the harness's checks, analysts' tools).
//!
//! Layout: this file holds the model ([`ViewKey`], [`Aggregate`], [`ViewRow`]) and the
//! view's defaults (window length, retention); [`item`] turns rows into DynamoDB items and
//! back ([`row_item`], [`parse_item`]); [`watermark`] says when an item is final (ADR 0021).

pub mod item;
pub mod watermark;

use std::collections::{BTreeMap, HashMap};

use riffle_codec::Position;
use riffle_codec::rules::Contract;

pub use item::{
    APPLIED_ATTRIBUTE, BY_VIEW_INDEX, ItemError, VIEW_NAME_ATTRIBUTE, key_item, parse_item,
    row_item,
};

/// Window length for subjects whose contract names none. Every bundled contract names its
/// window length, and the enricher only enriches subjects it has a contract for, so this is
/// a fallback that should never be used.
pub const DEFAULT_WINDOW_SECS: u32 = 60;

/// How long a view item is kept after its window (the item's TTL), unless configured.
pub const DEFAULT_VIEW_TTL_DAYS: u32 = 30;

pub use watermark::Watermarks;

/// Window length per subject, from the subject contracts.
pub fn window_lengths(contracts: &HashMap<String, Contract>) -> HashMap<String, u32> {
    contracts
        .iter()
        .filter_map(|(subject, c)| c.enrich.as_ref().map(|e| (subject.clone(), e.window_secs)))
        .collect()
}

/// The view a key belongs to: the part of the key before its first `:` (`sensors` for
/// `sensors:site=berlin:kind=TEMPERATURE`, as a contract's `agg_key` template writes it),
/// or the whole key when it has none (a subject aggregated without a template is keyed by
/// its subject name alone).
pub fn view_name(agg_key: &str) -> &str {
    agg_key.split_once(':').map_or(agg_key, |(view, _)| view)
}

/// Seconds in a day, for the TTL.
pub const SECS_PER_DAY: i64 = 86_400;

/// The key of one view item: a key over one tumbling window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewKey {
    /// Partition key.
    pub agg_key: String,
    /// Window start, epoch millis (sort key).
    pub window_start: i64,
}

/// Count, sum, min and max of some metric values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Number of values.
    pub count: i64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Aggregate {
    /// The aggregate of one value.
    pub fn of(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    /// Folds `other` in; associative and commutative, so batches can be applied in any
    /// grouping.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// One item of the view (`schemas/view_row.avsc`) plus its optimistic-lock version and the
/// highest position applied per input shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRow {
    /// The item's key.
    pub key: ViewKey,
    /// Window length.
    pub window_secs: u32,
    /// The aggregate so far.
    pub aggregate: Aggregate,
    /// Last write, epoch millis.
    pub updated_at: i64,
    /// TTL, epoch seconds.
    pub expires_at: i64,
    /// Incremented by every write; a write succeeds only over the version it read.
    pub version: u64,
    /// Per input shard id, the highest record position folded into this item. Written in
    /// the same conditional put as the aggregate, so the two never disagree.
    pub applied: BTreeMap<String, Position>,
}
