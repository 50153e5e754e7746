//! A producer team onboards a subject the pipeline has never seen, into a running
//! `riffle-dev up`, with one `riffle schema register` (ADR 0020): its schema and contract
//! files, in a folder of the team's own, outside the project. No stage is rebuilt or
//! restarted: the twin was up before the subject existed, and stays up. Then its events,
//! sent with `riffle produce`, are checked by the new contract (one breaks a rule and is
//! rejected with that rule's code), enriched by its template, aggregated in its window
//! (300 s, not the default), and archived: DuckDB's totals equal the view's.
//!
//! Needs the service binaries and the emulators (`make install`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use riffle_tests::test_support::{
    archived_totals, dynamodb, sdk_from, sqs, start_up, stop_up, team_subject, wait_for_view,
};

const SUBJECT: &str = "com.riffle.logistics.ParcelScanned";

const SCHEMA: &str = r#"{
  "type": "record", "name": "ParcelScanned", "namespace": "com.riffle.logistics",
  "fields": [
    {"name": "parcel_id", "type": "string"},
    {"name": "depot", "type": "string"},
    {"name": "weight_kg", "type": "double"},
    {"name": "scanned_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}"#;

const CONTRACT: &str = r#"{
  "subject": "com.riffle.logistics.ParcelScanned",
  "schema": "events/parcel_scanned.avsc",
  "max_event_time_skew_secs": 3600,
  "fields": {
    "parcel_id": { "required": true, "pattern": "^pcl-[0-9]{6}$" },
    "depot": { "allowed": ["HAM", "MUC", "BER"] },
    "weight_kg": { "min": 0, "max": 40 }
  },
  "enrich": {
    "agg_key": "parcels:depot={depot}",
    "metric": { "product": ["weight_kg"] },
    "window_secs": 300
  }
}"#;

const DEPOTS: [&str; 3] = ["HAM", "MUC", "BER"];
const VALID: i64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_registered_into_a_running_twin_reaches_view_and_archive() {
    let bins = riffle_harness::pipeline::bin_dir();
    let state = std::env::temp_dir().join(format!("riffle-new-subject-{}", std::process::id()));
    let (mut up, env) = start_up(&bins.join("riffle-dev"), &state).await;
    riffle_tests::test_support::drain_stderr(&mut up);
    let riffle = bins.join("riffle");

    // Before registration the subject is unknown to the registry, so `produce` refuses.
    let lines = state.with_extension("jsonl");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut expected: HashMap<String, (i64, f64)> = HashMap::new();
    let mut out = std::fs::File::create(&lines).unwrap();
    for i in 0..VALID {
        let depot = DEPOTS[(i % 3) as usize];
        let weight = 0.5 + (i % 40) as f64 * 0.75;
        let line = serde_json::json!({
            "parcel_id": format!("pcl-{i:06}"),
            "depot": depot,
            "weight_kg": weight,
            "scanned_at": now - i,
        });
        writeln!(out, "{line}").unwrap();
        let e = expected
            .entry(format!("parcels:depot={depot}"))
            .or_default();
        e.0 += 1;
        e.1 += weight;
    }
    // Fits the schema, breaks the contract: over the weight limit.
    writeln!(
        out,
        r#"{{"parcel_id":"pcl-999999","depot":"HAM","weight_kg":55.0,"scanned_at":{now}}}"#
    )
    .unwrap();
    drop(out);
    let produce = || {
        let mut command = tokio::process::Command::new(&riffle);
        command
            .args(["produce", "--subject", SUBJECT])
            .args(["--key-field", "parcel_id", "--time-field", "scanned_at"])
            .arg("--file")
            .arg(&lines)
            .env_clear()
            .envs(&env);
        command
    };
    let refused = produce().output().await.unwrap();
    assert!(!refused.status.success());

    // The team's own folder: schemas/events/<name>.avsc and schemas/rules/<subject>.json.
    let (team, schema_file) = team_subject(&state, "parcel_scanned", SCHEMA, SUBJECT, CONTRACT);
    let registered = tokio::process::Command::new(&riffle)
        .args(["schema", "register"])
        .arg(&schema_file)
        .env_clear()
        .envs(&env)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&registered.stdout);
    assert!(
        registered.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    assert!(said.contains(&format!("{SUBJECT}  version 1")), "{said}");
    assert!(said.contains("contract"), "{said}");

    let produced = produce().output().await.unwrap();
    let stdout = String::from_utf8_lossy(&produced.stdout);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert!(
        stdout.contains(&format!("produced {} events", VALID + 1)),
        "{stdout}"
    );

    // The view: each depot's parcels counted once, their weights summed, in 300 s windows.
    let sdk = sdk_from(&env).await;
    let dynamo = dynamodb(&sdk, &env);
    let table = env["RIFFLE_VIEW_TABLE"].clone();
    let seen = wait_for_view(&dynamo, &table, |seen| {
        expected
            .keys()
            .map(|k| seen.get(k).map_or(0, |(c, _)| *c))
            .sum::<i64>()
            >= VALID
    })
    .await;
    for (key, (count, weight)) in &expected {
        let (c, w) = seen.get(key).copied().unwrap_or_default();
        assert_eq!(c, *count, "{key}");
        assert!((w - weight).abs() < 1e-6, "{key}: {w} vs {weight}");
    }
    let windows = window_lengths(&dynamo, &table, "parcels:").await;
    assert!(!windows.is_empty());
    assert!(
        windows.iter().all(|w| *w == 300),
        "the contract's window: {windows:?}"
    );

    // The one over the limit is in the rejects queue, with the contract's rule.
    let rejects = sqs(&sdk, &env);
    let queue = env["RIFFLE_REJECTS_QUEUE_URL"].clone();
    let started = Instant::now();
    let reject = loop {
        let got = rejects
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let found = got
            .messages()
            .iter()
            .filter_map(|m| m.body())
            .flat_map(|body| riffle_stage::reject::parse_body(body).unwrap())
            .find(|r| r.subject.as_deref() == Some(SUBJECT));
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no reject for {SUBJECT}"
        );
    };
    assert_eq!(reject.code, "above_max", "{reject:?}");
    assert!(reject.detail.contains("weight_kg"), "{reject:?}");

    // The archive: every valid parcel once, the view's totals.
    let folder = state.with_extension("archive");
    let archived = archived_totals(&riffle, &env, &folder, VALID).await;
    for (key, (count, weight)) in &expected {
        let (c, w) = archived.get(key).copied().unwrap_or_default();
        assert_eq!(c, *count, "{key}");
        assert!((w - weight).abs() < 1e-6, "{key}: {w} vs {weight}");
    }

    stop_up(up, &state).await;
    let _ = std::fs::remove_file(&lines);
    let _ = std::fs::remove_dir_all(&team);
    let _ = std::fs::remove_dir_all(&folder);
}

/// The window lengths of the view items whose key starts with `prefix`.
async fn window_lengths(dynamo: &aws_sdk_dynamodb::Client, table: &str, prefix: &str) -> Vec<u32> {
    let page = dynamo.scan().table_name(table).send().await.unwrap();
    page.items()
        .iter()
        .map(|item| riffle_view::item::parse_item(item).unwrap())
        .filter(|row| row.key.agg_key.starts_with(prefix))
        .map(|row| row.window_secs)
        .collect()
}
