//! Kinesis as a chaos run's producer sees it: entries throttled at a rate, and calls whose
//! answer is lost after their records landed, so riffle-producer puts them again whole (every
//! record a copy at a new position, which the validator drops by origin).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use riffle_producer::port::EntryResults;
use riffle_producer::{AwsError, KinesisPort, PutEntry, PutRecordsPort};

use super::schedule::SplitMix;

/// Per-entry error code Kinesis gives a shard over its write throughput.
const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// [`KinesisPort`] with throttling and lost answers injected, each drawn from a seeded stream.
pub(crate) struct ChaosPort {
    inner: KinesisPort,
    throttle_rate: f64,
    lost_answer_rate: f64,
    rng: Mutex<SplitMix>,
    /// User records put again because their call's answer was lost.
    resent: Arc<AtomicU64>,
}

impl ChaosPort {
    /// Throttles each entry with probability `throttle_rate` (unsent) and loses the answer of
    /// a call with probability `lost_answer_rate` (after it landed); counts the user records
    /// a lost answer makes the producer put again into `resent`.
    pub(crate) fn new(
        inner: KinesisPort,
        throttle_rate: f64,
        lost_answer_rate: f64,
        seed: u64,
        resent: Arc<AtomicU64>,
    ) -> Self {
        ChaosPort {
            inner,
            throttle_rate,
            lost_answer_rate,
            rng: Mutex::new(SplitMix::new(seed)),
            resent,
        }
    }

    /// Per entry whether it is throttled, and whether the call's answer is lost.
    fn draw(&self, entries: usize) -> (Vec<bool>, bool) {
        let Ok(mut rng) = self.rng.lock() else {
            return (vec![false; entries], false);
        };
        let throttled = (0..entries)
            .map(|_| rng.unit() < self.throttle_rate)
            .collect();
        (throttled, rng.unit() < self.lost_answer_rate)
    }
}

/// User records in a Kinesis record: the aggregate's, or the record itself.
fn user_records(data: &[u8]) -> u64 {
    if riffle_codec::kpl::is_aggregated(data) {
        let opened = riffle_codec::kpl::open(data);
        riffle_codec::kpl::records_of(&opened).map_or(1, |subs| subs.len() as u64)
    } else {
        1
    }
}

impl PutRecordsPort for ChaosPort {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<EntryResults, AwsError> {
        let (throttled, lose_answer) = self.draw(entries.len());
        let mut sent = Vec::with_capacity(entries.len());
        let mut user = 0;
        for (entry, throttled) in entries.into_iter().zip(&throttled) {
            if !throttled {
                user += user_records(&entry.data);
                sent.push(entry);
            }
        }
        let mut results = if sent.is_empty() {
            Vec::new()
        } else {
            self.inner.put_records(stream, sent).await?
        }
        .into_iter();
        if lose_answer {
            self.resent.fetch_add(user, Ordering::Relaxed);
            return Err(AwsError::Call {
                operation: "PutRecords",
                code: "TimeoutError".to_owned(),
                message: "answer lost after the records landed (injected fault)".to_owned(),
                retryable: true,
            });
        }
        Ok(throttled
            .iter()
            .map(|throttled| {
                if *throttled {
                    Some(AwsError::Entry {
                        code: THROTTLED.to_owned(),
                        message: "Rate exceeded for shard (injected fault)".to_owned(),
                    })
                } else {
                    results.next().flatten()
                }
            })
            .collect())
    }

    async fn shard_starts(&self, stream: &str) -> Result<Vec<u128>, AwsError> {
        self.inner.shard_starts(stream).await
    }
}
