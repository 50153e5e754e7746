//! What one shard's reader and its lanes share: the shard's lease as the reader sees it,
//! which fetched records are finished, and the checkpoint writes that follow them. Apart
//! from the reader so the lanes' delivery can report progress without knowing the reader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use riffle_aws::backoff;
use tokio::sync::watch;

use super::{CALL_BACKOFF_BASE, CALL_BACKOFF_MAX, CHECKPOINT_MAX_ATTEMPTS, Ctx};
use crate::event::Pending;
use crate::lease::now_ms;
use crate::record::Source;
use crate::{KinesisHandler, RuntimeError};

/// The lease of one shard as its reader sees it, kept up by the coordinator's
/// `keep_lease`.
#[derive(Debug)]
pub(super) struct LeaseState {
    /// Until when the reader may start work (epoch ms): one lease duration after the
    /// last successful take or renewal was sent.
    pub(super) valid_until_ms: AtomicI64,
    /// Another instance holds it now.
    pub(super) lost: AtomicBool,
}

impl LeaseState {
    pub(super) fn expired(&self) -> bool {
        now_ms() >= self.valid_until_ms.load(Ordering::SeqCst)
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Sequence numbers are decimal strings of up to 128 digits: ordered by length, then
/// digit by digit.
fn seq_key(seq: &str) -> (usize, String) {
    (seq.len(), seq.to_owned())
}

/// The records of a shard fetched and not yet behind the checkpoint, and which of them
/// are finished. The checkpoint may move to the end of the finished prefix.
#[derive(Debug, Default)]
pub(super) struct Progress {
    open: BTreeMap<(usize, String), bool>,
}

impl Progress {
    pub(super) fn track(&mut self, seq: &str) {
        self.open.insert(seq_key(seq), false);
    }

    fn finish(&mut self, seq: &str) {
        if let Some(done) = self.open.get_mut(&seq_key(seq)) {
            *done = true;
        }
    }

    /// Drops the finished prefix; its last sequence number, if it was not empty.
    fn advance(&mut self) -> Option<String> {
        let mut last = None;
        while let Some(entry) = self.open.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(entry.remove_entry().0.1);
        }
        last
    }
}

/// What a shard's lanes share.
pub(super) struct ShardShared<H> {
    pub(super) ctx: Arc<Ctx<H>>,
    pub(super) source: Arc<Source>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) lease: Arc<LeaseState>,
    pub(super) progress: tokio::sync::Mutex<Progress>,
    pub(super) millis_behind: AtomicI64,
}

impl<H: KinesisHandler> ShardShared<H> {
    pub(super) fn shard_id(&self) -> &str {
        &self.source.shard_id
    }

    /// No new work: shutdown, the lease handed back, lost or run out.
    pub(super) fn halted(&self) -> bool {
        *self.stop.borrow() || self.lease.lost() || self.lease.expired()
    }

    /// Marks records finished and moves the checkpoint as far as the shard allows.
    /// The lock is held across the write so checkpoints are written in order.
    pub(super) async fn finish(&self, records: &[Pending]) {
        let mut progress = self.progress.lock().await;
        for r in records {
            progress.finish(r.seq());
        }
        if let Some(seq) = progress.advance() {
            self.save_checkpoint(&seq).await;
        }
    }

    pub(super) async fn save_checkpoint(&self, seq: &str) {
        let mut failures = 0;
        loop {
            let saved = self
                .ctx
                .checkpoints
                .save_as(self.shard_id(), seq, Some(self.ctx.leases.owner()))
                .await;
            match saved {
                Ok(()) => return,
                Err(RuntimeError::LeaseLost(_)) => {
                    tracing::warn!(shard = %self.shard_id(), "checkpoint refused: the lease is another instance's");
                    self.lease.lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(shard = %self.shard_id(), error = %e, "checkpoint write failed");
                    if failures >= CHECKPOINT_MAX_ATTEMPTS || !e.retryable() {
                        return;
                    }
                    let wait =
                        backoff::full_jitter(failures - 1, CALL_BACKOFF_BASE, CALL_BACKOFF_MAX);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_stops_at_the_lowest_unfinished_record() {
        let mut p = Progress::default();
        for seq in ["8", "9", "10", "11", "100"] {
            p.track(seq);
        }
        p.finish("9");
        p.finish("11");
        assert_eq!(p.advance(), None, "8 is not finished");
        p.finish("8");
        assert_eq!(p.advance(), Some("9".to_owned()), "10 holds the rest back");
        p.finish("10");
        assert_eq!(p.advance(), Some("11".to_owned()));
        p.finish("100");
        assert_eq!(p.advance(), Some("100".to_owned()));
        assert_eq!(p.advance(), None);
        p.finish("7");
        assert_eq!(p.advance(), None, "an untracked record changes nothing");
    }
}
