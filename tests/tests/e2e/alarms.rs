//! Every alarm in the templates driven to fire on the local twin, each by the fault it is
//! there for, and read back through `riffle alarms` (the same definitions, evaluated against
//! the metrics the local processes printed and the queues' depths):
//! - stages failing batches, throttled invocations, throttled Kinesis writes (the producer's
//!   and the stages'), rejects: fault injection in every stage while events flow;
//! - ingest-to-view p99: a slow aggregator;
//! - dead-letter queues: a validator whose every invocation fails, and undecodable records
//!   on the validated and enriched streams;
//! - the registry: its table gone, so its lookups answer 5xx;
//! - the view query API: the view table gone, so its queries answer 503.
//!
//! The drill runs `riffle alarms --period 2`: each alarm's datapoints and thresholds as the
//! template says, two-second periods instead of minutes (eight for the ingest-to-view p99,
//! which a slowed aggregator feeds only once per batch). Alarms without a local drill are
//! named below with why, so a new alarm without one fails this test.
//!
//! Needs the service binaries (`cargo build --workspace --bins`) and the emulators.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use riffle_harness::pipeline::{Pipeline, PipelineOptions, bin_dir};
use riffle_loadtest::{Generator, GeneratorConfig};
use riffle_tests::test_support::state_dir;

/// The drill's period (seconds).
const PERIOD: &str = "2";
/// Per phase: the machine running the drill may run other suites beside it (2 cores in CI).
const DEADLINE: Duration = Duration::from_secs(180);
/// The period alarms fed once per slow batch are drilled over (seconds): a slowed
/// aggregator answers a batch per shard every 4-5 s, so most two-second periods hold no
/// datapoint and 3 breaching of 5 would be down to where batches happen to end.
const SLOW_PERIOD: &str = "8";
/// Alarms drilled over [`SLOW_PERIOD`].
const SLOW_FED: [&str; 1] = ["riffle-local-aggregator-ingest-to-view-p99"];

/// Alarms this drill cannot fire, and why.
const NOT_DRILLED: [(&str, &str); 8] = [
    // A minute behind for five minutes: the evaluation is unit-tested on recorded series
    // (riffle-alarms); here their datapoints are checked to arrive.
    (
        "riffle-local-validator-iterator-age",
        "needs a minute of lag",
    ),
    (
        "riffle-local-enricher-iterator-age",
        "needs a minute of lag",
    ),
    (
        "riffle-local-aggregator-iterator-age",
        "needs a minute of lag",
    ),
    (
        "riffle-local-archiver-iterator-age",
        "needs a minute of lag",
    ),
    // The local DynamoDB never throttles: no local source (riffle alarms says so).
    ("riffle-local-view-throttled", "no local source"),
    ("riffle-local-reference-throttled", "no local source"),
    ("riffle-local-claims-throttled", "no local source"),
    ("riffle-local-schemas-throttled", "no local source"),
];
/// Also without a local source: the registry and the query API run as server processes, not
/// under the local Lambda runtime, so nothing throttles their invocations; the autoscaler
/// does not run on the twin (its decisions run inside `riffle-dev load --autoscale`).
const NO_LOCAL_SOURCE: [&str; 3] = [
    "riffle-local-schema-registry-throttles",
    "riffle-local-view-query-throttles",
    "riffle-local-autoscaler-errors",
];

#[derive(Debug, serde::Deserialize)]
struct Row {
    name: String,
    state: String,
    local_source: bool,
    datapoints: Vec<Option<f64>>,
}

/// `riffle alarms --json --period 2` against the twin.
async fn alarms(pipeline: &Pipeline) -> Vec<Row> {
    alarms_over(pipeline, PERIOD).await
}

/// `riffle alarms --json --period <period>` against the twin.
async fn alarms_over(pipeline: &Pipeline, period: &str) -> Vec<Row> {
    let output = tokio::process::Command::new(bin_dir().join("riffle"))
        .args(["alarms", "--json", "--period", period])
        .env(
            riffle_telemetry::METRICS_STORE_ENV,
            pipeline.metrics_store(),
        )
        .envs(pipeline.env())
        .output()
        .await
        .expect("riffle alarms runs");
    assert!(
        output.status.success(),
        "riffle alarms failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("riffle alarms --json")
}

/// Polls `riffle alarms` until each of `expected` has been in ALARM at least once (an
/// alarm in a drill may clear again when its fault's datapoints age out of the window).
async fn until_fired(pipeline: &Pipeline, expected: &[&str], fired: &mut BTreeSet<String>) {
    let started = Instant::now();
    let slow_fed = expected.iter().any(|a| SLOW_FED.contains(a));
    loop {
        for row in alarms(pipeline).await {
            if row.state == "ALARM" && !SLOW_FED.contains(&row.name.as_str()) {
                fired.insert(row.name);
            }
        }
        if slow_fed {
            for row in alarms_over(pipeline, SLOW_PERIOD).await {
                if row.state == "ALARM" && SLOW_FED.contains(&row.name.as_str()) {
                    fired.insert(row.name);
                }
            }
        }
        let missing: Vec<_> = expected.iter().filter(|a| !fired.contains(**a)).collect();
        if missing.is_empty() {
            println!("in ALARM after {:.1?}: {expected:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "never in ALARM: {missing:?}; fired: {fired:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Produces rounds of events (a Kinesis throttling 30 % of the producer's entries) until
/// each of `expected` has been in ALARM.
async fn produce_until_fired(
    pipeline: &Pipeline,
    expected: &[&str],
    fired: &mut BTreeSet<String>,
    seed: u64,
) {
    let producing = async {
        for round in seed.. {
            let batch = events(pipeline, round, 400);
            pipeline
                .produce_throttled(&batch, 0.3, round)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        () = producing => {}
        () = until_fired(pipeline, expected, fired) => {}
    }
}

fn events(pipeline: &Pipeline, seed: u64, n: usize) -> Vec<riffle_loadtest::GeneratedEvent> {
    let config = GeneratorConfig {
        seed,
        invalid_ratio: 0.3,
        ..GeneratorConfig::default()
    };
    Generator::new(config, pipeline.schema_ids())
        .unwrap()
        .batch(n)
        .unwrap()
}

/// Puts `n` records no stage can decode on stream `logical`.
async fn put_garbage(pipeline: &Pipeline, logical: &str, n: usize) {
    let kinesis = riffle_aws::kinesis_client(pipeline.sdk());
    let stream = pipeline.deployment().stream_name(logical).unwrap();
    for i in 0..n {
        kinesis
            .put_record()
            .stream_name(stream)
            .partition_key(format!("garbage-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(vec![0xff; 16]))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alarm_fires_from_its_fault() {
    let mut options = PipelineOptions::for_checkout("alarms").expect("project root");
    options.state_dir = state_dir("alarms");
    let faults = [
        ("RIFFLE_FAULT_HANDLER_ERROR_RATE", "0.25"),
        ("RIFFLE_FAULT_INVOKE_THROTTLE_RATE", "0.3"),
        ("RIFFLE_FAULT_THROTTLE_RATE", "0.2"),
    ];
    let env = faults
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut pipeline = Pipeline::start_with_env(options, env, |_| {})
        .await
        .expect("pipeline starts");
    let mut fired = BTreeSet::new();

    // Before anything flows, nothing is in ALARM, and every alarm is listed.
    let before = alarms(&pipeline).await;
    assert_eq!(before.len(), 32, "{before:?}");
    assert!(before.iter().all(|r| r.state != "ALARM"), "{before:?}");
    let no_source: BTreeSet<&str> = before
        .iter()
        .filter(|r| !r.local_source)
        .map(|r| r.name.as_str())
        .collect();
    let expected_no_source: BTreeSet<&str> = NOT_DRILLED[4..]
        .iter()
        .map(|(n, _)| *n)
        .chain(NO_LOCAL_SOURCE)
        .collect();
    assert_eq!(no_source, expected_no_source);

    // A validator whose every invocation fails: after its retries, the batch goes to its
    // dead-letter queue (Lambda's on-failure destination). First, while nothing waits on
    // its stream (a backlog would be bisected record by record before it got there).
    pipeline.kill_stage("validator").await.unwrap();
    pipeline
        .restart_stage_with(
            "validator",
            vec![("RIFFLE_FAULT_HANDLER_ERROR_RATE".into(), "1".into())],
        )
        .await
        .unwrap();
    pipeline.produce(&events(&pipeline, 99, 5)).await.unwrap();
    until_fired(&pipeline, &["riffle-local-validator-dlq-depth"], &mut fired).await;
    pipeline.kill_stage("validator").await.unwrap();
    pipeline.restart_stage("validator").await.unwrap();

    // A slow aggregator: every batch waits 3.5 s, so ingest to view is over the 3 s p99.
    pipeline.kill_stage("aggregator").await.unwrap();
    pipeline
        .restart_stage_with(
            "aggregator",
            vec![("RIFFLE_FAULT_HANDLER_DELAY_MS".into(), "3500".into())],
        )
        .await
        .unwrap();

    // Events flow through faulty stages: batches fail, invocations and writes are throttled,
    // 30 % of the events are rejected (the threshold is 100 per period).
    let flowing = [
        "riffle-local-validator-errors",
        "riffle-local-enricher-errors",
        "riffle-local-validator-throttles",
        "riffle-local-enricher-throttles",
        "riffle-local-raw-write-throttled",
        "riffle-local-validated-write-throttled",
        "riffle-local-enriched-write-throttled",
        "riffle-local-validator-rejects",
        "riffle-local-aggregator-ingest-to-view-p99",
    ];
    produce_until_fired(&pipeline, &flowing, &mut fired, 0).await;

    // The aggregator and archiver batch for up to 1 and 5 s (and the aggregator waits its
    // 3.5 s more), too few invocations to fail in 3 of 5 two-second periods at the stages'
    // rates: now every invocation fails (retried, bisected, then sent to the DLQ) and most
    // are throttled first.
    for stage in ["aggregator", "archiver"] {
        pipeline.kill_stage(stage).await.unwrap();
        pipeline
            .restart_stage_with(
                stage,
                vec![
                    ("RIFFLE_FAULT_HANDLER_ERROR_RATE".into(), "1".into()),
                    ("RIFFLE_FAULT_INVOKE_THROTTLE_RATE".into(), "0.6".into()),
                ],
            )
            .await
            .unwrap();
    }
    let behind = [
        "riffle-local-aggregator-errors",
        "riffle-local-archiver-errors",
        "riffle-local-aggregator-throttles",
        "riffle-local-archiver-throttles",
    ];
    produce_until_fired(&pipeline, &behind, &mut fired, 1_000).await;

    // Records no stage can decode are parked on the dead-letter queues of the enricher
    // (validated) and of the aggregator and archiver (enriched).
    put_garbage(&pipeline, "ValidatedStream", 3).await;
    put_garbage(&pipeline, "EnrichedStream", 3).await;
    until_fired(
        &pipeline,
        &[
            "riffle-local-enricher-dlq-depth",
            "riffle-local-aggregator-dlq-depth",
            "riffle-local-archiver-dlq-depth",
        ],
        &mut fired,
    )
    .await;

    // A registry outage: its table gone, every lookup answers 5xx.
    let table = pipeline
        .deployment()
        .table_name("SchemasTable")
        .unwrap()
        .to_owned();
    riffle_aws::dynamodb_client(pipeline.sdk())
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let registry = pipeline.registry().unwrap();
    let asking = async {
        loop {
            let answer = registry.latest("com.riffle.shop.OrderPlaced").await;
            assert!(answer.is_err(), "the registry answered without its table");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = asking => {}
        () = until_fired(
            &pipeline,
            &["riffle-local-schema-registry-errors", "riffle-local-schema-registry-server-errors"],
            &mut fired,
        ) => {}
    }

    // A view the query API cannot read: its table gone, every query answers 503.
    let (url, token) = pipeline.query_access().unwrap();
    let (url, token) = (url.to_owned(), token.to_owned());
    let view = pipeline
        .deployment()
        .table_name("ViewTable")
        .unwrap()
        .to_owned();
    riffle_aws::dynamodb_client(pipeline.sdk())
        .delete_table()
        .table_name(&view)
        .send()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let querying = async {
        loop {
            let answer = http
                .get(format!("{url}/v1/windows?key=orders:category=books"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = querying => {}
        () = until_fired(
            &pipeline,
            &["riffle-local-view-query-errors", "riffle-local-view-query-server-errors"],
            &mut fired,
        ) => {}
    }

    // Every alarm fired but those named above; the iterator age reached the evaluation (over
    // minutes: the stages may have had nothing to do in the last two-second periods).
    let last = alarms_over(&pipeline, "60").await;
    let all: BTreeSet<&str> = last.iter().map(|r| r.name.as_str()).collect();
    let not_drilled: BTreeSet<&str> = NOT_DRILLED
        .iter()
        .map(|(n, _)| *n)
        .chain(NO_LOCAL_SOURCE)
        .collect();
    let drilled: BTreeSet<&str> = fired.iter().map(String::as_str).collect();
    let undrilled: BTreeSet<&str> = all.difference(&drilled).copied().collect();
    assert_eq!(undrilled, not_drilled, "fired: {drilled:?}");
    let ages: BTreeMap<&str, usize> = last
        .iter()
        .filter(|r| r.name.ends_with("-iterator-age"))
        .map(|r| (r.name.as_str(), r.datapoints.iter().flatten().count()))
        .collect();
    assert!(
        ages.values().any(|n| *n > 0),
        "no iterator age reached the evaluation: {ages:?}"
    );
    pipeline.shutdown().await;
}
