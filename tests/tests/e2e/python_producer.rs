//! A producer in another language: the Python example (docs/examples/python-producer:
//! boto3, Confluent's AvroSerializer against Riffle's registry, fastavro, the envelope) run
//! against `riffle-dev up` with nothing but the variables the twin prints. Its valid page
//! views must reach the view, counted once each with their dwell times summed; the ones its
//! contract forbids must reach the rejects queue.
//!
//! Needs the service binaries, the emulators and the example's packages (`make install` puts
//! them in .riffle/tools/examples-venv).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use riffle_tests::test_support::{dynamodb, sdk_from, sqs, stop_up, view_totals};

const VALID: u64 = 1_200;
const INVALID: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_producer_reaches_the_view() {
    let root = riffle_local::project_root().unwrap();
    let python = root.join(".riffle/tools/examples-venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make install` (infra/local/install.sh)",
        python.display()
    );
    let bin = riffle_harness::pipeline::bin_dir().join("riffle-dev");
    let state = std::env::temp_dir().join(format!("riffle-python-producer-{}", std::process::id()));
    let (mut up, env) = riffle_tests::test_support::start_up(&bin, &state).await;
    riffle_tests::test_support::drain_stderr(&mut up);

    let out = tokio::process::Command::new(&python)
        .arg(root.join("docs/examples/python-producer/producer.py"))
        .args([
            "--events",
            &VALID.to_string(),
            "--invalid",
            &INVALID.to_string(),
        ])
        .env_clear()
        .envs(&env)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["valid"], VALID);
    assert_eq!(sent["invalid"], INVALID);
    let mut expected: HashMap<String, (i64, f64)> = HashMap::new();
    for (device, per) in sent["devices"].as_object().unwrap() {
        expected.insert(
            format!("pageviews:device={device}"),
            (
                per["count"].as_i64().unwrap(),
                per["dwell_ms"].as_f64().unwrap(),
            ),
        );
    }

    // The view, read through the SDK with the printed variables alone.
    let sdk = sdk_from(&env).await;
    let dynamo = dynamodb(&sdk, &env);
    let table = env["RIFFLE_VIEW_TABLE"].clone();
    let started = Instant::now();
    let mut seen = HashMap::new();
    while started.elapsed() < Duration::from_secs(120) {
        seen = view_totals(&dynamo, &table).await;
        if seen.values().map(|(c, _)| c).sum::<i64>() >= VALID as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(seen.len(), expected.len(), "{seen:?} vs {expected:?}");
    for (key, (count, dwell)) in &expected {
        let (c, d) = seen.get(key).copied().unwrap_or_default();
        assert_eq!(c, *count, "{key}");
        assert!((d - dwell).abs() < 1e-6, "{key}: dwell {d} vs {dwell}");
    }

    // The forbidden paths, rejected with the contract's reason.
    let sqs = sqs(&sdk, &env);
    let queue = env["RIFFLE_REJECTS_QUEUE_URL"].clone();
    let mut rejects = 0;
    let started = Instant::now();
    while rejects < INVALID && started.elapsed() < Duration::from_secs(60) {
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let body = m.body().unwrap_or_default();
            let parsed = riffle_stage::reject::parse_body(body).unwrap();
            for r in &parsed {
                assert_eq!(r.code, "pattern_mismatch", "{r:?}");
                assert_eq!(r.source.as_deref(), Some("python-example"), "{r:?}");
                assert!(r.detail.contains("path"), "{r:?}");
            }
            rejects += parsed.len() as u64;
            sqs.delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(rejects, INVALID);

    stop_up(up, &state).await;
}
