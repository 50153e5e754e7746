//! Test support for the stages (cargo feature `testing`, enabled only by dev-dependencies):
//! registered schemas served from a map, `Vec`-collecting output and rejects ports, and
//! Lambda Kinesis events built from record bytes.
//!
//! These are in-process implementations of the stage's own ports, not stand-ins for AWS: the
//! AWS implementations ([`crate::KinesisOutput`], [`crate::SqsRejects`]) are tested against
//! the emulators. A test that cannot build its fixtures has failed, so the helpers panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::KinesisEvent;
use riffle_aws::{AwsError, OutRecord, SqsMessage};
use riffle_codec::registered::DataContract;
use riffle_codec::source::{Fetched, SchemaSource, SourceError};
use riffle_codec::{Enrichment, Envelope};

use crate::ports::{Output, OutputError, Rejects};
use crate::reject::RejectMessage;

/// Schemas by registry id, as a registry would serve them; `set_down` makes every fetch fail
/// as an outage would, `unavailable` only the fetches of some ids. Clones share their state.
#[derive(Clone, Default)]
pub struct MapSource {
    inner: Arc<MapInner>,
}

#[derive(Default)]
struct MapInner {
    schemas: HashMap<u32, String>,
    unavailable: HashSet<u32>,
    down: AtomicBool,
    fetched: Mutex<Vec<u32>>,
}

impl MapSource {
    /// `schemas` by id; fetching an id in `unavailable` fails as a registry outage.
    pub fn with<'a>(
        schemas: impl IntoIterator<Item = (u32, &'a str)>,
        unavailable: impl IntoIterator<Item = u32>,
    ) -> Self {
        MapSource {
            inner: Arc::new(MapInner {
                schemas: schemas
                    .into_iter()
                    .map(|(id, s)| (id, s.to_string()))
                    .collect(),
                unavailable: unavailable.into_iter().collect(),
                ..MapInner::default()
            }),
        }
    }

    /// Makes every later fetch fail as a registry outage (or succeed again).
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// How often the registry was asked.
    pub fn fetches(&self) -> usize {
        self.inner.fetched.lock().unwrap().len()
    }

    /// The ids the registry was asked for, in order.
    pub fn fetched(&self) -> Vec<u32> {
        self.inner.fetched.lock().unwrap().clone()
    }
}

impl SchemaSource for MapSource {
    async fn fetch_schema(&self, id: u32) -> Result<Fetched, SourceError> {
        self.inner.fetched.lock().unwrap().push(id);
        if self.inner.down.load(Ordering::SeqCst) || self.inner.unavailable.contains(&id) {
            return Err(SourceError::Unavailable("connection refused (test)".into()));
        }
        let schema = self
            .inner
            .schemas
            .get(&id)
            .cloned()
            .ok_or(SourceError::NotFound(id))?;
        Ok(Fetched {
            contract: bundled_contract_of(&schema),
            schema,
        })
    }
}

/// The contract of `schemas/rules/` for the record `schema` defines, as the harness and
/// `riffle schema register` register it with the schema (ADR 0020); none for other schemas.
pub fn bundled_contract_of(schema: &str) -> DataContract {
    let Ok(parsed) = riffle_codec::CompiledSchema::parse(0, schema) else {
        return DataContract::default();
    };
    riffle_codec::rules::BUNDLED_CONTRACTS
        .iter()
        .map(|(file, text)| DataContract::from_file(file, text).unwrap())
        .find(|c| Some(c.subject.as_str()) == parsed.full_name())
        .map(|c| c.fields)
        .unwrap_or_default()
}

/// Collects what a port is given. `fail` picks the indexes (within one call) reported as
/// finally failed, which are then not kept; `set_refuse` fails whole calls, retryably.
/// Clones share their state.
#[derive(Clone)]
pub struct Sink<T> {
    inner: Arc<SinkInner<T>>,
}

struct SinkInner<T> {
    items: Mutex<Vec<T>>,
    fail: fn(usize) -> bool,
    refuse: AtomicBool,
}

impl<T> Default for Sink<T> {
    fn default() -> Self {
        Self::failing(|_| false)
    }
}

impl<T> Sink<T> {
    /// A sink that keeps everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that reports the indexes `fail` picks as failed.
    pub fn failing(fail: fn(usize) -> bool) -> Self {
        Sink {
            inner: Arc::new(SinkInner {
                items: Mutex::new(Vec::new()),
                fail,
                refuse: AtomicBool::new(false),
            }),
        }
    }

    /// Makes every later call fail as a whole (or succeed again).
    pub fn set_refuse(&self, refuse: bool) {
        self.inner.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Everything kept so far, and forgets it.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.inner.items.lock().unwrap())
    }

    fn accept(&self, operation: &'static str, items: Vec<T>) -> Result<Vec<usize>, OutputError> {
        if self.inner.refuse.load(Ordering::SeqCst) {
            return Err(OutputError(AwsError::Call {
                operation,
                code: "ServiceUnavailable".into(),
                message: "refused (test)".into(),
                retryable: true,
            }));
        }
        let mut failed = Vec::new();
        let mut kept = self.inner.items.lock().unwrap();
        for (i, item) in items.into_iter().enumerate() {
            if (self.inner.fail)(i) {
                failed.push(i);
            } else {
                kept.push(item);
            }
        }
        Ok(failed)
    }
}

impl Output for Sink<OutRecord> {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<usize>, OutputError> {
        self.accept("PutRecords", records)
    }
}

impl Rejects for Sink<SqsMessage> {
    async fn reject(&self, messages: Vec<SqsMessage>) -> Result<Vec<usize>, OutputError> {
        self.accept("SendMessageBatch", messages)
    }
}

/// Reject messages as the queue would hold them; each must carry its code as an attribute.
pub fn reject_messages(sent: &[SqsMessage]) -> Vec<RejectMessage> {
    sent.iter()
        .map(|m| {
            let msg: RejectMessage = serde_json::from_str(&m.body).unwrap();
            assert!(
                m.attributes
                    .contains(&("code".to_string(), msg.code.clone())),
                "code attribute of {m:?}"
            );
            msg
        })
        .collect()
}

/// A Lambda event from the `enriched` stream as Lambda sends it (JSON), one record per data
/// blob: partition keys `pk-<i>`, sequence numbers `4959<i:04>` on `shardId-000000000000`.
pub fn kinesis_event(datas: &[Vec<u8>]) -> KinesisEvent {
    let records: Vec<serde_json::Value> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut blob = aws_lambda_events::encodings::Base64Data::default();
            blob.extend_from_slice(d);
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": format!("pk-{i}"),
                    "sequenceNumber": format!("4959{i:04}"),
                    "data": blob,
                    "approximateArrivalTimestamp": 1_764_000_000.5
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:4959{i:04}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/riffle",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/enriched"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

/// An enriched `OrderPlaced` envelope (payload schema id 3, empty payload) with event id
/// `ev-<agg_key>-<metric>`, one second into the window.
pub fn enriched_envelope(agg_key: &str, metric: f64, window_start: i64) -> Envelope {
    Envelope {
        origin: None,
        event_id: format!("ev-{agg_key}-{metric}"),
        source: "test".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: 3,
        event_time: window_start + 1_000,
        ingest_time: window_start + 1_100,
        stage_times: HashMap::new(),
        trace_header: None,
        payload: vec![],
        enrichment: Some(Enrichment {
            agg_key: agg_key.into(),
            metric,
            window_start,
            reference_found: true,
            attributes: HashMap::new(),
            late: false,
        }),
    }
}

/// A [`crate::marks::MarkStore`] whose next `fail` saves fail as a killed process's would
/// (set [`FailingMarks::fail`], e.g. to 1: the function died after its effects and before
/// its marks); loads and the other saves go to `inner`.
#[derive(Debug, Clone, Default)]
pub struct FailingMarks<M> {
    /// Where the marks really are.
    pub inner: M,
    /// Saves still to fail.
    pub fail: Arc<std::sync::atomic::AtomicUsize>,
}

impl<M> FailingMarks<M> {
    /// `inner`, its next `saves` saves failing.
    pub fn new(inner: M, saves: usize) -> Self {
        FailingMarks {
            inner,
            fail: Arc::new(std::sync::atomic::AtomicUsize::new(saves)),
        }
    }
}

impl<M: crate::marks::MarkStore> crate::marks::MarkStore for FailingMarks<M> {
    async fn load(
        &self,
        stage: &str,
        shard: &str,
    ) -> Result<crate::marks::ShardMarks, OutputError> {
        self.inner.load(stage, shard).await
    }

    async fn save(
        &self,
        stage: &str,
        shard: &str,
        marks: &crate::marks::ShardMarks,
        expires_at: i64,
    ) -> Result<bool, OutputError> {
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(OutputError(AwsError::Call {
                operation: "PutItem",
                code: "Killed".into(),
                message: "the process died before its marks".into(),
                retryable: true,
            }));
        }
        self.inner.save(stage, shard, marks, expires_at).await
    }
}
