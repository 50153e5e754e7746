//! The autoscaler's AWS code path against the local emulator through the real SDK: moto's
//! Kinesis (which has UpdateShardCount and stream tags). The minutes are recorded ones, as
//! CloudWatch would report them: moto 5.2 does not speak CloudWatch's rpcv2 CBOR protocol,
//! which the SDK's client uses (the results' parsing is tested in `src/aws.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_kinesis::types::StreamStatus;
use riffle_autoscaler::aws::{Autoscaler, MetricSource, Outcome, UPDATES_TAG, parse_updates};
use riffle_autoscaler::{Decision, Hold, Minute, Policy};
use riffle_local::Emulators;

async fn create_stream(kinesis: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let out = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if out.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{name} never became ACTIVE");
}

/// Minutes per stream, as CloudWatch would answer for them.
#[derive(Default)]
struct Recorded(Mutex<HashMap<String, Vec<Minute>>>);

impl MetricSource for Recorded {
    async fn minutes(
        &self,
        stream: &str,
        _now: i64,
    ) -> Result<Vec<Minute>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(stream)
            .cloned()
            .unwrap_or_default())
    }
}

impl Recorded {
    /// `minutes` minutes ending before `now` of a stream taking `records` records of 200
    /// bytes a minute.
    fn busy(&self, stream: &str, now: i64, minutes: i64, records: f64) {
        let end = now - now.rem_euclid(60);
        let series = (1..=minutes)
            .map(|i| Minute {
                start: end - i * 60,
                incoming_bytes: Some(records * 200.0),
                incoming_records: Some(records),
                iterator_age_ms: Some(300.0),
            })
            .collect();
        self.0.lock().unwrap().insert(stream.to_owned(), series);
    }
}

async fn open_shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> i32 {
    kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .open_shard_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_streams_double_once_and_the_daily_limit_holds() {
    let state = std::env::temp_dir().join(format!("riffle-autoscaler-aws-{}", std::process::id()));
    let emulators = Emulators::start(&state).await.unwrap();
    let sdk = emulators.sdk_config().await;
    // moto's Kinesis: the local Kinesis (kinesalite) has no UpdateShardCount.
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&sdk)
            .endpoint_url(emulators.moto_endpoint())
            .build(),
    );
    let autoscaler = Autoscaler {
        kinesis: kinesis.clone(),
        metrics: Recorded::default(),
        policy: Policy::default(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // 2 shards take 120,000 records a minute; 100,000 for 6 minutes is 83 %.
    create_stream(&kinesis, "busy", 2).await;
    autoscaler.metrics.busy("busy", now, 6, 100_000.0);
    let outcome = autoscaler.run_stream_at("busy", now).await.unwrap();
    match outcome {
        Outcome::Resharded {
            from,
            to,
            utilization,
        } => {
            assert_eq!((from, to), (2, 4));
            assert!(
                (utilization - 100_000.0 / 120_000.0).abs() < 1e-9,
                "{utilization}"
            );
        }
        other => panic!("expected a reshard, got {other:?}"),
    }
    assert_eq!(open_shards(&kinesis, "busy").await, 4);
    let tags = kinesis
        .list_tags_for_stream()
        .stream_name("busy")
        .send()
        .await
        .unwrap();
    let kept = tags.tags().iter().find(|t| t.key() == UPDATES_TAG).unwrap();
    // Kept as the minute it was decided in.
    assert_eq!(parse_updates(kept.value().unwrap()), [now - now % 60]);
    // A minute later: the minutes before the reshard no longer count, so it holds.
    let again = autoscaler.run_stream_at("busy", now + 60).await.unwrap();
    assert!(
        matches!(again, Outcome::Held(Decision::Hold(Hold::Steady { .. }))),
        "{again:?}"
    );
    assert_eq!(open_shards(&kinesis, "busy").await, 4);

    // Ten reshards in the last day: as busy, but UpdateShardCount's daily limit holds it.
    create_stream(&kinesis, "limited", 2).await;
    let history: Vec<String> = (1..=10).map(|i| (now - 3600 * i).to_string()).collect();
    kinesis
        .add_tags_to_stream()
        .stream_name("limited")
        .tags(UPDATES_TAG, history.join(" "))
        .send()
        .await
        .unwrap();
    autoscaler.metrics.busy("limited", now, 6, 100_000.0);
    let held = autoscaler.run_stream_at("limited", now).await.unwrap();
    assert_eq!(
        held,
        Outcome::Held(Decision::Hold(Hold::DailyLimit {
            next_allowed: now - 3600 * 10 + 86_400,
        }))
    );
    assert_eq!(open_shards(&kinesis, "limited").await, 2);

    // No metrics at all on a new stream: nothing to act on.
    create_stream(&kinesis, "quiet", 2).await;
    let quiet = autoscaler.run_stream_at("quiet", now).await.unwrap();
    assert!(
        matches!(quiet, Outcome::Held(Decision::Hold(Hold::Steady { .. }))),
        "{quiet:?}"
    );

    // An unknown stream is an error, not a panic.
    assert!(autoscaler.run_stream_at("missing", now).await.is_err());
    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}
