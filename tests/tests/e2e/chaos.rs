//! The guarantees under faults, on the local emulators.
//!
//! - Injected throttling: PutRecords entries answered as throttled are retried and written
//!   exactly once (nothing is sent for a throttled entry), and kinesalite restarted on its
//!   LevelDB state still holds every acknowledged record.
//! - The chaos run, small enough for CI: 3,000 events from four sources, 1% poison, three
//!   stage processes killed with SIGKILL and started again, transient handler errors
//!   (before and after the handler's effects), throttling in every stage and the producer,
//!   whole put calls sent again by the producer (as after a lost answer), kinesalite
//!   restarted once mid-run. Once drained, nothing may be lost or doubled, the
//!   view must equal the ground truth, the archive must hold each valid event once, and the
//!   rejects and dead-letter queues exactly the poison records. `riffle chaos` is the same
//!   run with bigger numbers.
//!
//! Needs the service binaries (`cargo build --workspace --bins`) and the emulators
//! (`make install`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use riffle_aws::{KinesisPublisher, OutRecord, PublishConfig};
use riffle_harness::chaos::{self, ChaosOptions};
use riffle_harness::pipeline::PipelineOptions;
use riffle_local::Emulators;
use riffle_tests::test_support::{state_dir, wait_active};

const DEADLINE: Duration = Duration::from_secs(30);

async fn read_all(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let out = kinesis
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
                .unwrap();
            data.extend(out.records().iter().map(|r| r.data().as_ref().to_vec()));
            // Read to the tip: an empty page with nothing behind is the end.
            if out.records().is_empty() && out.millis_behind_latest() == Some(0) {
                break;
            }
            match out.next_shard_iterator {
                Some(next) => iterator = next,
                None => break,
            }
        }
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_entries_are_retried_and_written_once_and_survive_a_kinesalite_restart() {
    let mut emulators = Emulators::start(&state_dir("chaos-throttle"))
        .await
        .unwrap();
    let sdk = emulators.sdk_config().await;
    let kinesis = riffle_aws::kinesis_client(&sdk);
    kinesis
        .create_stream()
        .stream_name("throttled")
        .shard_count(2)
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "throttled", DEADLINE).await;

    let publisher = KinesisPublisher::new(
        kinesis.clone(),
        PublishConfig {
            max_attempts: 30,
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..PublishConfig::default()
        },
    )
    .with_throttle_faults(0.3, 11);
    let records: Vec<OutRecord> = (0..600)
        .map(|i| OutRecord {
            partition_key: format!("key-{}", i % 17),
            data: format!("record-{i}").into_bytes(),
        })
        .collect();
    let outcome = publisher.put_all("throttled", records).await.unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed.first());
    assert_eq!(outcome.written, 600);
    assert!(
        (150..400).contains(&outcome.throttled),
        "about 30% of first tries and of retries throttled, got {}",
        outcome.throttled
    );
    assert_eq!(outcome.retries, outcome.throttled);

    emulators.restart_kinesis().await.unwrap();
    let mut stored = read_all(&kinesis, "throttled").await;
    stored.sort();
    let mut expected: Vec<Vec<u8>> = (0..600)
        .map(|i| format!("record-{i}").into_bytes())
        .collect();
    expected.sort();
    assert_eq!(
        stored, expected,
        "each record exactly once, after the restart too"
    );
    emulators.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_or_doubled_under_kills_faults_and_a_kinesalite_restart() {
    let mut pipeline = PipelineOptions::for_checkout("chaos-test").expect("project root");
    pipeline.state_dir = pipeline
        .state_dir
        .join(format!("run-{}", std::process::id()));
    let options = ChaosOptions {
        events: 3_000,
        kills: 3,
        seed: 7,
        rate: 1_000,
        invalid_ratio: 0.01,
        throttle_rate: 0.03,
        handler_error_rate: 0.02,
        // Half the producer's put calls go again whole, as after a lost answer.
        resend_rate: 0.5,
        restart_kinesis: true,
        max_restart_delay: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        progress: false,
        ..ChaosOptions::default()
    };
    let report = chaos::run(&options, pipeline).await.expect("chaos ran");
    println!("{}", chaos::render(&report));

    let f = &report.figures;
    assert_eq!(report.truth.total(), 3_000);
    assert!(f.poison > 0, "the run must carry poison records");
    let kills = report
        .faults
        .iter()
        .filter(|x| matches!(x, chaos::Fault::Kill { .. }))
        .count();
    assert_eq!(kills, 3);
    assert!(
        report
            .faults
            .iter()
            .any(|x| matches!(x, chaos::Fault::KinesisRestart { .. }))
    );
    assert!(
        report.producer_resent > 0,
        "the run must re-send whole calls"
    );
    assert!(report.drained, "the pipeline did not drain");
    assert_eq!(f.lost(), 0, "lost: {f:?}");
    assert_eq!(f.doubled(), 0, "doubled: {f:?}");
    assert_eq!(f.view_differences, 0, "view != ground truth");
    assert_eq!(f.archive_rows, f.valid, "archive rows != valid events");
    assert_eq!(f.poison_accounted, f.poison, "rejects + DLQ != poison");
    assert_eq!(f.valid_on_queues + f.unidentified_on_queues, 0);
    assert!(report.passed(), "{:#?}", report.failures);
}
