//! Fixtures of the archiver's unit tests: an archiver on in-memory ports, order events
//! over two hours of one day, batches of them and the check that every event landed once.
//! One place for them, since every step's tests run whole batches through
//! [`Archiver::process`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use riffle_codec::{Envelope, EnvelopeCodec, SchemaCache};
use riffle_runtime::KinesisEvent;
use riffle_stage::SqsMessage;
use riffle_stage::marks::{DEFAULT_MARK_WINDOW, Marks, MemoryMarks};
use riffle_stage::testing::{
    FailingMarks, MapSource, Sink, enriched_envelope as envelope, kinesis_event as event,
};

use crate::Archiver;
use crate::intent::MemoryIntents;
use riffle_archive::testing::MemoryBucket;

pub(crate) const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");
pub(crate) const ORDER_ID: i32 = 3;

/// An `OrderPlaced` payload with quantity `quantity`, Avro-encoded.
pub(crate) fn order_payload(quantity: i32) -> Vec<u8> {
    let schema = Schema::parse_str(ORDER).unwrap();
    let value = Value::Record(vec![
        ("order_id".into(), Value::String("ord-0123456789ab".into())),
        ("customer_id".into(), Value::String("cus-000001".into())),
        ("product_id".into(), Value::String("sku-0001".into())),
        ("quantity".into(), Value::Int(quantity)),
        ("unit_price".into(), Value::Double(9.5)),
        ("currency".into(), Value::Enum(1, "USD".into())),
        ("coupon".into(), Value::Union(0, Box::new(Value::Null))),
        (
            "placed_at".into(),
            Value::TimestampMillis(1_764_000_000_000),
        ),
        ("attributes".into(), Value::Map(HashMap::new())),
    ]);
    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

pub(crate) type TestArchiver =
    Archiver<MapSource, MemoryBucket, FailingMarks<MemoryMarks>, MemoryIntents, Sink<SqsMessage>>;

/// An archiver on in-memory ports writing under `events`; its registry is down when
/// `registry_down`.
pub(crate) fn archiver(bucket: MemoryBucket, registry_down: bool) -> TestArchiver {
    let source = MapSource::with([(ORDER_ID as u32, ORDER)], []);
    source.set_down(registry_down);
    Archiver::new(
        EnvelopeCodec::new(7).unwrap(),
        SchemaCache::new(source),
        bucket,
        Marks::new(FailingMarks::default(), DEFAULT_MARK_WINDOW),
        MemoryIntents::default(),
        Sink::new(),
        "events",
    )
}

/// An order event at `event_time` with quantity `q`.
pub(crate) fn order(event_time: i64, q: i32) -> Envelope {
    let mut e = envelope(
        "orders:category=books",
        f64::from(q) * 9.5,
        event_time - event_time % 60_000,
    );
    e.event_id = format!("ev-{event_time}-{q}");
    e.event_time = event_time;
    e.schema_id = ORDER_ID;
    e.payload = order_payload(q);
    e.stage_times = HashMap::from([
        ("validator".to_owned(), event_time + 5),
        ("enricher".to_owned(), event_time + 9),
    ]);
    e.enrichment.as_mut().unwrap().attributes =
        HashMap::from([("category".to_owned(), "books".to_owned())]);
    e
}

// 2025-11-24T16:00:00Z and an hour later.
pub(crate) const H16: i64 = 1_764_000_000_000;
pub(crate) const H17: i64 = H16 + 3_600_000;
pub(crate) const NOW: i64 = H17 + 3_600_000;

/// `n` orders over two hours, as one batch.
pub(crate) fn batch(n: i32) -> KinesisEvent {
    let codec = EnvelopeCodec::new(7).unwrap();
    let blobs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let at = if i % 3 == 0 { H17 } else { H16 };
            codec.encode(&order(at + i64::from(i), i)).unwrap()
        })
        .collect();
    event(&blobs)
}

/// Records `range` of `ev` as a batch of their own: a bisection half, a restart, a batch
/// that grew.
pub(crate) fn slice(ev: &KinesisEvent, range: std::ops::Range<usize>) -> KinesisEvent {
    let mut out = ev.clone();
    out.records = ev.records[range].to_vec();
    out
}

/// Asserts that `n` events have a row in the bucket, each exactly one.
pub(crate) fn once_each(arch: &TestArchiver, n: usize) {
    let counts = arch.store.rows_per_event();
    assert_eq!(counts.len(), n, "every event archived");
    let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(doubled.is_empty(), "rows more than once: {doubled:?}");
}
