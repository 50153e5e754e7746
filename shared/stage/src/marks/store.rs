//! Where marks are kept: the [`MarkStore`] port, what it loads and saves for one (stage,
//! shard) ([`ShardMarks`], a [`Mark`] per origin), and [`MemoryMarks`], the store in process
//! memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::dedup::Position;
use crate::ports::OutputError;

/// One origin's mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The highest sequence whose effects are durable.
    pub seq: Position,
    /// Epoch seconds the mark last moved.
    pub at: i64,
    /// The latest event time (capped by the stream's clock) among the origin's records up to
    /// the mark, for the stages that keep an event-time watermark (ADR 0021); `None` for
    /// origins whose records were not observed.
    pub time: Option<i64>,
}

/// The stored marks of one (stage, input shard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMarks {
    /// The version stored; 0 when there is no item yet.
    pub version: u64,
    /// Origin id -> mark.
    pub marks: HashMap<String, Mark>,
}

impl ShardMarks {
    /// The shard's event-time watermark: the latest observed time of any origin.
    pub fn watermark(&self) -> Option<i64> {
        self.marks.values().filter_map(|m| m.time).max()
    }

    /// The earliest observed time among the origins whose records were observed: how far
    /// every observed upstream shard has come on this one.
    pub fn slowest(&self) -> Option<i64> {
        self.marks.values().filter_map(|m| m.time).min()
    }
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
