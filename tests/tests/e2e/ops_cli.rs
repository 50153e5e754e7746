//! The operator commands against the local emulators, through the real AWS SDK:
//! - `riffle archive compact` on moto's S3: every row survives unchanged, a re-run does
//!   nothing, and a crash between writing the merged object and deleting its inputs leaves
//!   readers seeing each row once and the next run cleaning up;
//! - `riffle dlq` on queues and streams provisioned from the templates: an on-failure message
//!   built as the local runtime builds it is listed, shown and redriven onto the stage's
//!   input stream, then deleted; a metadata-only message stays;
//! - `riffle replay`: a small pipeline run (2,000 events), then the view rebuilt from the
//!   archive into a fresh table equals the live view item for item.
//!
//! The last test needs the service binaries (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_archive::compact::{self, CompactOptions};
use riffle_archive::key::{Partition, object_key};
use riffle_archive::scan::{self, Filter};
use riffle_archive::{ArchiveBucket, ArchivedRow, ObjectStore, S3ObjectStore, write_rows};
use riffle_cli::dlq::{self, DeadLetter};
use riffle_cli::replay::{self, ReplayOptions};
use riffle_codec::{Envelope, EnvelopeCodec};
use riffle_harness::pipeline::{Pipeline, PipelineOptions};
use riffle_local::Emulators;
use riffle_runtime::Source;
use riffle_runtime::destination::{Condition, FailureContext, failure_message};
use riffle_runtime::event::Pending;
use riffle_stage::RejectMessage;
use riffle_stage::dedup::redriven_elsewhere;
use riffle_stage::reject::RejectBatch;
use riffle_tests::test_support::state_dir;
use riffle_view::ViewRow;
use riffle_view::parse_item;

const BUCKET: &str = "riffle-archive-ops";
const DEADLINE: Duration = Duration::from_secs(30);
/// 2025-11-24T16:00:00Z.
const H16: i64 = 1_764_000_000_000;
const H17: i64 = H16 + 3_600_000;

fn row(id: &str, event_time: i64, shard: &str, seq: &str, metric: f64) -> ArchivedRow {
    ArchivedRow {
        event_id: id.into(),
        source: "shop-web".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: 3,
        event_time,
        ingest_time: event_time + 5,
        validated_at: Some(event_time + 10),
        enriched_at: None,
        archived_at: event_time + 20,
        trace_header: Some(format!("Root=1-5759e988-{id}")),
        agg_key: "orders:category=books".into(),
        metric,
        window_start: event_time - event_time.rem_euclid(60_000),
        reference_found: true,
        attributes_json: r#"{"category":"books"}"#.into(),
        payload_json: format!(r#"{{"id":"{id}"}}"#),
        payload: id.as_bytes().to_vec(),
        kinesis_partition_key: format!("pk-{id}"),
        kinesis_sequence_number: seq.into(),
        kinesis_shard_id: shard.into(),
        late: false,
    }
}

/// Writes `rows` (one shard) as the archiver would name them; returns (key, bytes).
async fn archive(store: &S3ObjectStore, rows: &[ArchivedRow]) -> (String, Vec<u8>) {
    let first = &rows[0];
    let partition = Partition::of(&first.subject, first.event_time).unwrap();
    let key = object_key(
        "events",
        &partition,
        &first.kinesis_shard_id,
        &first.kinesis_sequence_number,
        &rows.last().unwrap().kinesis_sequence_number,
    );
    let body = write_rows(rows).unwrap();
    store.put(&key, body.clone()).await.unwrap();
    (key, body)
}

/// Every row a reader sees, per partition folder, sorted by event id.
async fn rows_seen(store: &S3ObjectStore) -> BTreeMap<String, Vec<ArchivedRow>> {
    let mut out = BTreeMap::new();
    for p in scan::partitions(store, "events", &Filter::default())
        .await
        .unwrap()
    {
        let mut rows = scan::read_live_rows(store, &p).await.unwrap();
        rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        out.insert(p.partition.dir.clone(), rows);
    }
    out
}

async fn keys(store: &S3ObjectStore) -> Vec<String> {
    store
        .list("events/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn compaction_keeps_every_row_and_survives_a_crash() {
    let emulators = Emulators::start(&state_dir("ops-compact")).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let s3 = riffle_aws::s3_client(&sdk);
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let store = S3ObjectStore::new(s3, BUCKET);

    // Hour 16: three small objects from two shards (two rows share a sequence number, as
    // the user records of one aggregate do); hour 17: one object, nothing to merge.
    let s0 = "shardId-000000000000";
    let s1 = "shardId-000000000001";
    let mut inputs = vec![
        archive(
            &store,
            &[
                row("a", H16 + 1, s0, "100", 1.5),
                row("b", H16 + 2, s0, "101", 2.0),
                row("c", H16 + 3, s0, "101", -3.25),
            ],
        )
        .await,
        archive(
            &store,
            &[
                row("d", H16 + 4, s1, "7", 4.0),
                row("e", H16 + 5, s1, "9", 5.0),
            ],
        )
        .await,
        archive(&store, &[row("f", H16 + 6, s0, "99", 6.0)]).await,
    ];
    inputs.sort();
    let (single, _) = archive(&store, &[row("g", H17 + 1, s0, "200", 7.0)]).await;
    let before = rows_seen(&store).await;
    let before_keys = keys(&store).await;
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 7);

    // Dry run: the plan, and nothing touched.
    let dry = compact::run(
        &store,
        &CompactOptions {
            dry_run: true,
            ..CompactOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(dry.partitions, 2);
    assert_eq!(dry.plans.len(), 1);
    assert_eq!(dry.plans[0].merges[0].inputs.len(), 3);
    assert_eq!(keys(&store).await, before_keys);

    let mut lines = Vec::new();
    let done = compact::run(&store, &CompactOptions::default(), |l| {
        lines.push(l.to_owned())
    })
    .await
    .unwrap();
    assert_eq!((done.written, done.rows, done.deleted), (1, 6, 3));
    assert!(!lines.is_empty(), "progress is reported");
    let merged = dry.plans[0].merges[0].output.clone();
    assert_eq!(keys(&store).await, vec![merged.clone(), single.clone()]);
    // Every row, every column, unchanged.
    assert_eq!(rows_seen(&store).await, before);
    // In (shard, sequence) order; rows of one sequence number in their written order.
    let in_object = riffle_archive::read_rows(&store.get(&merged).await.unwrap()).unwrap();
    let order: Vec<&str> = in_object.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(order, vec!["f", "a", "b", "c", "d", "e"]);
    let names: BTreeSet<String> = scan::replaces(&store, &merged)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let input_names: BTreeSet<String> = inputs
        .iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(names, input_names);

    // Idempotent: a second run finds nothing to do.
    let again = compact::run(&store, &CompactOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((again.written, again.deleted), (0, 0));
    assert_eq!(keys(&store).await, vec![merged.clone(), single.clone()]);

    // A crash after the merged object was written but before the inputs were deleted:
    // readers still see each row once, and the next run only deletes the leftovers.
    for (key, body) in &inputs {
        store.put(key, body.clone()).await.unwrap();
    }
    assert_eq!(keys(&store).await.len(), 5);
    assert_eq!(rows_seen(&store).await, before);
    let recovered = compact::run(&store, &CompactOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((recovered.written, recovered.deleted), (0, 3));
    assert_eq!(keys(&store).await, vec![merged.clone(), single.clone()]);
    assert_eq!(rows_seen(&store).await, before);

    // A late object joins the compacted one on the next run; filters narrow the run.
    archive(&store, &[row("h", H16 + 7, s1, "10", 8.0)]).await;
    let other_hour = compact::run(
        &store,
        &CompactOptions {
            filter: Filter {
                hour: Some("17".into()),
                ..Filter::default()
            },
            ..CompactOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((other_hour.partitions, other_hour.written), (1, 0));
    let late = compact::run(&store, &CompactOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((late.written, late.rows, late.deleted), (1, 7, 2));
    let after = rows_seen(&store).await;
    assert_eq!(after.values().map(Vec::len).sum::<usize>(), 8);
    assert_eq!(keys(&store).await.len(), 2);
    emulators.shutdown().await;
}

fn envelope(i: usize) -> Envelope {
    Envelope {
        origin: None,
        event_id: format!("ev-dlq-{i}"),
        source: "shop-web".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: 3,
        event_time: H16 + i as i64,
        ingest_time: H16 + i as i64 + 1,
        stage_times: HashMap::new(),
        trace_header: None,
        payload: vec![1, 2, 3],
        enrichment: None,
    }
}

/// Every (partition key, data) on `stream`, polling until `want` arrived or the deadline.
async fn stream_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    want: usize,
) -> Vec<(String, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut iterators = Vec::new();
    for shard in shards.shards() {
        let it = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        iterators.push(it.shard_iterator.unwrap());
    }
    let mut out = Vec::new();
    loop {
        for it in &mut iterators {
            let got = kinesis
                .get_records()
                .shard_iterator(it.clone())
                .send()
                .await
                .unwrap();
            out.extend(
                got.records()
                    .iter()
                    .map(|r| (r.partition_key().to_owned(), r.data().as_ref().to_vec())),
            );
            if let Some(next) = got.next_shard_iterator {
                *it = next;
            }
        }
        if out.len() >= want || tokio::time::Instant::now() >= deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_redriven() {
    let emulators = Emulators::start(&state_dir("ops-dlq")).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let infra = riffle_local::project_root().unwrap().join("infra");
    let deployment = riffle_local::provision(&sdk, &infra).await.unwrap();
    let topology = dlq::topology(&riffle_local::plan(&infra, riffle_local::LOCAL_ENV).unwrap());
    let sqs = riffle_aws::sqs_client(&sdk);
    let kinesis = riffle_aws::kinesis_client(&sdk);

    // Three records on the enricher's input stream (one shard) that its mapping gave up on,
    // reported as Lambda does: positions only.
    let stream_arn = deployment.stream_arn("ValidatedStream").unwrap().to_owned();
    let codec = EnvelopeCodec::new(7).unwrap();
    let expected: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("pk-{i}"), codec.encode(&envelope(i)).unwrap()))
        .collect();
    let mut pending: Vec<Pending> = Vec::new();
    for (key, data) in &expected {
        let put = kinesis
            .put_record()
            .stream_name("riffle-local-validated")
            .partition_key(key)
            .explicit_hash_key("0")
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        let source = std::sync::Arc::new(Source {
            aws_region: "us-east-1".into(),
            event_source_arn: stream_arn.clone(),
            invoke_identity_arn: "arn:aws:iam::123456789012:role/riffle-enricher".into(),
            shard_id: put.shard_id().to_owned(),
        });
        pending.push(Pending::new(source.event_record(
            data.clone(),
            key,
            put.sequence_number(),
            chrono::Utc::now(),
        )));
    }
    let shard = pending[0].record.source.shard_id.clone();
    let ctx = FailureContext {
        function_arn: "arn:aws:lambda:us-east-1:123456789012:function:riffle-enricher",
        stream_arn: &stream_arn,
        shard_id: &shard,
        condition: Condition::RetryAttemptsExhausted,
        invoke_count: 4,
        now: chrono::Utc::now(),
    };
    let readable = failure_message(&ctx, &pending);
    // The same shape naming records the stream no longer holds (past its retention).
    let mut aged_out = readable.clone();
    aged_out.kinesis_batch_info.start_sequence_number = "1".into();
    aged_out.kinesis_batch_info.end_sequence_number = "2".into();
    aged_out.kinesis_batch_info.batch_size = 2;
    let queue = deployment.queue_url("EnricherDlq").unwrap().to_owned();
    for body in [readable.to_body(), aged_out.to_body()] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    // list: every queue of the templates, with its writer and depth.
    let depths = dlq::list(&sqs, &topology).await.unwrap();
    let names: Vec<&str> = depths.iter().map(|d| d.queue.name.as_str()).collect();
    for name in [
        "riffle-local-rejects",
        "riffle-local-validator-dlq",
        "riffle-local-enricher-dlq",
        "riffle-local-aggregator-dlq",
        "riffle-local-archiver-dlq",
    ] {
        assert!(names.contains(&name), "{name} listed in {names:?}");
    }
    let enricher = depths
        .iter()
        .find(|d| d.queue.name == "riffle-local-enricher-dlq")
        .unwrap();
    assert_eq!(enricher.queue.stages, vec!["enricher"]);
    assert_eq!(enricher.visible, 2);
    assert!(enricher.error.is_none());
    assert!(dlq::render_list(&depths).contains("riffle-local-enricher-dlq"));

    // show: both messages, readable, and left on the queue.
    let url = dlq::resolve_queue(&sqs, &topology, "EnricherDlq")
        .await
        .unwrap();
    let shown = dlq::show(&sqs, &url, 10).await.unwrap();
    assert_eq!(shown.len(), 2);
    let mut text = String::new();
    for m in &shown {
        let read = dlq::read_ranges(&kinesis, &dlq::stream_ranges(&m.message, &topology)).await;
        text.push_str(&dlq::render_message(m, &read));
    }
    for needle in [
        "RetryAttemptsExhausted",
        "riffle-local-validated",
        "shardId-000000000000",
        "event ev-dlq-0 subject com.riffle.shop.OrderPlaced source shop-web",
        "event ev-dlq-2",
        "records not readable from the stream: records 1..2",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    assert!(
        shown
            .iter()
            .all(|m| matches!(m.message, DeadLetter::Failure(_)))
    );
    let again = dlq::list(&sqs, &topology).await.unwrap();
    let visible = again
        .iter()
        .find(|d| d.queue.name == "riffle-local-enricher-dlq")
        .unwrap()
        .visible;
    assert_eq!(visible, 2, "show must not consume");

    // Dry run: the plan, nothing put, nothing deleted.
    let dry = dlq::redrive(&sdk, &topology, &url, 10, true, |_| {})
        .await
        .unwrap();
    assert_eq!((dry.messages, dry.redriven, dry.skipped.len()), (2, 1, 1));
    assert_eq!(dry.records["riffle-local-validated"], 3);
    assert_eq!(
        stream_records(&kinesis, "riffle-local-validated", 3).await,
        expected,
        "nothing put"
    );

    let done = dlq::redrive(&sdk, &topology, &url, 10, false, |_| {})
        .await
        .unwrap();
    assert_eq!((done.redriven, done.skipped.len()), (1, 1));
    assert!(
        done.skipped[0]
            .1
            .contains("records 1..2 of riffle-local-validated")
            && done.skipped[0].1.contains("no longer on the stream"),
        "{:?}",
        done.skipped
    );
    // The same events under the same keys, each with a new origin addressed to the enricher.
    let mut put = redriven(
        &codec,
        stream_records(&kinesis, "riffle-local-validated", 6).await,
    );
    put.retain(|(_, e)| e.origin.is_some());
    put.sort_by(|a, b| a.0.cmp(&b.0));
    let expected_events: Vec<(String, String)> = (0..3)
        .map(|i| (format!("pk-{i}"), envelope(i).event_id))
        .collect();
    assert_eq!(
        put.iter()
            .map(|(k, e)| (k.clone(), e.event_id.clone()))
            .collect::<Vec<_>>(),
        expected_events
    );
    for (_, e) in &put {
        let origin = e.origin.as_ref().unwrap();
        assert!(origin.id.starts_with("redrive:enricher/"), "{origin:?}");
        assert!(redriven_elsewhere(e, "validator") && !redriven_elsewhere(e, "enricher"));
    }
    // The redriven message is gone; the one that could not be redriven stays.
    let left = dlq::show(&sqs, &url, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    let DeadLetter::Failure(f) = &left[0].message else {
        panic!("expected the failure whose records aged out");
    };
    assert_eq!(f.kinesis_batch_info.start_sequence_number, "1");

    // Records the aggregator parked go back on `enriched` addressed to the aggregator: the
    // archiver, which reads the same stream and archived them already, leaves them alone.
    let parked: Vec<RejectMessage> = [10, 11]
        .iter()
        .map(|i| {
            let mut record = riffle_stage::KinesisEventRecord::default();
            record.kinesis.data = codec.encode(&envelope(*i)).unwrap();
            record.kinesis.partition_key = format!("pk-{i}");
            record.kinesis.sequence_number = i.to_string();
            RejectMessage::new("aggregator", &record, "non_finite_metric", "NaN".into())
                .with_envelope(&envelope(*i))
        })
        .collect();
    let aggregator_queue = deployment.queue_url("AggregatorDlq").unwrap().to_owned();
    sqs.send_message()
        .queue_url(&aggregator_queue)
        .message_body(
            serde_json::to_string(&RejectBatch {
                rejects: parked.clone(),
            })
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let url = dlq::resolve_queue(&sqs, &topology, "riffle-local-aggregator-dlq")
        .await
        .unwrap();
    let text: String = dlq::show(&sqs, &url, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| dlq::render_message(m, &Ok(Vec::new())))
        .collect();
    assert!(text.contains("non_finite_metric by aggregator"), "{text}");
    let done = dlq::redrive(&sdk, &topology, &url, 10, false, |_| {})
        .await
        .unwrap();
    assert_eq!(done.redriven, 1);
    assert_eq!(done.records["riffle-local-enriched"], 2);
    let put = redriven(
        &codec,
        stream_records(&kinesis, "riffle-local-enriched", 2).await,
    );
    let mut ids: Vec<String> = put.iter().map(|(_, e)| e.event_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["ev-dlq-10".to_owned(), "ev-dlq-11".to_owned()]);
    for (_, e) in &put {
        assert!(redriven_elsewhere(e, "archiver") && !redriven_elsewhere(e, "aggregator"));
    }
    // Two records of one message: two distinct origins, so no mark holds either back.
    assert_ne!(put[0].1.origin, put[1].1.origin);
    assert!(dlq::show(&sqs, &url, 10).await.unwrap().is_empty());
    emulators.shutdown().await;
}

/// The envelopes of redriven records, with their partition keys.
fn redriven(codec: &EnvelopeCodec, records: Vec<(String, Vec<u8>)>) -> Vec<(String, Envelope)> {
    records
        .into_iter()
        .map(|(key, data)| (key, codec.decode(&data).unwrap()))
        .collect()
}

/// The aggregate attributes of a view item: (window_secs, count, sum, min, max, expires_at).
/// `updated_at`, `version` and the per-shard marks are bookkeeping and left out.
fn aggregate_of(row: &ViewRow) -> (u32, i64, f64, f64, f64, i64) {
    let a = row.aggregate;
    (
        row.window_secs,
        a.count,
        a.sum,
        a.min,
        a.max,
        row.expires_at,
    )
}

fn view(items: &[HashMap<String, AttributeValue>]) -> BTreeMap<(String, i64), ViewRow> {
    items
        .iter()
        .map(|i| {
            let row = parse_item(i).unwrap();
            ((row.key.agg_key.clone(), row.key.window_start), row)
        })
        .collect()
}

async fn scan_table(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = dynamo
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_the_live_view() {
    const EVENTS: usize = 2_000;
    let mut options = PipelineOptions::for_checkout("ops-replay").unwrap();
    options.state_dir = options
        .state_dir
        .join(format!("run-{}", std::process::id()));
    let infra = options.infra_dir.clone();
    let mut pipeline = Pipeline::start(options, |_| {}).await.unwrap();

    let mut generator = riffle_loadtest::Generator::new(
        riffle_loadtest::GeneratorConfig {
            seed: 11,
            ..riffle_loadtest::GeneratorConfig::default()
        },
        pipeline.schema_ids(),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<_> = (0..EVENTS).map(|_| generator.next(now).unwrap()).collect();
    let failed = pipeline.produce(&events).await.unwrap();
    assert!(failed.is_empty());
    pipeline
        .wait_drained(EVENTS as u64, Duration::from_secs(90), |_| {})
        .await
        .unwrap();

    let bucket = pipeline
        .deployment()
        .bucket_name("ArchiveBucket")
        .unwrap()
        .to_owned();
    let table = "riffle-view-replayed";
    let mut progress = Vec::new();
    let report = replay::run(
        pipeline.sdk(),
        &ReplayOptions {
            bucket,
            prefix: "events".into(),
            table: table.into(),
            create: true,
            ttl_days: 30,
            infra_dir: infra,
            // Window lengths from the contracts registered with the schemas, as the
            // aggregator takes them.
            registry: Some(pipeline.registry().unwrap().clone()),
        },
        |l| progress.push(l.to_owned()),
    )
    .await
    .unwrap();
    assert!(progress.len() > report.partitions, "a line per partition");

    let live = view(&pipeline.view_items().await.unwrap());
    let dynamo = riffle_aws::dynamodb_client(pipeline.sdk());
    let replayed = view(&scan_table(&dynamo, table).await);
    // Filling a table that is not empty is refused.
    let refused = replay::run(
        pipeline.sdk(),
        &ReplayOptions {
            bucket: String::new(),
            prefix: "events".into(),
            table: table.into(),
            create: false,
            ttl_days: 30,
            infra_dir: std::path::PathBuf::new(),
            registry: None,
        },
        |_| {},
    )
    .await;
    pipeline.shutdown().await;

    assert!(refused.unwrap_err().to_string().contains("not empty"));
    assert_eq!(report.items, live.len());
    assert_eq!(report.duplicates, 0);
    let counted: i64 = live.values().map(|r| r.aggregate.count).sum();
    assert_eq!(
        report.rows as i64, counted,
        "every archived row is in the view"
    );
    assert!(counted > (EVENTS as i64) * 9 / 10, "most events are valid");
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        replayed.keys().collect::<Vec<_>>()
    );
    for (key, want) in &live {
        let got = &replayed[key];
        let (w, g) = (aggregate_of(want), aggregate_of(got));
        // Sums are added in another grouping than the live batches used, so the last bits of
        // a float may differ; everything else is exact.
        assert!(
            (w.2 - g.2).abs() <= 1e-9 * w.2.abs().max(1.0),
            "{key:?} sum {} vs {}",
            w.2,
            g.2
        );
        assert_eq!(
            (w.0, w.1, w.3, w.4, w.5),
            (g.0, g.1, g.3, g.4, g.5),
            "{key:?}"
        );
    }
}

/// `riffle_aws::dynamo_batch` against the local DynamoDB: writes and reads past one call's
/// limit are cut into calls, every item lands, missing keys are simply absent.
#[tokio::test]
async fn dynamo_batches_cross_the_call_limits() {
    use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};
    use riffle_aws::dynamo_batch::{self, Read};
    use riffle_aws::limits::{DYNAMODB_BATCH_GET_MAX_KEYS, DYNAMODB_BATCH_WRITE_MAX_ITEMS};

    let emulators = Emulators::start(&state_dir("ops-dynamo-batch"))
        .await
        .unwrap();
    let dynamo = riffle_aws::dynamodb_client(&emulators.sdk_config().await);
    riffle_tests::test_support::create_table(
        &dynamo,
        "batch-test",
        &[("pk", ScalarAttributeType::S, KeyType::Hash)],
    )
    .await;
    let key = |i: usize| HashMap::from([("pk".to_owned(), AttributeValue::S(format!("k{i}")))]);
    let written = 3 * DYNAMODB_BATCH_WRITE_MAX_ITEMS + 7;
    let requests = (0..written)
        .map(|i| {
            let mut item = key(i);
            item.insert("n".into(), AttributeValue::N(i.to_string()));
            dynamo_batch::put(item).unwrap()
        })
        .collect();
    dynamo_batch::batch_write(&dynamo, "batch-test", requests)
        .await
        .unwrap();
    // More keys than one BatchGetItem takes, a third of them never written.
    let asked = DYNAMODB_BATCH_GET_MAX_KEYS + written / 2;
    let keys = (written / 2..written / 2 + asked).map(key).collect();
    let found = dynamo_batch::batch_get(&dynamo, "batch-test", keys, Read::Consistent)
        .await
        .unwrap();
    let mut numbers: Vec<usize> = found
        .iter()
        .map(|item| item["n"].as_n().unwrap().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (written / 2..written).collect::<Vec<_>>());
    emulators.shutdown().await;
}
