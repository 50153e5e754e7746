//! The archiver against moto's S3, SQS and DynamoDB, through the real AWS SDK (path-style
//! client): a batch lands as one Parquet object per subject/date/hour with the documented
//! keys and rows, records that can never be archived land on the dead-letter queue, and every
//! event lands once (ADR 0009, "Amendment: the archive"): the same batch twice, a batch then
//! its bisection halves, a duplicate event id at a new sequence number, a crash between an
//! object's write and its claims' marks followed by a redelivery cut differently, and the same
//! with the crashed attempt's object compacted away before the redelivery. Every test reads
//! every row of the archive back from Parquet and counts them by event id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
use riffle_archive::compact::{self, CompactOptions};
use riffle_archive::scan::{self, Filter};
use riffle_archive::{
    ArchiveBucket, ArchiveError, ObjectInfo, ObjectStore, S3ObjectStore, read_rows,
};
use riffle_archiver::{Archiver, DynamoIntents, Intents};
use riffle_aws::{AwsError, SqsSender};
use riffle_codec::{Enrichment, Envelope, EnvelopeCodec, SchemaCache};
use riffle_local::Emulators;
use riffle_runtime::{KinesisEvent, KinesisHandler};
use riffle_stage::SqsRejects;
use riffle_stage::marks::{DynamoMarks, MarkStore, Marks};
use riffle_stage::testing::{FailingMarks, MapSource};
use riffle_tests::test_support::{create_queue, create_table, drain, enriched_event, state_dir};

const DEADLINE: Duration = Duration::from_secs(30);
const BUCKET: &str = "riffle-archive";
const ENVELOPE_ID: u32 = 7;
const ORDER_ID: i32 = 3;
const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");
/// 2025-11-24T16:00:00Z.
const H16: i64 = 1_764_000_000_000;
const H17: i64 = H16 + 3_600_000;
const CLAIMS: &str = "riffle-claims";
const DAY: Duration = Duration::from_secs(24 * 3600);
const SHARD: &str = "shardId-000000000002";

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
        origin: None,
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
            late: false,
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

/// The emulators with the bucket, the claims table and the dead-letter queue made.
struct Env {
    emulators: Emulators,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    dynamo: aws_sdk_dynamodb::Client,
    queue_url: String,
}

impl Env {
    async fn start(name: &str) -> Env {
        let emulators = Emulators::start(&state_dir(&format!("archiver-{name}")))
            .await
            .unwrap();
        let sdk = emulators.sdk_config().await;
        let s3 = riffle_aws::s3_client(&sdk);
        let sqs = riffle_aws::sqs_client(&sdk);
        let dynamo = riffle_aws::dynamodb_client(&sdk);
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        create_table(
            &dynamo,
            CLAIMS,
            &[("pk", ScalarAttributeType::S, KeyType::Hash)],
        )
        .await;
        let queue_url = create_queue(&sqs, "riffle-archiver-dlq").await;
        Env {
            emulators,
            s3,
            sqs,
            dynamo,
            queue_url,
        }
    }

    fn store(&self) -> S3ObjectStore {
        S3ObjectStore::new(self.s3.clone(), BUCKET)
    }

    fn claims(&self) -> DynamoMarks {
        DynamoMarks::new(self.dynamo.clone(), CLAIMS)
    }

    fn intents(&self) -> DynamoIntents {
        DynamoIntents::new(self.dynamo.clone(), CLAIMS, DAY)
    }

    fn archiver_with<O: ArchiveBucket, C: MarkStore>(
        &self,
        store: O,
        claims: C,
    ) -> Archiver<MapSource, O, C, DynamoIntents, SqsRejects> {
        Archiver::new(
            EnvelopeCodec::new(ENVELOPE_ID).unwrap(),
            SchemaCache::new(registry()),
            store,
            Marks::new(claims, DAY),
            self.intents(),
            SqsRejects::new(SqsSender::new(self.sqs.clone()), &self.queue_url),
            "events",
        )
    }

    fn archiver(
        &self,
    ) -> Archiver<MapSource, S3ObjectStore, DynamoMarks, DynamoIntents, SqsRejects> {
        self.archiver_with(self.store(), self.claims())
    }

    /// Archive rows per event id, read from every live object (as readers do: objects a
    /// compacted object replaces are skipped).
    async fn rows_per_event(&self) -> BTreeMap<String, usize> {
        let store = self.store();
        let mut out = BTreeMap::new();
        for partition in scan::partitions(&store, "events", &Filter::default())
            .await
            .unwrap()
        {
            for row in scan::read_live_rows(&store, &partition).await.unwrap() {
                *out.entry(row.event_id).or_default() += 1;
            }
        }
        out
    }

    /// Asserts that the archive holds exactly one row of each of `events`, and no other.
    async fn assert_once(&self, events: &[Envelope]) {
        let counts = self.rows_per_event().await;
        let want: BTreeMap<String, usize> =
            events.iter().map(|e| (e.event_id.clone(), 1)).collect();
        assert_eq!(counts, want);
    }
}

/// `n` orders from `from`, every third an hour later.
/// Orders `from..from + n`, each with the origin an upstream stage gave it (sequence `i`), so
/// that a copy at a new position is recognised as one.
fn orders(from: i32, n: i32) -> Vec<Envelope> {
    (from..from + n)
        .map(|i| {
            let at = if i % 3 == 0 { H17 } else { H16 };
            let mut e = order(at + i64::from(i), i);
            e.origin = Some(riffle_codec::Origin {
                id: "enricher/shardId-000000000009".into(),
                seq: i.to_string(),
                sub: 0,
            });
            e
        })
        .collect()
}

fn encoded(events: &[Envelope]) -> Vec<Vec<u8>> {
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    events.iter().map(|e| codec.encode(e).unwrap()).collect()
}

/// Records `range` of `event`, as Lambda would redeliver a part of it.
fn cut(event: &KinesisEvent, range: std::ops::Range<usize>) -> KinesisEvent {
    let mut out = event.clone();
    out.records = event.records[range].to_vec();
    out
}

/// A bucket whose writes land but answer with an error (a timeout after S3 stored the
/// object): the attempt cannot know its objects exist, so it marks nothing.
struct LostAnswers(S3ObjectStore);

impl ObjectStore for LostAnswers {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), ArchiveError> {
        self.0.put(key, body).await?;
        Err(ArchiveError::Store(AwsError::Call {
            operation: "PutObject",
            code: "Timeout".into(),
            message: "the answer never came".into(),
            retryable: true,
        }))
    }
}

impl ArchiveBucket for LostAnswers {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError> {
        self.0.list(prefix).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        self.0.get(key).await
    }
    async fn get_tail(&self, key: &str, bytes: usize) -> Result<Vec<u8>, ArchiveError> {
        self.0.get_tail(key, bytes).await
    }
    async fn delete(&self, keys: &[String]) -> Result<(), ArchiveError> {
        self.0.delete(keys).await
    }
}

#[tokio::test]
async fn batches_land_as_partitioned_parquet_and_reruns_add_nothing() {
    let env = Env::start("objects").await;
    let (s3, sqs, queue_url) = (&env.s3, &env.sqs, &env.queue_url);
    let archiver = env.archiver();

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
    assert_eq!(list(s3).await, expected);

    let rows = read_rows(&fetch(s3, &expected[0]).await).unwrap();
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

    let parked = drain(sqs, queue_url, 1, DEADLINE).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].code, "unknown_schema");
    assert_eq!(parked[0].sequence_number, "502");
    assert_eq!(parked[0].stage, "archiver");

    // Lambda retries the same batch: every claim is applied, nothing is written.
    let again = archiver.process(&batch, H17 + 7_200_000).await.unwrap();
    assert_eq!((again.rows, again.duplicates), (0, 3));
    assert_eq!(list(s3).await, expected);
    env.assert_once(&[order(H16 + 1, 1), order(H17 + 1, 2), order(H16 + 2, 3)])
        .await;
    assert!(env.intents().pending(SHARD).await.unwrap().is_empty());
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn a_batch_then_its_bisection_halves_and_a_duplicate_at_a_new_position_land_once() {
    let env = Env::start("halves").await;
    let archiver = env.archiver();
    let events = orders(0, 10);
    let batch = event(&encoded(&events), 1_000);
    let now = H17 + 7_200_000;
    assert_eq!(archiver.process(&batch, now).await.unwrap().rows, 10);
    for half in [cut(&batch, 0..5), cut(&batch, 5..10)] {
        let r = archiver.process(&half, now).await.unwrap();
        assert_eq!((r.rows, r.duplicates), (0, 5));
    }
    // A producer retry and an upstream re-publish: the same events at new sequence
    // numbers, beside a new one.
    let mut again = vec![events[3].clone(), events[7].clone()];
    let fresh = orders(10, 1);
    again.extend(fresh.iter().cloned());
    let r = archiver
        .process(&event(&encoded(&again), 2_000), now)
        .await
        .unwrap();
    assert_eq!((r.rows, r.duplicates), (1, 2));
    let mut all = events.clone();
    all.extend(fresh);
    env.assert_once(&all).await;
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn a_crash_between_writes_and_marks_then_a_different_cut_lands_once() {
    let env = Env::start("crash").await;
    let events = orders(0, 12);
    let batch = event(&encoded(&events), 3_000);
    let now = H17 + 7_200_000;

    // Killed after its object writes, before any mark: records 0..8.
    let killed = env.archiver_with(
        env.store(),
        // Killed after its object writes, before its marks.
        FailingMarks::new(env.claims(), 1),
    );
    let err = killed.process(&cut(&batch, 0..8), now).await.unwrap_err();
    assert!(err.retryable());
    assert_eq!(list(&env.s3).await.len(), 2);
    assert_eq!(env.intents().pending(SHARD).await.unwrap().len(), 2);

    // Redelivered from the checkpoint as a bigger batch (more records arrived), then
    // bisected after a failure: each cut names its objects differently.
    let archiver = env.archiver();
    let r = archiver.process(&cut(&batch, 0..12), now).await.unwrap();
    assert_eq!((r.rows, r.recovered), (4, 8));
    for half in [cut(&batch, 0..6), cut(&batch, 6..12)] {
        assert_eq!(archiver.process(&half, now).await.unwrap().rows, 0);
    }
    env.assert_once(&events).await;
    // The found objects' intents stay until a batch starts past their records.
    assert_eq!(env.intents().pending(SHARD).await.unwrap().len(), 2);

    // The same with the write's answer lost: the objects are there, the attempt wrote no
    // marks, and the redelivery is a bisection half followed by the other half. Each half
    // finds its records in the lost attempt's objects (their intents are still pending).
    let more = orders(12, 6);
    let batch = event(&encoded(&more), 4_000);
    let lost = env.archiver_with(LostAnswers(env.store()), env.claims());
    lost.process(&batch, now).await.unwrap_err();
    let r = archiver.process(&cut(&batch, 0..3), now).await.unwrap();
    assert_eq!((r.rows, r.recovered), (0, 3));
    let r = archiver.process(&cut(&batch, 3..6), now).await.unwrap();
    assert_eq!((r.rows, r.recovered), (0, 3));
    assert!(!env.intents().pending(SHARD).await.unwrap().is_empty());
    // The next batch starts past them: they are forgotten.
    let last = orders(18, 1);
    archiver
        .process(&event(&encoded(&last), 5_000), now)
        .await
        .unwrap();
    assert!(env.intents().pending(SHARD).await.unwrap().is_empty());
    let mut all = events.clone();
    all.extend(more);
    all.extend(last);
    env.assert_once(&all).await;
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn an_object_compacted_away_after_a_crash_still_counts() {
    let env = Env::start("compacted").await;
    let archiver = env.archiver();
    let now = H17 + 7_200_000;
    // An earlier batch, so the hour-16 partition has two small objects to merge.
    let earlier = orders(0, 3);
    archiver
        .process(&event(&encoded(&earlier), 5_000), now)
        .await
        .unwrap();

    let events = orders(3, 9);
    let batch = event(&encoded(&events), 6_000);
    let killed = env.archiver_with(
        env.store(),
        // Killed after its object writes, before its marks.
        FailingMarks::new(env.claims(), 1),
    );
    killed.process(&batch, now).await.unwrap_err();
    let options = CompactOptions {
        prefix: "events".into(),
        ..CompactOptions::default()
    };
    let compacted = compact::run(&env.store(), &options, |_| {}).await.unwrap();
    assert!(compacted.written >= 1, "{compacted:?}");

    let r = archiver.process(&cut(&batch, 0..5), now).await.unwrap();
    assert_eq!((r.rows, r.recovered), (0, 5));
    let r = archiver.process(&cut(&batch, 5..9), now).await.unwrap();
    assert_eq!((r.rows, r.recovered), (0, 4));
    let mut all = earlier.clone();
    all.extend(events);
    env.assert_once(&all).await;
    env.emulators.shutdown().await;
}
