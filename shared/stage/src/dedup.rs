//! Exactly-once effects for the stages that read `enriched`: where a record sits on its
//! stream ([`Position`]), and the claims table that drops an event seen again at a *new*
//! position ([`Claims`]). See docs/adr/0009-exactly-once-effects.md.
//!
//! Two kinds of duplicates reach a stage, and each needs its own guard:
//! - **The same record again** (Lambda retries, bisection halves, a replay after a crash):
//!   it comes back at the same (shard, sequence number, sub-record index). The aggregator
//!   keeps, in every view item, the highest position applied per shard, and skips what is
//!   not above it. [`Position`] is that position, comparable and encoded at a fixed width.
//! - **The same event in a new record** (a producer retry, an upstream stage re-publishing
//!   after its own retry or crash): a new position, so only its event id tells. A stage
//!   *claims* each event id with the position it saw it at; a claim held at another position
//!   makes the record a [`Claim::Duplicate`]. The same position claims again freely, so a
//!   redelivered batch is never dropped here (the position guard deals with it).
//!
//! A claim records whether its effects were applied. A record that ends in a dead-letter
//! queue was never applied, so the redrive [`Claims::release`]s its claim before putting it
//! back; one already applied keeps its claim, and a redriven copy is dropped as a duplicate.
//!
//! Claims expire after a window (default [`DEFAULT_CLAIM_WINDOW`]), by DynamoDB TTL on
//! `expires_at`; the conditions also treat an expired claim as absent, because TTL deletes
//! lazily.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEventRecord;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use riffle_aws::AwsError;
use riffle_aws::backoff::full_jitter;
use sha2::{Digest, Sha256};

use crate::batch::shard_id;
use crate::ports::OutputError;

/// How long a claim holds unless configured: duplicates further apart pass.
pub const DEFAULT_CLAIM_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Decimal digits of the sequence number in an encoded position. Kinesis sequence numbers
/// have 56 digits today; 64 leaves room and fits two 32-digit halves in `u128`s.
pub const SEQUENCE_DIGITS: usize = 64;
/// Largest sub-record index an encoded position holds (5 digits). Aggregates between stages
/// are at most 64 KiB (ADR 0008), so even 1-byte user records stay far below.
pub const MAX_SUB_INDEX: u32 = 99_999;
/// BatchGetItem limit: keys per request.
pub const BATCH_GET_MAX_KEYS: usize = 100;
/// BatchWriteItem limit: requests per call.
pub const BATCH_WRITE_MAX_ITEMS: usize = 25;
/// DynamoDB limit: bytes of a partition key value. Longer claim keys are hashed.
pub const PARTITION_KEY_MAX_BYTES: usize = 2048;
/// Calls per chunk while DynamoDB keeps returning unprocessed keys or items.
pub const UNPROCESSED_MAX_ATTEMPTS: u32 = 8;
const UNPROCESSED_BASE_BACKOFF: Duration = Duration::from_millis(25);
const UNPROCESSED_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Half of [`SEQUENCE_DIGITS`]: 10^32 < 2^107, so each half fits a `u128`.
const HALF_DIGITS: usize = SEQUENCE_DIGITS / 2;
/// 10^16: a quarter of the digits, which fits a `u64`.
const TEN_POW_QUARTER: u128 = 10u128.pow(HALF_DIGITS as u32 / 2);
/// Length of an encoded position: the digits, `:` and the 5-digit sub index.
const ENCODED_LEN: usize = SEQUENCE_DIGITS + 6;

/// Where a user record sits on its shard: the Kinesis sequence number of the record that
/// carried it and its index among the user records of that record (0 for a plain record).
///
/// Ordered as the stream is; [`Position::encode`] gives a fixed-width string that sorts the
/// same way (`<64-digit sequence>:<5-digit sub index>`). Copy and allocation-free, because
/// the aggregator keeps one per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sequence number divided by 10^32.
    hi: u128,
    /// Sequence number modulo 10^32.
    lo: u128,
    sub: u32,
}

impl Position {
    /// The position of sub-record `sub` of the record with `sequence_number`; `None` if the
    /// number is not decimal digits, has more than [`SEQUENCE_DIGITS`] significant digits,
    /// or `sub` exceeds [`MAX_SUB_INDEX`].
    pub fn new(sequence_number: &str, sub: u32) -> Option<Position> {
        let digits = sequence_number.as_bytes();
        if digits.is_empty() || sub > MAX_SUB_INDEX || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let significant = sequence_number.trim_start_matches('0');
        if significant.len() > SEQUENCE_DIGITS {
            return None;
        }
        let split = significant.len().saturating_sub(HALF_DIGITS);
        let (hi, lo) = significant.split_at(split);
        Some(Position {
            hi: parse_digits(hi)?,
            lo: parse_digits(lo)?,
            sub,
        })
    }

    /// The fixed-width text form: equal widths make string order the stream's order.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(ENCODED_LEN);
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Position::encode`]'s form to `out`. Formatting a `u128` divides by ten in
    /// 128 bits per digit; as four 16-digit `u64` quarters it costs a tenth (the aggregator
    /// encodes one position per record).
    pub fn encode_into(&self, out: &mut String) {
        use std::fmt::Write;
        let quarter = |half: u128| {
            (
                u64::try_from(half / TEN_POW_QUARTER).unwrap_or(u64::MAX),
                u64::try_from(half % TEN_POW_QUARTER).unwrap_or(u64::MAX),
            )
        };
        let (a, b) = quarter(self.hi);
        let (c, d) = quarter(self.lo);
        // Writing to a String cannot fail.
        let _ = write!(out, "{a:016}{b:016}{c:016}{d:016}:{:05}", self.sub);
    }

    /// Reads [`Position::encode`]'s form back.
    pub fn decode(text: &str) -> Option<Position> {
        let (seq, sub) = text.split_once(':')?;
        if seq.len() != SEQUENCE_DIGITS || sub.len() != 5 {
            return None;
        }
        Position::new(seq, parse_digits(sub)?.try_into().ok()?)
    }

    /// The sub-record index.
    pub fn sub(&self) -> u32 {
        self.sub
    }
}

fn parse_digits(digits: &str) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > HALF_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Two u64 parses instead of 128-bit arithmetic per digit.
    let (hi, lo) = digits.split_at(digits.len().saturating_sub(HALF_DIGITS / 2));
    let hi: u64 = if hi.is_empty() { 0 } else { hi.parse().ok()? };
    let lo: u64 = lo.parse().ok()?;
    Some(u128::from(hi) * TEN_POW_QUARTER + u128::from(lo))
}

/// The shard and position of every record of a (deaggregated) Lambda event, in order.
///
/// The sub-record index is the ordinal among consecutive records of one shard with the same
/// sequence number: deaggregation keeps order and a redelivery always starts at a whole
/// Kinesis record, so the ordinals are the same on every delivery. `None` for a record whose
/// sequence number is not a Kinesis one.
pub fn record_positions(records: &[KinesisEventRecord]) -> Vec<(&str, Option<Position>)> {
    let mut out: Vec<(&str, Option<Position>)> = Vec::with_capacity(records.len());
    let mut previous: Option<(&str, &str)> = None;
    let mut sub: u32 = 0;
    for record in records {
        let shard = shard_id(record);
        let seq = record.kinesis.sequence_number.as_str();
        sub = if previous == Some((shard, seq)) {
            sub.saturating_add(1)
        } else {
            0
        };
        previous = Some((shard, seq));
        out.push((shard, Position::new(seq, sub)));
    }
    out
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The event is this record's to apply (first sight, or the same position again).
    /// `applied`: a previous delivery already marked its effects applied.
    Claimed {
        /// Whether the claim is already marked applied.
        applied: bool,
    },
    /// The event was claimed at another position: drop this record.
    Duplicate,
}

/// What [`Claims::release`] did with one event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The claim was not applied and is gone: the event may be put back.
    Released,
    /// The event was applied: keep the claim, do not put the record back.
    Applied,
    /// No claim was held.
    Unclaimed,
}

/// One event to claim: its id and the encoded position this delivery saw it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest<'a> {
    /// The envelope's event id.
    pub event_id: &'a str,
    /// [`Position::encode`] of the record (with its shard, see [`claim_position`]).
    pub position: &'a str,
}

/// The text a claim stores as its position: shard and encoded position.
pub fn claim_position(shard: &str, position: &Position) -> String {
    let mut out = String::with_capacity(shard.len() + 1 + ENCODED_LEN);
    out.push_str(shard);
    out.push('/');
    position.encode_into(&mut out);
    out
}

/// Event-id claims, per stage.
pub trait Claims: Send + Sync + 'static {
    /// Claims every request for `stage` at `now_secs` (epoch seconds); one answer per
    /// request, in order, as if they were claimed one after the other: a claim already held
    /// answers every request of its event id (claimed at its position, duplicate elsewhere),
    /// and of an event id not held, the first request claims it. An empty event id cannot
    /// be deduplicated and is always claimed.
    ///
    /// # Errors
    /// The store could not be reached; nothing is known about any request then.
    fn claim(
        &self,
        stage: &str,
        requests: &[ClaimRequest<'_>],
        now_secs: i64,
    ) -> impl Future<Output = Result<Vec<Claim>, OutputError>> + Send;

    /// Marks the claims of `requests` applied (their effects are durable).
    ///
    /// # Errors
    /// The store could not be reached.
    fn mark_applied(
        &self,
        stage: &str,
        requests: &[ClaimRequest<'_>],
        now_secs: i64,
    ) -> impl Future<Output = Result<(), OutputError>> + Send;

    /// Drops the claims of `event_ids` that were never applied (before a dead-letter
    /// redrive); one answer per id.
    ///
    /// # Errors
    /// The store could not be reached.
    fn release(
        &self,
        stage: &str,
        event_ids: &[&str],
    ) -> impl Future<Output = Result<Vec<Release>, OutputError>> + Send;
}

/// The claim key of an event: `<stage>#<event_id>`, hashed when too long for DynamoDB.
pub fn claim_key(stage: &str, event_id: &str) -> String {
    let key = format!("{stage}#{event_id}");
    if key.len() <= PARTITION_KEY_MAX_BYTES {
        return key;
    }
    let digest = Sha256::digest(event_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{stage}#sha256:{hex}")
}

/// Answers the requests no store is asked about: an empty event id cannot be deduplicated,
/// so it is always claimed.
fn settle_locally(requests: &[ClaimRequest<'_>]) -> Vec<Option<Claim>> {
    requests
        .iter()
        .map(|r| {
            r.event_id
                .is_empty()
                .then_some(Claim::Claimed { applied: false })
        })
        .collect()
}

/// One stored claim.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    position: String,
    applied: bool,
    expires_at: i64,
}

impl Stored {
    fn live(&self, now_secs: i64) -> bool {
        self.expires_at >= now_secs
    }

    fn answer(&self, position: &str) -> Claim {
        if self.position == position {
            Claim::Claimed {
                applied: self.applied,
            }
        } else {
            Claim::Duplicate
        }
    }
}

/// [`Claims`] in process memory: for benches, tests and one-process tools. Clones share
/// the claims.
#[derive(Debug, Clone)]
pub struct MemoryClaims {
    /// Per stage, per event id: looked up by borrowed strings, so a claim held already
    /// (the common case) costs no allocation.
    claims: Arc<Mutex<HashMap<String, HashMap<String, Stored>>>>,
    window_secs: i64,
}

impl Default for MemoryClaims {
    fn default() -> Self {
        Self::new(DEFAULT_CLAIM_WINDOW)
    }
}

impl MemoryClaims {
    /// Claims that hold for `window`.
    pub fn new(window: Duration) -> Self {
        MemoryClaims {
            claims: Arc::default(),
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Claims held, every stage together (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// True when no claim is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Stored>>> {
        // A poisoned lock only means another thread panicked mid-update of a plain map.
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Claims for MemoryClaims {
    async fn claim(
        &self,
        stage: &str,
        requests: &[ClaimRequest<'_>],
        now_secs: i64,
    ) -> Result<Vec<Claim>, OutputError> {
        let settled = settle_locally(requests);
        let mut all = self.lock();
        let claims = all.entry(stage.to_owned()).or_default();
        Ok(requests
            .iter()
            .zip(settled)
            .map(|(r, settled)| {
                if let Some(answer) = settled {
                    return answer;
                }
                match claims.get(r.event_id) {
                    Some(stored) if stored.live(now_secs) => stored.answer(r.position),
                    _ => {
                        claims.insert(
                            r.event_id.to_owned(),
                            Stored {
                                position: r.position.to_owned(),
                                applied: false,
                                expires_at: now_secs.saturating_add(self.window_secs),
                            },
                        );
                        Claim::Claimed { applied: false }
                    }
                }
            })
            .collect())
    }

    async fn mark_applied(
        &self,
        stage: &str,
        requests: &[ClaimRequest<'_>],
        now_secs: i64,
    ) -> Result<(), OutputError> {
        let mut all = self.lock();
        let claims = all.entry(stage.to_owned()).or_default();
        for r in requests.iter().filter(|r| !r.event_id.is_empty()) {
            claims.insert(
                r.event_id.to_owned(),
                Stored {
                    position: r.position.to_owned(),
                    applied: true,
                    expires_at: now_secs.saturating_add(self.window_secs),
                },
            );
        }
        Ok(())
    }

    async fn release(&self, stage: &str, event_ids: &[&str]) -> Result<Vec<Release>, OutputError> {
        let mut all = self.lock();
        let claims = all.entry(stage.to_owned()).or_default();
        Ok(event_ids
            .iter()
            .map(|id| match claims.get(*id) {
                None => Release::Unclaimed,
                Some(stored) if stored.applied => Release::Applied,
                Some(_) => {
                    claims.remove(*id);
                    Release::Released
                }
            })
            .collect())
    }
}

/// [`Claims`] in a DynamoDB table: hash key `pk` (S), TTL on `expires_at`; items
/// `{pk, pos, applied, expires_at}`.
///
/// A claim first reads the keys (BatchGetItem, strongly consistent), so the common case of
/// a duplicate or a redelivery costs a read; keys not held are then written with
/// BatchWriteItem, 25 a call. The writes are not conditional: copies of one event carry the
/// same partition key, so they land on the same shard, and a stage reads a shard with one
/// batch at a time (ParallelizationFactor 1), so two claims of one event id never race.
/// The exceptions are in ADR 0009 (a producer that re-sends an event under another key; a
/// batch outliving its shard lease in the local runtime). A conditional PutItem per event
/// cost one request each, about ten times the batched writes on the local DynamoDB, and
/// bought nothing the shard order does not already give.
#[derive(Debug, Clone)]
pub struct DynamoClaims {
    client: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    window_secs: i64,
}

/// Attribute names of a claim item.
const PK: &str = "pk";
const POS: &str = "pos";
const APPLIED: &str = "applied";
const EXPIRES_AT: &str = "expires_at";

impl DynamoClaims {
    /// Claims in `table` that hold for `window`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        window: Duration,
    ) -> Self {
        DynamoClaims {
            client,
            table: Arc::from(table.into()),
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
        }
    }

    async fn read(&self, keys: &[String]) -> Result<HashMap<String, Stored>, OutputError> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_MAX_KEYS) {
            let mut pending: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|k| HashMap::from([(PK.to_owned(), AttributeValue::S(k.clone()))]))
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                backoff(&mut attempt, "BatchGetItem", pending.len()).await?;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| build_error("BatchGetItem", &e))?;
                let response = self
                    .client
                    .batch_get_item()
                    .request_items(&*self.table, request)
                    .send()
                    .await
                    .map_err(|e| OutputError(AwsError::from_sdk("BatchGetItem", e)))?;
                for item in response
                    .responses()
                    .and_then(|r| r.get(&*self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some((key, stored)) = parse_claim(item) {
                        out.insert(key, stored);
                    }
                }
                if let Some(left) = response
                    .unprocessed_keys()
                    .and_then(|u| u.get(&*self.table))
                {
                    pending = left.keys().to_vec();
                }
            }
        }
        Ok(out)
    }

    async fn write_batch(&self, mut pending: Vec<WriteRequest>) -> Result<(), OutputError> {
        let mut attempt = 0;
        while !pending.is_empty() {
            backoff(&mut attempt, "BatchWriteItem", pending.len()).await?;
            let response = self
                .client
                .batch_write_item()
                .request_items(&*self.table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| OutputError(AwsError::from_sdk("BatchWriteItem", e)))?;
            if let Some(left) = response
                .unprocessed_items()
                .and_then(|u| u.get(&*self.table))
            {
                pending = left.to_vec();
            }
        }
        Ok(())
    }
}

/// Waits before every attempt but the first; fails after [`UNPROCESSED_MAX_ATTEMPTS`].
async fn backoff(
    attempt: &mut u32,
    operation: &'static str,
    left: usize,
) -> Result<(), OutputError> {
    if *attempt >= UNPROCESSED_MAX_ATTEMPTS {
        return Err(OutputError(AwsError::Call {
            operation,
            code: "Unprocessed".into(),
            message: format!("{left} entries still unprocessed"),
            retryable: true,
        }));
    }
    if *attempt > 0 {
        tokio::time::sleep(full_jitter(
            *attempt - 1,
            UNPROCESSED_BASE_BACKOFF,
            UNPROCESSED_MAX_BACKOFF,
        ))
        .await;
    }
    *attempt += 1;
    Ok(())
}

fn build_error(operation: &'static str, e: &dyn std::error::Error) -> OutputError {
    OutputError(AwsError::Call {
        operation,
        code: "BuildError".into(),
        message: e.to_string(),
        retryable: false,
    })
}

/// A claim item; `None` for an item of another shape (left alone, treated as absent).
fn parse_claim(item: &HashMap<String, AttributeValue>) -> Option<(String, Stored)> {
    let key = item.get(PK)?.as_s().ok()?.clone();
    let position = item.get(POS)?.as_s().ok()?.clone();
    let applied = item
        .get(APPLIED)
        .and_then(|a| a.as_bool().ok())
        .copied()
        .unwrap_or(false);
    let expires_at = item.get(EXPIRES_AT)?.as_n().ok()?.parse().ok()?;
    Some((
        key,
        Stored {
            position,
            applied,
            expires_at,
        },
    ))
}

impl Claims for DynamoClaims {
    async fn claim(
        &self,
        stage: &str,
        requests: &[ClaimRequest<'_>],
        now_secs: i64,
    ) -> Result<Vec<Claim>, OutputError> {
        let mut answers = settle_locally(requests);
        let keys: Vec<String> = requests
            .iter()
            .map(|r| claim_key(stage, r.event_id))
            .collect();
        let mut to_read: Vec<String> = requests
            .iter()
            .zip(&answers)
            .zip(&keys)
            .filter(|((_, a), _)| a.is_none())
            .map(|(_, k)| k.clone())
            .collect();
        to_read.sort_unstable();
        to_read.dedup();
        let stored = self.read(&to_read).await?;

        let expires_at = AttributeValue::N(now_secs.saturating_add(self.window_secs).to_string());
        // Index of the first request per key still to be written: that request claims.
        let mut first_of_key: HashMap<&str, usize> = HashMap::new();
        let mut writes = Vec::new();
        for (i, (request, key)) in requests.iter().zip(&keys).enumerate() {
            if answers[i].is_some() {
                continue;
            }
            if let Some(s) = stored.get(key).filter(|s| s.live(now_secs)) {
                answers[i] = Some(s.answer(request.position));
                continue;
            }
            if first_of_key.contains_key(key.as_str()) {
                // The event again in this call: answered from the first request below.
                continue;
            }
            first_of_key.insert(key, i);
            let put = PutRequest::builder()
                .item(PK, AttributeValue::S(key.clone()))
                .item(POS, AttributeValue::S(request.position.to_owned()))
                .item(APPLIED, AttributeValue::Bool(false))
                .item(EXPIRES_AT, expires_at.clone())
                .build()
                .map_err(|e| build_error("BatchWriteItem", &e))?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in writes.chunks(BATCH_WRITE_MAX_ITEMS) {
            self.write_batch(chunk.to_vec()).await?;
        }
        Ok(answers
            .into_iter()
            .zip(requests.iter().zip(&keys))
            .map(|(answer, (request, key))| {
                answer.unwrap_or_else(|| {
                    // Every request of a key written in this call: claimed at the position written.
                    let claimed = first_of_key.get(key.as_str()).is_some_and(|&i| {
                        requests
                            .get(i)
                            .is_some_and(|f| f.position == request.position)
                    });
                    if claimed {
                        Claim::Claimed { applied: false }
                    } else {
                        Claim::Duplicate
                    }
                })
            })
            .collect())
    }

    async fn mark_applied(
        &self,
        stage: &str,
        requests: &[ClaimRequest<'_>],
        now_secs: i64,
    ) -> Result<(), OutputError> {
        let expires_at = AttributeValue::N(now_secs.saturating_add(self.window_secs).to_string());
        let mut seen = std::collections::HashSet::with_capacity(requests.len());
        let mut writes = Vec::with_capacity(requests.len());
        for r in requests.iter().filter(|r| !r.event_id.is_empty()) {
            let key = claim_key(stage, r.event_id);
            // BatchWriteItem refuses two requests for one key.
            if !seen.insert(key.clone()) {
                continue;
            }
            let put = PutRequest::builder()
                .item(PK, AttributeValue::S(key))
                .item(POS, AttributeValue::S(r.position.to_owned()))
                .item(APPLIED, AttributeValue::Bool(true))
                .item(EXPIRES_AT, expires_at.clone())
                .build()
                .map_err(|e| build_error("BatchWriteItem", &e))?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in writes.chunks(BATCH_WRITE_MAX_ITEMS) {
            self.write_batch(chunk.to_vec()).await?;
        }
        Ok(())
    }

    async fn release(&self, stage: &str, event_ids: &[&str]) -> Result<Vec<Release>, OutputError> {
        let mut out = Vec::with_capacity(event_ids.len());
        for id in event_ids {
            let key = claim_key(stage, id);
            let deleted = self
                .client
                .delete_item()
                .table_name(&*self.table)
                .key(PK, AttributeValue::S(key.clone()))
                .condition_expression("applied = :no")
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .send()
                .await;
            let answer = match deleted {
                Ok(_) => Release::Released,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                {
                    // Either applied or not there: a consistent read tells which.
                    let got = self
                        .client
                        .get_item()
                        .table_name(&*self.table)
                        .key(PK, AttributeValue::S(key))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(|e| OutputError(AwsError::from_sdk("GetItem", e)))?;
                    if got.item().is_some() {
                        Release::Applied
                    } else {
                        Release::Unclaimed
                    }
                }
                Err(e) => return Err(OutputError(AwsError::from_sdk("DeleteItem", e))),
            };
            out.push(answer);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_like_the_stream_and_encode_at_a_fixed_width() {
        let seqs = [
            "0",
            "7",
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588899",
            "149590338271490256608559692538361571095921575989136588898",
            "9999999999999999999999999999999999999999999999999999999999999999",
        ];
        let mut positions = Vec::new();
        for seq in seqs {
            for sub in [0, 1, 12, MAX_SUB_INDEX] {
                positions.push(Position::new(seq, sub).unwrap());
            }
        }
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(sorted, positions, "numeric order, then sub index");
        let encoded: Vec<String> = positions.iter().map(Position::encode).collect();
        assert!(encoded.iter().all(|e| e.len() == ENCODED_LEN));
        assert_eq!(
            encoded[8],
            "0000000049590338271490256608559692538361571095921575989136588898:00000"
        );
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "text order agrees");
        for (p, e) in positions.iter().zip(&encoded) {
            assert_eq!(Position::decode(e), Some(*p));
        }
        assert_eq!(
            Position::new("0049", 3).unwrap(),
            Position::new("49", 3).unwrap()
        );
        assert_eq!(
            Position::new("49", 3).unwrap().encode(),
            format!("{}49:00003", "0".repeat(62))
        );
    }

    #[test]
    fn foreign_sequence_numbers_have_no_position() {
        for bad in ["", "12a", "-1", " 1", &"1".repeat(65)] {
            assert_eq!(Position::new(bad, 0), None, "{bad:?}");
        }
        assert_eq!(Position::new("1", MAX_SUB_INDEX + 1), None);
        for bad in ["", "1:00000", &format!("{}:0", "0".repeat(64)), "x:y"] {
            assert_eq!(Position::decode(bad), None, "{bad:?}");
        }
    }

    fn record(shard: &str, seq: &str) -> KinesisEventRecord {
        let mut r = KinesisEventRecord::default();
        r.kinesis.sequence_number = seq.into();
        r.event_id = Some(format!("{shard}:{seq}"));
        r
    }

    #[test]
    fn sub_indexes_count_user_records_of_one_kinesis_record() {
        let records = [
            record("shardId-1", "10"),
            record("shardId-1", "11"),
            record("shardId-1", "11"),
            record("shardId-1", "11"),
            record("shardId-2", "11"),
            record("shardId-1", "12"),
            record("shardId-1", "x"),
        ];
        let got: Vec<(&str, Option<(u32, String)>)> = record_positions(&records)
            .into_iter()
            .map(|(s, p)| (s, p.map(|p| (p.sub(), p.encode()))))
            .collect();
        let subs: Vec<(&str, Option<u32>)> = got
            .iter()
            .map(|(s, p)| (*s, p.as_ref().map(|p| p.0)))
            .collect();
        assert_eq!(
            subs,
            vec![
                ("shardId-1", Some(0)),
                ("shardId-1", Some(0)),
                ("shardId-1", Some(1)),
                ("shardId-1", Some(2)),
                ("shardId-2", Some(0)),
                ("shardId-1", Some(0)),
                ("shardId-1", None),
            ]
        );
        // A redelivery that starts at the aggregate gives the same positions.
        let again = record_positions(&records[1..4]);
        assert_eq!(
            again.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            record_positions(&records)[1..4]
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn long_event_ids_are_hashed_into_the_key_limit() {
        assert_eq!(claim_key("aggregator", "ev-1"), "aggregator#ev-1");
        let long = "x".repeat(3000);
        let key = claim_key("aggregator", &long);
        assert!(key.len() <= PARTITION_KEY_MAX_BYTES);
        assert!(key.starts_with("aggregator#sha256:"));
        assert_ne!(key, claim_key("aggregator", &"y".repeat(3000)));
    }

    fn req<'a>(event_id: &'a str, position: &'a str) -> ClaimRequest<'a> {
        ClaimRequest { event_id, position }
    }

    #[tokio::test]
    async fn memory_claims_follow_the_port_contract() {
        let claims = MemoryClaims::new(Duration::from_secs(100));
        let claimed = Claim::Claimed { applied: false };
        let got = claims
            .claim(
                "agg",
                &[
                    req("a", "s/1"),
                    req("b", "s/2"),
                    req("a", "s/3"),
                    req("", "s/4"),
                    req("", "s/5"),
                ],
                1_000,
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![claimed, claimed, Claim::Duplicate, claimed, claimed]
        );
        // Redelivery at the same position claims again; a new position is a duplicate.
        let got = claims
            .claim("agg", &[req("a", "s/1"), req("b", "s/9")], 1_001)
            .await
            .unwrap();
        assert_eq!(got, vec![claimed, Claim::Duplicate]);
        // Of the same event twice in one call, the one at the held position is claimed,
        // wherever it comes in the call.
        let got = claims
            .claim("agg", &[req("a", "s/0"), req("a", "s/1")], 1_001)
            .await
            .unwrap();
        assert_eq!(got, vec![Claim::Duplicate, claimed]);
        // Another stage has its own claims.
        assert_eq!(
            claims
                .claim("arch", &[req("a", "s/9")], 1_001)
                .await
                .unwrap(),
            vec![claimed]
        );
        claims
            .mark_applied("agg", &[req("a", "s/1")], 1_002)
            .await
            .unwrap();
        assert_eq!(
            claims
                .claim("agg", &[req("a", "s/1")], 1_003)
                .await
                .unwrap(),
            vec![Claim::Claimed { applied: true }]
        );
        assert_eq!(
            claims.release("agg", &["a", "b", "zz"]).await.unwrap(),
            vec![Release::Applied, Release::Released, Release::Unclaimed]
        );
        // Released: the redriven copy claims at its new position.
        assert_eq!(
            claims
                .claim("agg", &[req("b", "s/20")], 1_004)
                .await
                .unwrap(),
            vec![claimed]
        );
        // After the window, an old claim no longer blocks.
        assert_eq!(
            claims
                .claim("agg", &[req("a", "s/30")], 1_002 + 101)
                .await
                .unwrap(),
            vec![claimed]
        );
    }
}
