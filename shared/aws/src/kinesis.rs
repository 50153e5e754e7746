//! Writing records to a Kinesis stream with PutRecords.
//!
//! # Order per partition key
//! Kinesis keeps order per partition key only between separate calls: inside one
//! PutRecords request an entry may fail (throttled) while a later entry with the same key
//! succeeds. We therefore:
//! - hash each partition key to a *lane*; a lane's requests go out one after the other,
//!   each retried to completion before the next, while lanes run concurrently. A record is
//!   thus never overtaken by a later record of its key sent in a later request;
//! - once a record has finally failed, every later record with its key is not sent but
//!   reported failed ([`AwsError::OrderGuard`]), so the caller retries them all, in order;
//! - inside one request, a throttled entry can still be overtaken by a later entry with the
//!   same key (Kinesis' own semantics). Consumers deduplicate by event id, so this only
//!   matters for strict ordering; [`PublishConfig::strict_order`] puts at most one record
//!   per key in a request, which closes that gap at the cost of more requests for hot keys.
//!
//! # Fault injection
//! For fault tests (`riffle chaos`), `RIFFLE_FAULT_THROTTLE_RATE` (0..=1, off by default) is
//! the probability that an entry is answered as throttled (`ProvisionedThroughputExceeded`)
//! without being sent, so the retry path runs as it does under real throttling;
//! `RIFFLE_FAULT_SEED` seeds the draws. [`KinesisPublisher::with_throttle_faults`] sets the
//! same in code.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

use crate::AwsError;
use crate::backoff::full_jitter;

pub use crate::limits::{
    KINESIS_PARTITION_KEY_MAX_CHARS as PARTITION_KEY_MAX_CHARS,
    KINESIS_PUT_RECORDS_MAX_BYTES as PUT_RECORDS_MAX_BYTES,
    KINESIS_PUT_RECORDS_MAX_RECORDS as PUT_RECORDS_MAX_RECORDS,
    KINESIS_RECORD_MAX_BYTES as RECORD_MAX_BYTES,
};

/// Per-entry error code for a shard over its write throughput.
const THROTTLED: &str = "ProvisionedThroughputExceededException";
/// Fault tests only: probability (0..=1) that an entry is answered as throttled unsent.
pub const FAULT_THROTTLE_RATE_ENV: &str = "RIFFLE_FAULT_THROTTLE_RATE";
/// Fault tests only: seed of the injected faults' draws.
pub const FAULT_SEED_ENV: &str = "RIFFLE_FAULT_SEED";

/// Throttling injected by fault tests: each entry is throttled with probability `rate`.
#[derive(Debug)]
struct ThrottleFault {
    rate: f64,
    rng: Mutex<StdRng>,
}

impl ThrottleFault {
    fn new(rate: f64, seed: u64) -> Option<Arc<Self>> {
        (rate > 0.0).then(|| {
            Arc::new(Self {
                rate: rate.min(1.0),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
            })
        })
    }

    /// From [`FAULT_THROTTLE_RATE_ENV`] and [`FAULT_SEED_ENV`]; unset, zero or unreadable is
    /// off (a typo must not throttle a real deployment, so it is only warned about).
    fn from_env() -> Option<Arc<Self>> {
        let raw = std::env::var(FAULT_THROTTLE_RATE_ENV).ok()?;
        let Some(rate) = raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
        else {
            tracing::warn!(value = %raw, "{FAULT_THROTTLE_RATE_ENV} is not within 0..=1; ignored");
            return None;
        };
        let seed = std::env::var(FAULT_SEED_ENV)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or_else(rand::random);
        // Each process draws its own sequence, so stages with one seed do not fail in step.
        let seed = seed ^ u64::from(std::process::id()).rotate_left(32);
        tracing::warn!(
            rate,
            "fault injection: PutRecords entries throttled at random"
        );
        Self::new(rate, seed)
    }

    fn hit(&self) -> bool {
        self.rng
            .lock()
            .map(|mut rng| rng.random_bool(self.rate))
            .unwrap_or(false)
    }
}

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Decides the shard, and the unit of ordering.
    pub partition_key: String,
    /// The record's bytes.
    pub data: Vec<u8>,
}

impl OutRecord {
    /// The size Kinesis counts against its limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Checks the record against Kinesis' per-record limits.
    pub fn check(&self) -> Result<(), AwsError> {
        let chars = self.partition_key.chars().count();
        if chars == 0 || chars > PARTITION_KEY_MAX_CHARS {
            return Err(AwsError::InvalidPartitionKey {
                chars,
                max: PARTITION_KEY_MAX_CHARS,
            });
        }
        if self.size() > RECORD_MAX_BYTES {
            return Err(AwsError::TooLarge {
                bytes: self.size(),
                limit: RECORD_MAX_BYTES,
            });
        }
        Ok(())
    }
}

/// How hard and how wide the publisher tries.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Attempts per record, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles per retry.
    pub base_backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// At most one record per partition key in a request (see the module doc).
    pub strict_order: bool,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_concurrency: 4,
            strict_order: false,
        }
    }
}

/// A record that was not written, by its index in the input.
#[derive(Debug, Clone)]
pub struct FailedRecord {
    /// Index in the `records` given to [`KinesisPublisher::put_all`].
    pub index: usize,
    /// Why it was not written.
    pub error: AwsError,
}

/// What [`KinesisPublisher::put_all`] did.
#[derive(Debug, Clone, Default)]
pub struct PutOutcome {
    /// Records written.
    pub written: usize,
    /// Records not written, sorted by index.
    pub failed: Vec<FailedRecord>,
    /// Entries answered with ProvisionedThroughputExceeded, over all attempts.
    pub throttled: usize,
    /// Entries sent again after a failure.
    pub retries: usize,
    /// PutRecords requests made, retries included.
    pub requests: usize,
}

impl PutOutcome {
    fn merge(&mut self, other: PutOutcome) {
        self.written += other.written;
        self.failed.extend(other.failed);
        self.throttled += other.throttled;
        self.retries += other.retries;
        self.requests += other.requests;
    }
}

/// Writes batches of records to Kinesis streams. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KinesisPublisher {
    client: aws_sdk_kinesis::Client,
    config: Arc<PublishConfig>,
    throttle: Option<Arc<ThrottleFault>>,
}

impl KinesisPublisher {
    /// A publisher over `client`. Throttling faults are injected only when
    /// `RIFFLE_FAULT_THROTTLE_RATE` is set (see the module doc).
    pub fn new(client: aws_sdk_kinesis::Client, config: PublishConfig) -> Self {
        Self {
            client,
            config: Arc::new(config),
            throttle: ThrottleFault::from_env(),
        }
    }

    /// The same publisher answering each entry as throttled, unsent, with probability `rate`
    /// (0 turns injection off), draws seeded by `seed`. For fault tests.
    #[must_use]
    pub fn with_throttle_faults(mut self, rate: f64, seed: u64) -> Self {
        self.throttle = ThrottleFault::new(rate, seed);
        self
    }

    /// Writes `records` to `stream`, reporting per input index what finally failed.
    ///
    /// # Errors
    /// Only a call error that no retry can fix (unknown stream, access denied): the
    /// caller should fail its whole batch. Records may have been written by then.
    pub async fn put_all(
        &self,
        stream: &str,
        records: Vec<OutRecord>,
    ) -> Result<PutOutcome, AwsError> {
        let mut outcome = PutOutcome::default();
        let mut valid = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            match record.check() {
                Ok(()) => valid.push((index, record)),
                Err(error) => outcome.failed.push(FailedRecord { index, error }),
            }
        }
        if valid.is_empty() {
            return Ok(outcome);
        }
        let lanes = split_into_lanes(valid, self.config.max_concurrency);
        let stream: Arc<str> = Arc::from(stream);
        let mut tasks = JoinSet::new();
        for lane in lanes {
            let client = self.client.clone();
            let config = self.config.clone();
            let stream = stream.clone();
            let throttle = self.throttle.clone();
            // The calls go into the batch's log, for its records' trace spans.
            tasks.spawn(crate::calls::carried(async move {
                run_lane(&client, &config, throttle.as_deref(), &stream, lane).await
            }));
        }
        let mut fatal = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(lane_outcome)) => outcome.merge(lane_outcome),
                Ok(Err(e)) => fatal = Some(e),
                Err(join) => {
                    fatal = Some(AwsError::Call {
                        operation: "PutRecords",
                        code: "TaskFailed".to_owned(),
                        message: join.to_string(),
                        retryable: true,
                    })
                }
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        outcome.failed.sort_by_key(|f| f.index);
        Ok(outcome)
    }
}

type Indexed = (usize, OutRecord);

/// Splits records into at most `max_lanes` lanes by partition key hash, keeping input
/// order inside each lane. Uses no more lanes than requests are needed, so a small batch
/// still goes out as one request.
fn split_into_lanes(records: Vec<Indexed>, max_lanes: usize) -> Vec<Vec<Indexed>> {
    let total_bytes: usize = records.iter().map(|(_, r)| r.size()).sum();
    let needed = records
        .len()
        .div_ceil(PUT_RECORDS_MAX_RECORDS)
        .max(total_bytes.div_ceil(PUT_RECORDS_MAX_BYTES));
    let lane_count = needed.clamp(1, max_lanes.max(1));
    let mut lanes: Vec<Vec<Indexed>> = (0..lane_count).map(|_| Vec::new()).collect();
    for item in records {
        let mut hasher = DefaultHasher::new();
        item.1.partition_key.hash(&mut hasher);
        let lane = (hasher.finish() % lane_count as u64) as usize;
        lanes[lane].push(item);
    }
    lanes.retain(|l| !l.is_empty());
    lanes
}

/// Cuts a lane into requests within PutRecords' limits, in order. With `strict_order`
/// a request holds at most one record per partition key.
fn plan_requests(lane: Vec<Indexed>, strict_order: bool) -> Vec<Vec<Indexed>> {
    let mut requests = Vec::new();
    let mut current: Vec<Indexed> = Vec::new();
    let mut bytes = 0;
    let mut keys: HashSet<String> = HashSet::new();
    for item in lane {
        let size = item.1.size();
        let full = current.len() >= PUT_RECORDS_MAX_RECORDS
            || bytes + size > PUT_RECORDS_MAX_BYTES
            || (strict_order && keys.contains(&item.1.partition_key));
        if full && !current.is_empty() {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
            keys.clear();
        }
        bytes += size;
        if strict_order {
            keys.insert(item.1.partition_key.clone());
        }
        current.push(item);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

async fn run_lane(
    client: &aws_sdk_kinesis::Client,
    config: &PublishConfig,
    throttle: Option<&ThrottleFault>,
    stream: &str,
    lane: Vec<Indexed>,
) -> Result<PutOutcome, AwsError> {
    let mut outcome = PutOutcome::default();
    let mut failed_keys: HashSet<String> = HashSet::new();
    for request in plan_requests(lane, config.strict_order) {
        let mut pending = Vec::with_capacity(request.len());
        for (index, record) in request {
            if failed_keys.contains(&record.partition_key) {
                outcome.failed.push(FailedRecord {
                    index,
                    error: AwsError::OrderGuard,
                });
            } else {
                pending.push((index, record));
            }
        }
        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            if attempt > 0 {
                tokio::time::sleep(full_jitter(
                    attempt - 1,
                    config.base_backoff,
                    config.max_backoff,
                ))
                .await;
                outcome.retries += pending.len();
            }
            attempt += 1;
            let last_attempt = attempt >= config.max_attempts;
            outcome.requests += 1;
            let errors = match send(client, throttle, stream, &pending).await {
                Ok(errors) => errors,
                Err(e) if !e.retryable() => return Err(e),
                Err(e) => vec![Some(e); pending.len()],
            };
            let mut retry = Vec::new();
            for ((index, record), error) in pending.into_iter().zip(errors) {
                match error {
                    None => outcome.written += 1,
                    Some(error) => {
                        if error.code() == Some(THROTTLED) {
                            outcome.throttled += 1;
                        }
                        if error.retryable() && !last_attempt {
                            retry.push((index, record));
                        } else {
                            failed_keys.insert(record.partition_key);
                            outcome.failed.push(FailedRecord { index, error });
                        }
                    }
                }
            }
            pending = retry;
        }
    }
    Ok(outcome)
}

/// One PutRecords call; per entry `None` when written or the entry's error. Entries that
/// an injected fault throttles are not sent.
async fn send(
    client: &aws_sdk_kinesis::Client,
    throttle: Option<&ThrottleFault>,
    stream: &str,
    entries: &[Indexed],
) -> Result<Vec<Option<AwsError>>, AwsError> {
    let injected: Vec<bool> = entries
        .iter()
        .map(|_| throttle.is_some_and(ThrottleFault::hit))
        .collect();
    let throttled = || AwsError::Entry {
        code: THROTTLED.to_owned(),
        message: "Rate exceeded for shard (injected fault)".to_owned(),
    };
    crate::meter::kinesis_throttled(injected.iter().filter(|i| **i).count());
    if injected.iter().all(|i| *i) {
        return Ok(entries.iter().map(|_| Some(throttled())).collect());
    }
    let sent: Vec<OutRecord> = entries
        .iter()
        .zip(&injected)
        .filter(|(_, i)| !**i)
        .map(|((_, record), _)| record.clone())
        .collect();
    let mut results = put_records_once(client, stream, sent).await?.into_iter();
    let errors = injected
        .iter()
        .map(|injected| {
            if *injected {
                Some(throttled())
            } else {
                results.next().flatten()
            }
        })
        .collect();
    Ok(errors)
}

/// One PutRecords call of `records` (already within the request limits), metered: per record,
/// in order, `None` when written or the entry's error.
///
/// # Errors
/// The call failed as a whole.
pub async fn put_records_once(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: Vec<OutRecord>,
) -> Result<Vec<Option<AwsError>>, AwsError> {
    let n = records.len();
    let mut request_entries = Vec::with_capacity(n);
    for record in records {
        crate::meter::kinesis_put(record.size());
        let entry = PutRecordsRequestEntry::builder()
            .data(Blob::new(record.data))
            .partition_key(record.partition_key)
            .build()
            .map_err(|e| AwsError::Call {
                operation: "PutRecords",
                code: "BuildError".to_owned(),
                message: e.to_string(),
                retryable: false,
            })?;
        request_entries.push(entry);
    }
    let response = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(request_entries))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("PutRecords", e))?;
    let results = response.records();
    crate::meter::kinesis_throttled(
        results
            .iter()
            .filter(|r| r.error_code() == Some(THROTTLED))
            .count(),
    );
    Ok((0..n)
        .map(|i| match results.get(i) {
            Some(result) => result.error_code().map(|code| AwsError::Entry {
                code: code.to_owned(),
                message: result.error_message().unwrap_or_default().to_owned(),
            }),
            // A short answer leaves the entry's fate unknown: sending it again is safe (the
            // stages drop copies by origin).
            None => Some(AwsError::Entry {
                code: "InternalFailure".to_owned(),
                message: "no result for entry".to_owned(),
            }),
        })
        .collect())
}

/// Groups failures by error code, for logs.
pub fn failure_codes(outcome: &PutOutcome) -> HashMap<String, usize> {
    let mut codes = HashMap::new();
    for f in &outcome.failed {
        let code = f.error.code().unwrap_or("Rejected").to_owned();
        *codes.entry(code).or_insert(0) += 1;
    }
    codes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rec(key: &str, len: usize) -> OutRecord {
        OutRecord {
            partition_key: key.to_owned(),
            data: vec![0; len],
        }
    }

    #[test]
    fn records_outside_the_limits_are_rejected() {
        assert!(rec("k", 10).check().is_ok());
        assert!(matches!(
            rec("", 10).check(),
            Err(AwsError::InvalidPartitionKey { chars: 0, .. })
        ));
        let long_key = "é".repeat(PARTITION_KEY_MAX_CHARS);
        assert!(rec(&long_key, 1).check().is_ok());
        let too_long = "a".repeat(PARTITION_KEY_MAX_CHARS + 1);
        assert!(rec(&too_long, 1).check().is_err());
        assert!(rec("k", RECORD_MAX_BYTES - 1).check().is_ok());
        assert!(matches!(
            rec("kk", RECORD_MAX_BYTES - 1).check(),
            Err(AwsError::TooLarge { .. })
        ));
    }

    #[test]
    fn requests_respect_count_and_size_limits() {
        let lane: Vec<Indexed> = (0..1200).map(|i| (i, rec("k", 10))).collect();
        let requests = plan_requests(lane, false);
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 200]
        );
        let big: Vec<Indexed> = (0..12)
            .map(|i| (i, rec("k", RECORD_MAX_BYTES - 1)))
            .collect();
        let requests = plan_requests(big, false);
        for r in &requests {
            assert!(r.iter().map(|(_, x)| x.size()).sum::<usize>() <= PUT_RECORDS_MAX_BYTES);
        }
        assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), 12);
        let order: Vec<usize> = requests.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn strict_order_puts_one_record_per_key_in_a_request() {
        let lane: Vec<Indexed> = vec![
            (0, rec("a", 1)),
            (1, rec("b", 1)),
            (2, rec("a", 1)),
            (3, rec("c", 1)),
        ];
        let requests = plan_requests(lane, true);
        let shape: Vec<Vec<usize>> = requests
            .iter()
            .map(|r| r.iter().map(|(i, _)| *i).collect())
            .collect();
        assert_eq!(shape, vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn injected_throttling_follows_its_rate_and_seed() {
        assert!(ThrottleFault::new(0.0, 1).is_none());
        let always = ThrottleFault::new(1.0, 1).unwrap();
        assert!((0..100).all(|_| always.hit()));
        let draws = |seed| {
            let f = ThrottleFault::new(0.25, seed).unwrap();
            (0..4000).map(|_| f.hit()).collect::<Vec<_>>()
        };
        let hits = draws(7).iter().filter(|h| **h).count();
        assert!((800..1200).contains(&hits), "about a quarter, got {hits}");
        assert_eq!(draws(7), draws(7), "same seed, same faults");
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn a_key_always_lands_in_one_lane_in_order() {
        let records: Vec<Indexed> = (0..2000)
            .map(|i| (i, rec(&format!("key-{}", i % 37), 10)))
            .collect();
        let lanes = split_into_lanes(records, 4);
        assert_eq!(lanes.len(), 4);
        let mut seen = HashMap::new();
        for (lane_no, lane) in lanes.iter().enumerate() {
            assert!(lane.windows(2).all(|w| w[0].0 < w[1].0));
            for (_, r) in lane {
                assert_eq!(
                    *seen.entry(r.partition_key.clone()).or_insert(lane_no),
                    lane_no
                );
            }
        }
        let small: Vec<Indexed> = (0..20).map(|i| (i, rec(&format!("k{i}"), 10))).collect();
        assert_eq!(split_into_lanes(small, 4).len(), 1);
    }
}
