//! The archiver against moto's S3 and SQS, through the real AWS SDK (path-style client): a
//! batch lands as one Parquet object per subject/date/hour with the documented keys and
//! rows, a re-run of the same batch overwrites rather than adds, and records that can never
//! be archived land on the dead-letter queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use riffle_archiver::{Archiver, S3ObjectStore, read_rows};
use riffle_aws::SqsSender;
use riffle_codec::{Enrichment, Envelope, EnvelopeCodec, SchemaCache};
use riffle_local::Emulators;
use riffle_runtime::{KinesisEvent, KinesisHandler};
use riffle_stage::SqsRejects;
use riffle_stage::testing::MapSource;
use riffle_tests::test_support::{create_queue, drain, enriched_event, state_dir};

const DEADLINE: Duration = Duration::from_secs(30);
const BUCKET: &str = "riffle-archive";
const ENVELOPE_ID: u32 = 7;
const ORDER_ID: i32 = 3;
const ORDER: &str = include_str!("../../schemas/events/order_placed.avsc");
/// 2025-11-24T16:00:00Z.
const H16: i64 = 1_764_000_000_000;
const H17: i64 = H16 + 3_600_000;

/// The registry's part in this test: the order schema under its id.
fn registry() -> MapSource {
    MapSource::with([(ORDER_ID as u32, ORDER)], [])
}

fn order_payload(quantity: i32) -> Vec<u8> {
    let schema = Schema::parse_str(ORDER).unwrap();
    let value = Value::Record(vec![
        ("order_id".into(), Value::String("ord-0123456789ab".into())),
        ("customer_id".into(), Value::String("cus-000001".into())),
        ("product_id".into(), Value::String("sku-0001".into())),
        ("quantity".into(), Value::Int(quantity)),
        ("unit_price".into(), Value::Double(2.5)),
        ("currency".into(), Value::Enum(0, "EUR".into())),
        (
            "coupon".into(),
            Value::Union(1, Box::new(Value::String("SAVE10".into()))),
        ),
        ("placed_at".into(), Value::TimestampMillis(H16)),
        ("attributes".into(), Value::Map(HashMap::new())),
    ]);
    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

fn order(event_time: i64, quantity: i32) -> Envelope {
    Envelope {
        event_id: format!("ev-{event_time}-{quantity}"),
        source: "shop-web".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: ORDER_ID,
        event_time,
        ingest_time: event_time + 100,
        stage_times: HashMap::from([("validator".to_owned(), event_time + 200)]),
        trace_header: Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into()),
        payload: order_payload(quantity),
        enrichment: Some(Enrichment {
            agg_key: "orders:category=books".into(),
            metric: f64::from(quantity) * 2.5,
            window_start: event_time - event_time.rem_euclid(60_000),
            reference_found: false,
            attributes: HashMap::from([("category".to_owned(), "books".to_owned())]),
        }),
    }
}

fn event(blobs: &[Vec<u8>], first_seq: u64) -> KinesisEvent {
    enriched_event(blobs, first_seq, "shardId-000000000002")
}

async fn list(s3: &aws_sdk_s3::Client) -> Vec<String> {
    let got = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("events/")
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = got
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

async fn fetch(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let got = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    got.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn batches_land_as_partitioned_parquet_and_reruns_overwrite() {
    let emulators = Emulators::start(&state_dir("archiver-objects"))
        .await
        .unwrap();
    let sdk = emulators.sdk_config().await;
    let s3 = riffle_aws::s3_client(&sdk);
    let sqs = riffle_aws::sqs_client(&sdk);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let queue_url = create_queue(&sqs, "riffle-archiver-dlq").await;
    let archiver = Archiver::new(
        EnvelopeCodec::new(ENVELOPE_ID).unwrap(),
        SchemaCache::new(registry()),
        S3ObjectStore::new(s3.clone(), BUCKET),
        SqsRejects::new(SqsSender::new(sqs.clone()), &queue_url),
        "events",
    );

    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    let mut unknown_schema = order(H16 + 5, 9);
    unknown_schema.schema_id = 404;
    let batch = event(
        &[
            codec.encode(&order(H16 + 1, 1)).unwrap(),
            codec.encode(&order(H17 + 1, 2)).unwrap(),
            codec.encode(&unknown_schema).unwrap(),
            codec.encode(&order(H16 + 2, 3)).unwrap(),
        ],
        500,
    );
    let response = archiver.handle(batch.clone()).await.unwrap();
    assert!(response.batch_item_failures.is_empty());

    let prefix = "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24";
    let expected = vec![
        format!("{prefix}/hour=16/shardId-000000000002-500-503.parquet"),
        format!("{prefix}/hour=17/shardId-000000000002-501-501.parquet"),
    ];
    assert_eq!(list(&s3).await, expected);

    let rows = read_rows(&fetch(&s3, &expected[0]).await).unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![order(H16 + 1, 1).event_id, order(H16 + 2, 3).event_id]
    );
    let first = &rows[0];
    assert_eq!(first.subject, "com.riffle.shop.OrderPlaced");
    assert_eq!(first.schema_id, ORDER_ID);
    assert_eq!(first.event_time, H16 + 1);
    assert_eq!(first.validated_at, Some(H16 + 201));
    assert_eq!(first.enriched_at, None);
    assert_eq!(first.metric, 2.5);
    assert!(!first.reference_found);
    assert_eq!(first.kinesis_sequence_number, "500");
    assert_eq!(first.kinesis_shard_id, "shardId-000000000002");
    assert_eq!(first.payload, order_payload(1));
    let payload: serde_json::Value = serde_json::from_str(&first.payload_json).unwrap();
    assert_eq!(payload["coupon"], "SAVE10");
    assert_eq!(payload["currency"], "EUR");
    assert_eq!(payload["quantity"], 1);
    let archived_at = first.archived_at;

    let parked = drain(&sqs, &queue_url, 1, DEADLINE).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].code, "unknown_schema");
    assert_eq!(parked[0].sequence_number, "502");
    assert_eq!(parked[0].stage, "archiver");

    // Lambda retries the same batch: the same objects are overwritten, none added.
    archiver.handle(batch).await.unwrap();
    assert_eq!(list(&s3).await, expected);
    let again = read_rows(&fetch(&s3, &expected[0]).await).unwrap();
    assert_eq!(again.len(), 2);
    assert!(again[0].archived_at >= archived_at);
    emulators.shutdown().await;
}
