//! Producer throughput against kinesalite: the load generator's events (valid ones, seed 42)
//! sent through [`Producer::send`] onto a 4-shard stream, plain and aggregated, timed from the
//! first send until `flush` returns. Prints events/s and PUT payload units per 1,000 events
//! (Kinesis bills each record `ceil(size / 25 KiB)` units).
//!
//! `cargo bench -p riffle-producer --bench producer`; `RIFFLE_BENCH_EVENTS` sets the count
//! (default 200,000). Benchmarks only: a bench that cannot set up has failed, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::StreamStatus;
use riffle_codec::EnvelopeCodec;
use riffle_loadtest::bench::IDS;
use riffle_loadtest::{Generator, GeneratorConfig};
use riffle_producer::{Producer, ProducerEvent};

const SHARDS: i32 = 4;
const DEFAULT_EVENTS: usize = 200_000;

/// The generator's events as a producer's caller would hand them over.
fn events(n: usize) -> Vec<ProducerEvent> {
    let config = GeneratorConfig {
        invalid_ratio: 0.0,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(config, IDS).unwrap();
    let codec = EnvelopeCodec::new(IDS.envelope).unwrap();
    (0..n)
        .map(|_| {
            let generated = generator.next_simulated().unwrap();
            let e = codec.decode(&generated.record).unwrap();
            ProducerEvent {
                event_id: Some(e.event_id),
                source: e.source,
                subject: e.subject,
                schema_id: u32::try_from(e.schema_id).unwrap(),
                payload: e.payload,
                partition_key: generated.partition_key,
                event_time: e.event_time,
                trace_header: e.trace_header,
            }
        })
        .collect()
}

async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(SHARDS)
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        assert!(Instant::now() < deadline, "stream never ACTIVE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(client: &aws_sdk_kinesis::Client, events: Vec<ProducerEvent>, aggregation: bool) {
    let mode = if aggregation { "aggregated" } else { "plain" };
    let stream = format!("producer-bench-{mode}");
    create_stream(client, &stream).await;
    let producer = Producer::builder(
        client.clone(),
        &stream,
        EnvelopeCodec::new(IDS.envelope).unwrap(),
    )
    .aggregation(aggregation)
    .build()
    .await
    .unwrap();
    let n = events.len();
    let started = Instant::now();
    for event in events {
        producer.send(event).await.unwrap();
    }
    let failed = producer.flush().await.unwrap();
    let elapsed = started.elapsed();
    assert!(failed.is_empty(), "{} records failed", failed.len());
    let stats = producer.stats();
    assert_eq!(stats.records, n as u64);
    producer.close().await.unwrap();
    println!(
        "{mode:<10} {n} events in {:>6.2} s: {:>8.0} events/s | {:>7.1} PUT payload units per 1,000 events | {} Kinesis records ({} aggregates), {} PutRecords requests, {:.0} bytes/event",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        stats.payload_units as f64 * 1000.0 / n as f64,
        stats.kinesis_records,
        stats.aggregates,
        stats.put_requests,
        stats.bytes as f64 / n as f64,
    );
}

fn main() {
    let n = std::env::var("RIFFLE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EVENTS);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = riffle_local::project_root()
            .unwrap()
            .join(".riffle/test-state")
            .join(format!("producer-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let emulators = riffle_local::Emulators::start(&dir).await.unwrap();
        let client = aws_sdk_kinesis::Client::new(&emulators.sdk_config().await);
        let events = events(n);
        println!("producer bench: {n} generator events, {SHARDS}-shard stream on kinesalite");
        run(&client, events.clone(), false).await;
        run(&client, events, true).await;
        emulators.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
