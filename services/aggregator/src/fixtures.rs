//! Fixtures of the aggregator's unit tests: the view port in memory (with a rival writer
//! and an outage to switch on), an aggregator on in-memory ports, and batches of enriched
//! events. One place for them, since every step's tests run whole batches through
//! [`Aggregator::process`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use riffle_aws::AwsError;
use riffle_codec::{EnvelopeCodec, SchemaCache};
use riffle_runtime::KinesisEvent;
use riffle_stage::SqsMessage;
use riffle_stage::dedup::Position;
use riffle_stage::marks::{DEFAULT_MARK_WINDOW, Marks, MemoryMarks};
use riffle_stage::testing::{MapSource, Sink, enriched_envelope as envelope, kinesis_event};

use crate::aggregate::{Point, ViewKey, ViewRow, apply, pre_aggregate};
use crate::store::{Saved, ViewStore};
use crate::{Aggregator, AggregatorError, window_lengths};

/// The view port in memory, with a rival writer that bumps an item behind our back.
#[derive(Default)]
pub(crate) struct MemoryStore {
    /// The items, by key.
    pub(crate) items: Mutex<HashMap<ViewKey, ViewRow>>,
    /// Saves still to come on each of which a rival writes the item first.
    pub(crate) rival_bumps: Mutex<u32>,
    /// Every save fails as throttled (retryable).
    pub(crate) fail_saves: bool,
    /// The watermark item: per input shard the published time, and lateness per view.
    pub(crate) watermarks: Mutex<(HashMap<String, i64>, BTreeMap<String, i64>)>,
}

impl ViewStore for MemoryStore {
    async fn load(&self, keys: &[ViewKey]) -> Result<HashMap<ViewKey, ViewRow>, AggregatorError> {
        let items = self.items.lock().unwrap();
        Ok(keys
            .iter()
            .filter_map(|k| items.get(k).map(|r| (k.clone(), r.clone())))
            .collect())
    }

    async fn save(&self, row: &ViewRow) -> Result<Saved, AggregatorError> {
        if self.fail_saves {
            return Err(AggregatorError::View(AwsError::Call {
                operation: "PutItem",
                code: "ProvisionedThroughputExceededException".into(),
                message: String::new(),
                retryable: true,
            }));
        }
        let mut items = self.items.lock().unwrap();
        let mut bumps = self.rival_bumps.lock().unwrap();
        if *bumps > 0 {
            *bumps -= 1;
            // A rival on another shard adds one value of 100 to the item first.
            let rival = pre_aggregate([Point {
                agg_key: &row.key.agg_key,
                window_start: row.key.window_start,
                metric: 100.0,
                window_secs: 60,
                shard: 0,
                // Later rival writes sit later on the rival's shard.
                position: Position::new(&(u32::MAX - *bumps).to_string(), 0).unwrap(),
                record: 0,
            }]);
            let merge = apply(
                &row.key,
                items.get(&row.key),
                &rival[&row.key],
                &["shardId-rival".to_owned()],
                0,
                30,
            );
            items.insert(row.key.clone(), merge.row.unwrap());
        }
        let stored_version = items.get(&row.key).map_or(0, |r| r.version);
        if stored_version + 1 != row.version {
            return Ok(Saved::Conflict);
        }
        items.insert(row.key.clone(), row.clone());
        Ok(Saved::Written)
    }

    async fn publish_watermark(
        &self,
        shard: &str,
        time: i64,
        lateness: &BTreeMap<String, i64>,
        _now_ms: i64,
    ) -> Result<(), AggregatorError> {
        let mut w = self.watermarks.lock().unwrap();
        w.0.insert(shard.to_owned(), time);
        w.1.extend(lateness.iter().map(|(k, v)| (k.clone(), *v)));
        Ok(())
    }
}

pub(crate) type TestAggregator = Aggregator<MapSource, MemoryStore, MemoryMarks, Sink<SqsMessage>>;

/// An aggregator on in-memory ports, with the bundled contracts' windows and a 30-day TTL.
pub(crate) fn aggregator(store: MemoryStore, letters: Sink<SqsMessage>) -> TestAggregator {
    let windows = window_lengths(&riffle_codec::rules::bundled().unwrap());
    Aggregator::new(
        EnvelopeCodec::new(7).unwrap(),
        SchemaCache::new(MapSource::default()),
        store,
        Marks::new(MemoryMarks::default(), DEFAULT_MARK_WINDOW),
        letters,
        windows,
        30,
    )
}

/// One record per blob on shard 0, sequence numbers from `first_seq`.
pub(crate) fn event_at(datas: &[Vec<u8>], first_seq: u64) -> KinesisEvent {
    let mut ev = kinesis_event(datas);
    for (i, r) in ev.records.iter_mut().enumerate() {
        let seq = (first_seq + i as u64).to_string();
        r.kinesis.sequence_number = seq;
    }
    ev
}

/// One record per blob on shard 0, sequence numbers from 100.
pub(crate) fn event(datas: &[Vec<u8>]) -> KinesisEvent {
    event_at(datas, 100)
}

/// Envelopes of (agg_key, metric) `values` in window 0, encoded.
pub(crate) fn blobs(codec: &EnvelopeCodec, values: &[(&str, f64)]) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|(k, v)| codec.encode(&envelope(k, *v, 0)).unwrap())
        .collect()
}

/// The stored view item (`agg_key`, `window_start`); panics when there is none.
pub(crate) fn item(agg: &TestAggregator, agg_key: &str, window_start: i64) -> ViewRow {
    agg.store.items.lock().unwrap()[&ViewKey {
        agg_key: agg_key.into(),
        window_start,
    }]
        .clone()
}

/// Envelopes of `values` from producer channel `origin`, sequences from `first`.
pub(crate) fn from_origin(
    codec: &EnvelopeCodec,
    origin: &str,
    first: u64,
    values: &[(&str, f64)],
) -> Vec<Vec<u8>> {
    values
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let mut e = envelope(k, *v, 0);
            e.origin = Some(riffle_codec::Origin {
                id: origin.into(),
                seq: (first + i as u64).to_string(),
                sub: 0,
            });
            codec.encode(&e).unwrap()
        })
        .collect()
}
