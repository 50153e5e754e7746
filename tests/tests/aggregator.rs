//! The aggregator against moto's DynamoDB and SQS, through the real AWS SDK: batches add up
//! in the view (count, sum, min, max), racing batches on the same items lose nothing, and
//! records that can never be aggregated land on the dead-letter queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};
use riffle_aggregator::{Aggregator, DynamoViewStore, window_lengths};
use riffle_aws::SqsSender;
use riffle_codec::{Enrichment, Envelope, EnvelopeCodec, SchemaCache};
use riffle_local::Emulators;
use riffle_runtime::{KinesisEvent, KinesisHandler};
use riffle_stage::SqsRejects;
use riffle_stage::testing::MapSource;
use riffle_tests::test_support::{create_queue, create_table, drain, enriched_event, state_dir};

const DEADLINE: Duration = Duration::from_secs(30);
const TABLE: &str = "riffle-view";
const ENVELOPE_ID: u32 = 7;
/// The envelope is the only schema the aggregator needs, and it is built in: the registry
/// knows nothing.
fn no_registry() -> MapSource {
    MapSource::default()
}

fn order(agg_key: &str, metric: f64, window_start: i64, n: usize) -> Envelope {
    Envelope {
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

type TestAggregator = Aggregator<MapSource, DynamoViewStore, SqsRejects>;

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
        let queue_url = create_queue(&sqs, "riffle-aggregator-dlq").await;
        Env {
            emulators,
            dynamo,
            sqs,
            queue_url,
        }
    }

    fn aggregator(&self) -> TestAggregator {
        Aggregator::new(
            EnvelopeCodec::new(ENVELOPE_ID).unwrap(),
            SchemaCache::new(no_registry()),
            DynamoViewStore::new(self.dynamo.clone(), TABLE),
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
    // Eight batches (as from eight shards) all hitting the same three items at once.
    let batches: Vec<KinesisEvent> = (0..8)
        .map(|b| {
            let blobs: Vec<Vec<u8>> = (0..30)
                .map(|i| {
                    let key = ["x", "y", "z"][i % 3];
                    let metric = (b * 30 + i) as f64;
                    codec.encode(&order(key, metric, W0, b * 30 + i)).unwrap()
                })
                .collect();
            event(&blobs, (b as u64) * 1000)
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
