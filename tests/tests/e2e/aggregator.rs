//! The aggregator against moto's DynamoDB and SQS, through the real AWS SDK: batches add up
//! in the view (count, sum, min, max), racing batches on the same items lose nothing,
//! records that can never be aggregated land on the dead-letter queue, and every event counts
//! once however often it is delivered (ADR 0009): redelivered batches, bisection halves,
//! overlapping ranges, replays after a crash, and the same event id at a new position. The
//! event-id claims table is tested here too, races included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};
use riffle_aggregator::aggregate::{ViewKey, ViewRow};
use riffle_aggregator::store::Saved;
use riffle_aggregator::{Aggregator, AggregatorError, DynamoViewStore, ViewStore, window_lengths};
use riffle_aws::SqsSender;
use riffle_codec::{Enrichment, Envelope, EnvelopeCodec, SchemaCache};
use riffle_local::Emulators;
use riffle_runtime::{KinesisEvent, KinesisHandler};
use riffle_stage::SqsRejects;
use riffle_stage::dedup::Position;
use riffle_stage::marks::{DynamoMarks, MarkStore, Marks, ShardMarks};
use riffle_stage::testing::{FailingMarks, MapSource};
use riffle_tests::test_support::{create_queue, create_table, drain, enriched_event, state_dir};

const DEADLINE: Duration = Duration::from_secs(30);
const TABLE: &str = "riffle-view";
const CLAIMS: &str = "riffle-claims";
const DAY: Duration = Duration::from_secs(24 * 3600);
const ENVELOPE_ID: u32 = 7;
/// The envelope is the only schema the aggregator needs, and it is built in: the registry
/// knows nothing.
fn no_registry() -> MapSource {
    MapSource::default()
}

fn order(agg_key: &str, metric: f64, window_start: i64, n: usize) -> Envelope {
    Envelope {
        origin: None,
        event_id: format!("ev-{agg_key}-{window_start}-{n}"),
        source: "shop-web".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: 3,
        event_time: window_start + 500,
        ingest_time: window_start + 600,
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

/// The fixture event with one record per blob, sequence numbers from `first_seq`.
fn event(blobs: &[Vec<u8>], first_seq: u64) -> KinesisEvent {
    enriched_event(blobs, first_seq, "shardId-000000000000")
}

async fn view_item(
    dynamo: &aws_sdk_dynamodb::Client,
    agg_key: &str,
    window_start: i64,
) -> HashMap<String, f64> {
    let got = dynamo
        .get_item()
        .table_name(TABLE)
        .key("agg_key", AttributeValue::S(agg_key.into()))
        .key("window_start", AttributeValue::N(window_start.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    got.item()
        .expect("view item exists")
        .iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::N(n) => Some((k.clone(), n.parse::<f64>().unwrap())),
            _ => None,
        })
        .collect()
}

type TestAggregator<V = DynamoViewStore, C = DynamoMarks> = Aggregator<MapSource, V, C, SqsRejects>;

struct Env {
    emulators: Emulators,
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Env {
    async fn start(name: &str) -> Env {
        let emulators = Emulators::start(&state_dir(&format!("aggregator-{name}")))
            .await
            .unwrap();
        let sdk = emulators.sdk_config().await;
        let dynamo = riffle_aws::dynamodb_client(&sdk);
        let sqs = riffle_aws::sqs_client(&sdk);
        create_table(
            &dynamo,
            TABLE,
            &[
                ("agg_key", ScalarAttributeType::S, KeyType::Hash),
                ("window_start", ScalarAttributeType::N, KeyType::Range),
            ],
        )
        .await;
        create_table(
            &dynamo,
            CLAIMS,
            &[("pk", ScalarAttributeType::S, KeyType::Hash)],
        )
        .await;
        let queue_url = create_queue(&sqs, "riffle-aggregator-dlq").await;
        Env {
            emulators,
            dynamo,
            sqs,
            queue_url,
        }
    }

    fn claims(&self) -> DynamoMarks {
        DynamoMarks::new(self.dynamo.clone(), CLAIMS)
    }

    fn aggregator(&self) -> TestAggregator {
        self.aggregator_with(
            DynamoViewStore::new(self.dynamo.clone(), TABLE, CLAIMS),
            self.claims(),
        )
    }

    fn aggregator_with<V: ViewStore, C: MarkStore>(
        &self,
        view: V,
        claims: C,
    ) -> TestAggregator<V, C> {
        Aggregator::new(
            EnvelopeCodec::new(ENVELOPE_ID).unwrap(),
            SchemaCache::new(no_registry()),
            view,
            Marks::new(claims, DAY),
            SqsRejects::new(SqsSender::new(self.sqs.clone()), &self.queue_url),
            window_lengths(&riffle_codec::rules::bundled().unwrap()),
            30,
        )
    }
}

const W0: i64 = 1_764_000_000_000;
const W1: i64 = W0 + 60_000;

#[tokio::test]
async fn batches_add_up_and_poison_is_parked() {
    let env = Env::start("sums").await;
    let aggregator = env.aggregator();
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    let mut plain = order("a", 1.0, W0, 99);
    plain.enrichment = None;

    let first = event(
        &[
            codec.encode(&order("a", 2.0, W0, 0)).unwrap(),
            codec.encode(&order("a", 5.0, W0, 1)).unwrap(),
            b"\x01not an envelope".to_vec(),
            codec.encode(&order("b", 1.5, W1, 2)).unwrap(),
            codec.encode(&plain).unwrap(),
        ],
        100,
    );
    let response = aggregator.handle(first).await.unwrap();
    assert!(response.batch_item_failures.is_empty());

    let second = event(
        &[
            codec.encode(&order("a", -3.0, W0, 3)).unwrap(),
            codec.encode(&order("a", 1.0, W0, 4)).unwrap(),
            codec.encode(&order("a", 10.0, W1, 5)).unwrap(),
        ],
        200,
    );
    aggregator.handle(second).await.unwrap();

    let a0 = view_item(&env.dynamo, "a", W0).await;
    assert_eq!(a0["count"], 4.0);
    assert_eq!(a0["sum"], 5.0);
    assert_eq!(a0["min"], -3.0);
    assert_eq!(a0["max"], 5.0);
    assert_eq!(a0["window_secs"], 60.0);
    assert_eq!(a0["version"], 2.0);
    assert_eq!(a0["expires_at"], (W0 / 1000 + 60 + 30 * 86_400) as f64);
    let a1 = view_item(&env.dynamo, "a", W1).await;
    assert_eq!((a1["count"], a1["min"], a1["max"]), (1.0, 10.0, 10.0));
    let b1 = view_item(&env.dynamo, "b", W1).await;
    assert_eq!((b1["count"], b1["sum"]), (1.0, 1.5));

    let mut parked = drain(&env.sqs, &env.queue_url, 2, DEADLINE).await;
    parked.sort_by(|x, y| x.sequence_number.cmp(&y.sequence_number));
    let codes: Vec<&str> = parked.iter().map(|m| m.code.as_str()).collect();
    assert_eq!(codes, vec!["bad_magic", "no_enrichment"]);
    assert_eq!(parked[0].sequence_number, "102");
    assert_eq!(parked[0].data().unwrap(), b"\x01not an envelope");
    assert_eq!(parked[0].stage, "aggregator");
    assert_eq!(parked[1].event_id.as_deref(), Some(plain.event_id.as_str()));
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn racing_batches_lose_nothing() {
    let env = Env::start("race").await;
    let aggregator = Arc::new(env.aggregator());
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    // Eight batches from eight shards all hitting the same three items at once.
    let batches: Vec<KinesisEvent> = (0..8)
        .map(|b| {
            let blobs: Vec<Vec<u8>> = (0..30)
                .map(|i| {
                    let key = ["x", "y", "z"][i % 3];
                    let metric = (b * 30 + i) as f64;
                    codec.encode(&order(key, metric, W0, b * 30 + i)).unwrap()
                })
                .collect();
            enriched_event(&blobs, 1000, &format!("shardId-00000000000{b}"))
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for batch in batches {
        let aggregator = Arc::clone(&aggregator);
        tasks.spawn(async move {
            aggregator
                .handle(batch)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let mut total_count = 0.0;
    let mut total_sum = 0.0;
    for key in ["x", "y", "z"] {
        let item = view_item(&env.dynamo, key, W0).await;
        assert_eq!(item["count"], 80.0, "{key}");
        assert_eq!(item["version"], 8.0, "{key}: one write per batch");
        total_count += item["count"];
        total_sum += item["sum"];
    }
    assert_eq!(total_count, 240.0);
    assert_eq!(total_sum, (0..240).sum::<usize>() as f64);
    assert_eq!(view_item(&env.dynamo, "x", W0).await["min"], 0.0);
    assert_eq!(view_item(&env.dynamo, "z", W0).await["max"], 239.0);
    env.emulators.shutdown().await;
}

/// The view's count and sum of one item.
async fn count_sum(env: &Env, agg_key: &str) -> (f64, f64) {
    let item = view_item(&env.dynamo, agg_key, W0).await;
    (item["count"], item["sum"])
}

fn blobs(codec: &EnvelopeCodec, agg_key: &str, ns: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    ns.map(|n| codec.encode(&order(agg_key, n as f64, W0, n)).unwrap())
        .collect()
}

#[tokio::test]
async fn redeliveries_and_duplicates_count_once() {
    let env = Env::start("once").await;
    let aggregator = env.aggregator();
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    // Records 0..8 at sequence numbers 100..108, on items p (even n) and q (odd n), each
    // with the origin the enricher gave it (sequence n).
    let stamped = |key: &str, n: usize| {
        let mut e = order(key, n as f64, W0, n);
        e.origin = Some(riffle_codec::Origin {
            id: "enricher/shardId-000000000009".into(),
            seq: n.to_string(),
            sub: 0,
        });
        codec.encode(&e).unwrap()
    };
    let records: Vec<Vec<u8>> = (0..8)
        .map(|n| stamped(if n % 2 == 0 { "p" } else { "q" }, n))
        .collect();

    let batch = event(&records[..6], 100);
    aggregator.handle(batch.clone()).await.unwrap();
    assert_eq!(count_sum(&env, "p").await, (3.0, 6.0));
    assert_eq!(count_sum(&env, "q").await, (3.0, 9.0));
    let version = view_item(&env.dynamo, "p", W0).await["version"];

    // The same batch again: every record is at or below its origin's mark, nothing changes,
    // not even the version.
    let report = aggregator.process(&batch, 1).await.unwrap();
    assert_eq!((report.items_written, report.duplicates), (0, 6));
    assert_eq!(view_item(&env.dynamo, "p", W0).await["version"], version);
    // Its second half, as a bisection delivers it.
    aggregator.handle(event(&records[3..6], 103)).await.unwrap();
    // A range overlapping what was applied and going further.
    let report = aggregator
        .process(&event(&records[4..8], 104), 2)
        .await
        .unwrap();
    assert_eq!((report.duplicates, report.items_written), (2, 2));
    assert_eq!(count_sum(&env, "p").await, (4.0, 12.0));
    assert_eq!(count_sum(&env, "q").await, (4.0, 16.0));

    // The producer retried records 6 and 7: the same event ids at new sequence numbers,
    // next to a new event.
    let mut retried = records[6..8].to_vec();
    retried.push(stamped("p", 100));
    let report = aggregator.process(&event(&retried, 300), 3).await.unwrap();
    assert_eq!(report.duplicates, 2);
    assert_eq!(count_sum(&env, "p").await, (5.0, 112.0));
    assert_eq!(count_sum(&env, "q").await, (4.0, 16.0));

    // The applied marks are in the item, per shard.
    let got = env
        .dynamo
        .get_item()
        .table_name(TABLE)
        .key("agg_key", AttributeValue::S("p".into()))
        .key("window_start", AttributeValue::N(W0.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let applied = got.item().unwrap()["applied"].as_m().unwrap();
    let mark = applied["shardId-000000000000"].as_s().unwrap();
    assert_eq!(mark, &format!("{:0>64}:00000", 302));
    env.emulators.shutdown().await;
}

/// A view whose first save of a given item fails after it was written: the function died
/// between the write and its answer.
struct CrashAfterWrite {
    inner: DynamoViewStore,
    crash_on: String,
    crashed: std::sync::atomic::AtomicBool,
}

impl ViewStore for CrashAfterWrite {
    async fn load(&self, keys: &[ViewKey]) -> Result<HashMap<ViewKey, ViewRow>, AggregatorError> {
        self.inner.load(keys).await
    }

    async fn save(&self, row: &ViewRow) -> Result<Saved, AggregatorError> {
        let saved = self.inner.save(row).await?;
        if row.key.agg_key == self.crash_on
            && !self.crashed.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(AggregatorError::Task("crashed after the write".into()));
        }
        Ok(saved)
    }

    async fn publish_watermark(
        &self,
        shard: &str,
        time: i64,
        lateness: &std::collections::BTreeMap<String, i64>,
        now_ms: i64,
    ) -> Result<(), AggregatorError> {
        self.inner
            .publish_watermark(shard, time, lateness, now_ms)
            .await
    }
}

#[tokio::test]
async fn a_replay_after_a_crash_counts_once() {
    let env = Env::start("crash").await;
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    let mut records = blobs(&codec, "c", 0..4);
    records.extend(blobs(&codec, "d", 4..8));
    let batch = event(&records, 500);

    // The view write of `d` lands, then the function dies: `c` may or may not be written.
    let crashing = env.aggregator_with(
        CrashAfterWrite {
            inner: DynamoViewStore::new(env.dynamo.clone(), TABLE, CLAIMS),
            crash_on: "d".into(),
            crashed: false.into(),
        },
        env.claims(),
    );
    assert!(crashing.handle(batch.clone()).await.is_err());
    assert_eq!(count_sum(&env, "d").await, (4.0, 22.0));
    // Lambda delivers the batch again, to a fresh instance.
    let report = env.aggregator().process(&batch, 1).await.unwrap();
    assert_eq!(report.duplicates, 0);
    assert!(report.replayed >= 4, "{report:?}");
    assert_eq!(count_sum(&env, "c").await, (4.0, 6.0));
    assert_eq!(count_sum(&env, "d").await, (4.0, 22.0));

    // Every view write lands, then writing the marks fails: the batch fails and comes again.
    let next = event(&blobs(&codec, "c", 8..10), 600);
    let crashing = env.aggregator_with(
        DynamoViewStore::new(env.dynamo.clone(), TABLE, CLAIMS),
        // Its marks write fails: the function died after every view write.
        FailingMarks::new(env.claims(), 1),
    );
    assert!(crashing.handle(next.clone()).await.is_err());
    assert_eq!(count_sum(&env, "c").await, (6.0, 23.0));
    let report = env.aggregator().process(&next, 2).await.unwrap();
    assert_eq!((report.replayed, report.items_written), (2, 0));
    assert_eq!(count_sum(&env, "c").await, (6.0, 23.0));
    // And now the marks are written: the batch once more is all copies.
    let report = env.aggregator().process(&next, 3).await.unwrap();
    assert_eq!((report.duplicates, report.items_written), (2, 0));
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn marks_in_dynamodb() {
    let env = Env::start("marks").await;
    let store = env.claims();
    let pos = |n: u64, sub: u32| Position::new(&n.to_string(), sub).unwrap();
    assert_eq!(
        store.load("aggregator", "shardId-1").await.unwrap(),
        ShardMarks::default()
    );
    let marks = Marks::new(env.claims(), DAY);
    let mut gate = marks.open("aggregator", &["shardId-1"]).await.unwrap();
    // An origin id may be empty (records that name none); DynamoDB map keys may not.
    let big = "49590338271490256608559692538361571095921575989136588898";
    let tickets = [
        gate.admit("shardId-1", "", Position::new(big, 2).unwrap()),
        gate.admit("shardId-1", "producer-1/0", pos(7, 0)),
        gate.admit("shardId-1", "validator/shardId-0", pos(9, 1)),
    ];
    for t in tickets {
        gate.done(t.unwrap());
    }
    assert_eq!(
        marks
            .commit("aggregator", &mut gate, 1_000)
            .await
            .unwrap()
            .writes,
        1
    );
    let stored = store.load("aggregator", "shardId-1").await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.marks.len(), 3);
    assert_eq!(stored.marks[""].seq, Position::new(big, 2).unwrap());
    assert_eq!(stored.marks["producer-1/0"].seq, pos(7, 0));
    assert_eq!(stored.marks["validator/shardId-0"].at, 1_000);
    // Another stage and another shard are apart.
    assert_eq!(
        store.load("archiver", "shardId-1").await.unwrap().version,
        0
    );
    assert_eq!(
        store.load("aggregator", "shardId-2").await.unwrap().version,
        0
    );
    // A writer on a stale version loses, whether the item exists or not.
    assert!(
        !store
            .save("aggregator", "shardId-1", &stored, 2_000)
            .await
            .unwrap()
    );
    let mut next = stored.clone();
    next.version = 2;
    assert!(
        store
            .save("aggregator", "shardId-1", &next, 2_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save("aggregator", "shardId-1", &next, 2_000)
            .await
            .unwrap()
    );
    let fresh = ShardMarks {
        version: 1,
        ..ShardMarks::default()
    };
    assert!(
        !store
            .save("aggregator", "shardId-1", &fresh, 2_000)
            .await
            .unwrap()
    );
    // A copy below its mark is seen again after a reload.
    let mut gate = marks.open("aggregator", &["shardId-1"]).await.unwrap();
    assert_eq!(gate.admit("shardId-1", "producer-1/0", pos(7, 0)), None);
    assert!(gate.admit("shardId-1", "producer-1/0", pos(8, 0)).is_some());
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn late_events_leave_the_view_alone_and_the_watermark_is_published() {
    let env = Env::start("late").await;
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    let shard = "shardId-000000000000";
    // Re-published by the enricher from its shard 7, as the enricher flagged them.
    let from_enricher = |n: usize, late: bool, event_time: i64| {
        let mut e = order("w", 10f64.powi(n as i32), W0, n);
        e.event_time = event_time;
        e.stage_times.insert(
            "validator".into(),
            event_time + if n == 2 { -50 } else { 100 },
        );
        e.enrichment.as_mut().unwrap().late = late;
        e.origin = Some(riffle_codec::Origin {
            id: "enricher/shardId-000000000007".into(),
            seq: (1_000 + n).to_string(),
            sub: 0,
        });
        codec.encode(&e).unwrap()
    };
    let batch = event(
        &[
            from_enricher(0, false, W0 + 1_000),
            from_enricher(1, true, W0 + 2_000),
            // The validator's clock was behind the event time: that caps it.
            from_enricher(2, false, W0 + 9_000),
            from_enricher(3, false, W0 + 4_000),
        ],
        10,
    );
    let now = W0 + 600_000;
    let report = env.aggregator().process(&batch, now).await.unwrap();
    assert_eq!((report.late, report.watermark_writes), (1, 1));
    // The late event (metric 10) is not in the view.
    assert_eq!(count_sum(&env, "w").await, (3.0, 1_101.0));

    // Its origin's mark keeps the latest time it covers, in DynamoDB...
    let stored = env.claims().load("aggregator", shard).await.unwrap();
    let mark = stored.marks["enricher/shardId-000000000007"];
    assert_eq!(mark.time, Some(W0 + 8_950));
    // ... and the view's watermark item says how far this shard has come, with the view's
    // allowed lateness (the default: the test's registry has no contract).
    let item = env
        .dynamo
        .get_item()
        .table_name(CLAIMS)
        .key(
            "pk",
            AttributeValue::S(riffle_view::watermark::WATERMARK_KEY.into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let w = riffle_view::Watermarks::from_item(item.item().unwrap());
    assert_eq!(w.shards[shard].time, W0 + 8_950);
    assert_eq!(w.shards[shard].at, now);
    assert_eq!(w.lateness_of("w"), Some(120_000));
    assert_eq!(w.watermark(), Some(W0 + 8_950));
    assert!(!w.is_final("w", W0, 60));

    // Redelivered, the batch is all copies: nothing moves, and nothing is published again.
    let report = env.aggregator().process(&batch, now + 1).await.unwrap();
    assert_eq!((report.duplicates, report.watermark_writes), (4, 0));
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn a_traced_record_shows_the_dynamodb_calls_its_batch_made() {
    let env = Env::start("traced").await;
    let daemon: std::net::SocketAddr = env
        .emulators
        .env()
        .into_iter()
        .find(|(k, _)| k == riffle_trace::DAEMON_ADDRESS_ENV)
        .unwrap()
        .1
        .parse()
        .unwrap();
    let tracer = riffle_trace::Tracer::to_daemon("riffle-aggregator", daemon, 1.0).unwrap();
    let aggregator = env.aggregator().with_tracer(tracer.clone());
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    let mut traced = order("t", 1.0, W0, 0);
    // X-Ray takes traces of the last 30 days only: a root of now.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    traced.trace_header = Some(format!(
        "Root=1-{now:08x}-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    ));
    let untraced = order("t", 2.0, W0, 1);
    let batch = event(
        &[
            codec.encode(&traced).unwrap(),
            codec.encode(&untraced).unwrap(),
        ],
        10,
    );
    // Through the handler the function runtime calls, which records the batch's calls.
    let before = riffle_aws::meter::usage();
    KinesisHandler::handle(&aggregator, batch).await.unwrap();
    // Recording the calls leaves their metering as it was: the marks and items read, the
    // item and the marks written.
    let used = riffle_aws::meter::usage().since(&before);
    assert_eq!((used.dynamo_reads, used.dynamo_writes), (2, 2));
    tracer.force_flush();

    let store = env.emulators.trace_store().to_path_buf();
    let started = std::time::Instant::now();
    let path = loop {
        let segments = riffle_trace::store::read(&store).unwrap_or_default();
        if let Ok(path) = riffle_trace::store::path(&segments, &traced.event_id)
            && !path.hops.is_empty()
            && path.hops[0].calls.len() >= 2
        {
            break path;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no calls traced: {segments:?} in {} (exported {:?})",
            store.display(),
            tracer.export_stats().map(|s| (s.exported(), s.dropped()))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let calls: Vec<String> = path.hops[0]
        .calls
        .iter()
        .map(|c| format!("{} {}", c.service, c.operation))
        .collect();
    // The marks read, the items read and the item written, in that order.
    assert_eq!(
        calls,
        [
            "DynamoDB GetItem",
            "DynamoDB BatchGetItem",
            "DynamoDB PutItem"
        ],
        "{path:?}"
    );
    assert!(path.hops[0].calls.iter().all(|c| !c.failed));
    // The untraced record has no spans at all.
    let segments = riffle_trace::store::read(&store).unwrap();
    assert!(riffle_trace::store::path(&segments, &untraced.event_id).is_err());
    env.emulators.shutdown().await;
}
