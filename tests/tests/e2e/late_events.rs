//! Windows analysts can trust (ADR 0021), in a running `riffle-dev up`: a subject whose
//! contract allows 5 s of lateness on 10 s windows gets events in an old window, then events
//! of now, which move the watermark past the old window's end plus its lateness: the query
//! API reports the old window final. Then more events of the old window come: they are
//! archived with `late = true`, counted by the enricher's and the aggregator's `LateEvents`,
//! and the final window does not change. DuckDB on the archive, less the late rows, equals
//! the view.
//!
//! Needs the service binaries and the emulators (`make install`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use riffle_tests::test_support::{
    archived_totals, duckdb_python, duckdb_where, dynamodb, riffle_ok, sdk_from, start_up, stop_up,
    team_subject, wait_for_view,
};

const SUBJECT: &str = "com.riffle.utility.MeterRead";

const SCHEMA: &str = r#"{
  "type": "record", "name": "MeterRead", "namespace": "com.riffle.utility",
  "fields": [
    {"name": "meter_id", "type": "string"},
    {"name": "kwh", "type": "double"},
    {"name": "read_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}"#;

const CONTRACT: &str = r#"{
  "subject": "com.riffle.utility.MeterRead",
  "schema": "events/meter_read.avsc",
  "max_event_time_skew_secs": 3600,
  "fields": { "meter_id": { "required": true } },
  "enrich": {
    "agg_key": "meters:meter={meter_id}",
    "metric": { "product": ["kwh"] },
    "window_secs": 10,
    "allowed_lateness_secs": 5
  }
}"#;

const KEY: &str = "meters:meter=m-1";
/// Events of the old window that come in time, and those that come late.
const ON_TIME: i64 = 20;
const LATE: i64 = 7;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Writes one line per (read_at, kwh) to `path`.
fn lines(path: &Path, reads: &[(i64, f64)]) {
    let mut out = std::fs::File::create(path).unwrap();
    for (at, kwh) in reads {
        let line = serde_json::json!({"meter_id": "m-1", "kwh": kwh, "read_at": at});
        writeln!(out, "{line}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_the_allowed_lateness_leave_final_windows_unchanged() {
    let bins = riffle_harness::pipeline::bin_dir();
    let state = std::env::temp_dir().join(format!("riffle-late-{}", std::process::id()));
    let (mut up, env) = start_up(&bins.join("riffle-dev"), &state).await;
    riffle_tests::test_support::drain_stderr(&mut up);
    let riffle = bins.join("riffle");
    let run = |args: Vec<String>| {
        let (riffle, env) = (riffle.clone(), env.clone());
        async move { riffle_ok(&riffle, &env, &args).await }
    };

    let (team, schema_file) = team_subject(&state, "meter_read", SCHEMA, SUBJECT, CONTRACT);
    run(vec![
        "schema".into(),
        "register".into(),
        schema_file.display().to_string(),
    ])
    .await;

    // One meter: one partition key, so every event takes the same shard, in order.
    let produce = |file: std::path::PathBuf| {
        run(vec![
            "produce".into(),
            "--subject".into(),
            SUBJECT.into(),
            "--key-field".into(),
            "meter_id".into(),
            "--time-field".into(),
            "read_at".into(),
            "--file".into(),
            file.display().to_string(),
        ])
    };
    let now = now_ms();
    let old = (now - 600_000) - (now - 600_000).rem_euclid(10_000);
    let mut first: Vec<(i64, f64)> = (0..ON_TIME).map(|i| (old + i * 100, 1.0)).collect();
    first.extend((0..ON_TIME).map(|i| (now + i, 1.0)));
    let file = state.with_extension("first.jsonl");
    lines(&file, &first);
    produce(file.clone()).await;

    let sdk = sdk_from(&env).await;
    let dynamo = dynamodb(&sdk, &env);
    let table = env["RIFFLE_VIEW_TABLE"].clone();
    let seen = wait_for_view(&dynamo, &table, |seen| {
        seen.get(KEY).is_some_and(|(c, _)| *c >= 2 * ON_TIME)
    })
    .await;
    assert_eq!(seen[KEY].0, 2 * ON_TIME);

    // The old window as the query API answers it, once the watermark passed it.
    let (from, to) = (old.to_string(), (now + 60_000).to_string());
    let windows = || {
        run(vec![
            "view".into(),
            "query".into(),
            "windows".into(),
            "--key".into(),
            KEY.into(),
            "--from".into(),
            from.clone(),
            "--to".into(),
            to.clone(),
            "--json".into(),
        ])
    };
    let old_window = |answer: &serde_json::Value| -> serde_json::Value {
        answer["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["window_start_ms"].as_i64() == Some(old))
            .cloned()
            .expect("the old window is in the view")
    };
    let started = Instant::now();
    let answer = loop {
        let answer: serde_json::Value = serde_json::from_str(&windows().await).unwrap();
        if old_window(&answer)["final"] == true || started.elapsed() > Duration::from_secs(60) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let before = old_window(&answer);
    assert_eq!(before["final"], true, "{answer}");
    assert_eq!(
        (before["count"].as_i64(), before["sum"].as_f64()),
        (Some(ON_TIME), Some(20.0))
    );
    // The watermark is the latest event time seen: the windows of now are still open.
    let watermark = answer["watermark_ms"].as_i64().unwrap();
    assert!(watermark >= now && watermark < now + 1_000, "{answer}");
    let open: Vec<_> = answer["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["window_start_ms"].as_i64().unwrap() >= now - 10_000)
        .collect();
    assert!(
        !open.is_empty() && open.iter().all(|w| w["final"] == false),
        "{answer}"
    );

    // Late events of the old window (100 kWh each), then one of now to see them through.
    let mut second: Vec<(i64, f64)> = (0..LATE).map(|i| (old + 1_000 + i, 100.0)).collect();
    second.push((now + 100, 1.0));
    let file = state.with_extension("second.jsonl");
    lines(&file, &second);
    produce(file.clone()).await;
    let seen = wait_for_view(&dynamo, &table, |seen| {
        seen.get(KEY).is_some_and(|(c, _)| *c > 2 * ON_TIME)
    })
    .await;
    assert_eq!(seen[KEY], (2 * ON_TIME + 1, (2 * ON_TIME + 1) as f64));
    let after: serde_json::Value = serde_json::from_str(&windows().await).unwrap();
    assert_eq!(
        old_window(&after),
        before,
        "the final window did not change"
    );

    // The archive holds every event, the late ones flagged: less those, it is the view.
    let folder = state.with_extension("archive");
    let archived = archived_totals(&riffle, &env, &folder, 2 * ON_TIME + 1).await;
    assert_eq!(archived[KEY], seen[KEY]);
    let late: Vec<(i64, i64, f64)> = duckdb_where(
        &duckdb_python(),
        &folder,
        "epoch_ms(window_start), count(*), sum(metric)",
        "late",
    )
    .await;
    assert_eq!(late, vec![(old, LATE, 100.0 * LATE as f64)]);

    // And both stages counted them.
    let store = std::path::PathBuf::from(&env[riffle_telemetry::METRICS_STORE_ENV]);
    let counted = |service: &str| -> f64 {
        riffle_telemetry::read_metrics_store(&store)
            .unwrap()
            .iter()
            .filter(|r| r.service == service)
            .map(|r| r.sum(riffle_telemetry::names::LATE_EVENTS))
            .sum()
    };
    assert_eq!(counted("enricher"), LATE as f64);
    assert_eq!(counted("aggregator"), LATE as f64);

    stop_up(up, &state).await;
    let _ = std::fs::remove_dir_all(&team);
    let _ = std::fs::remove_dir_all(&folder);
}
