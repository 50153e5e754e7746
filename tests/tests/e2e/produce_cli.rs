//! `riffle produce` against `riffle-dev up`, with nothing but the variables the twin prints:
//! JSON lines of a registered subject reach the view (each counted once, dwell times summed),
//! the lines that cannot be encoded are reported by number and skipped, and the command then
//! exits non-zero; generated events reach the view too; and the archive, downloaded with
//! `riffle archive download` and read by DuckDB as the README shows, holds every event once
//! with the view's totals; and `riffle view query` (the query API) answers, window by
//! window, ranking and series, what DuckDB reads from that archive.
//!
//! Needs the service binaries and the emulators (`make install`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use riffle_tests::test_support::{
    archived_totals, duckdb_python, duckdb_windows, dynamodb, sdk_from, start_up, stop_up,
    wait_for_view,
};

const DEVICES: [&str; 3] = ["DESKTOP", "MOBILE", "TABLET"];
const LINES: i64 = 600;
const GENERATED: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_generated_events_reach_the_view() {
    let bins = riffle_harness::pipeline::bin_dir();
    let state = std::env::temp_dir().join(format!("riffle-produce-cli-{}", std::process::id()));
    let (mut up, env) = start_up(&bins.join("riffle-dev"), &state).await;
    riffle_tests::test_support::drain_stderr(&mut up);

    // Page views as a producer team would write them, two lines that cannot be one among them.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut expected: HashMap<String, (i64, f64)> = HashMap::new();
    let file = state.with_extension("jsonl");
    let mut out = std::fs::File::create(&file).unwrap();
    for i in 0..LINES {
        let device = DEVICES[(i % 3) as usize];
        let dwell = 100 + i * 7;
        let line = serde_json::json!({
            "session_id": format!("ses-{:08x}", i),
            "user_id": if i % 2 == 0 { serde_json::Value::Null } else { format!("u-{i}").into() },
            "path": "/shop/books",
            "referrer": null,
            "device": device,
            "dwell_ms": dwell,
            "viewed_at": now - i,
            "utm": {"campaign": "winter"},
        });
        writeln!(out, "{line}").unwrap();
        let e = expected
            .entry(format!("pageviews:device={device}"))
            .or_default();
        e.0 += 1;
        e.1 += dwell as f64;
        if i == 10 {
            writeln!(out, "{{not json").unwrap();
        }
        if i == 20 {
            // No `path`, which the schema requires.
            writeln!(
                out,
                r#"{{"session_id":"ses-00000000","device":"MOBILE","dwell_ms":1,"viewed_at":1}}"#
            )
            .unwrap();
        }
    }
    drop(out);

    let riffle = bins.join("riffle");
    let produced = tokio::process::Command::new(&riffle)
        .args([
            "produce",
            "--subject",
            "com.riffle.web.PageView",
            "--key-field",
            "session_id",
        ])
        .arg("--file")
        .arg(&file)
        .env_clear()
        .envs(&env)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(
        !produced.status.success(),
        "two lines were skipped: {stderr}"
    );
    assert!(stderr.contains("line 12: not JSON"), "{stderr}");
    assert!(
        stderr.contains("line 23: does not fit the schema of com.riffle.web.PageView"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("produced {LINES} events")),
        "{stderr}"
    );

    let sdk = sdk_from(&env).await;
    let dynamo = dynamodb(&sdk, &env);
    let table = env["RIFFLE_VIEW_TABLE"].clone();
    let seen = wait_for_view(&dynamo, &table, |seen| {
        seen.values().map(|(c, _)| c).sum::<i64>() >= LINES
    })
    .await;
    assert_eq!(seen.len(), expected.len(), "{seen:?} vs {expected:?}");
    for (key, (count, dwell)) in &expected {
        let (c, d) = seen.get(key).copied().unwrap_or_default();
        assert_eq!(c, *count, "{key}");
        assert!((d - dwell).abs() < 1e-6, "{key}: dwell {d} vs {dwell}");
    }

    // Generated events: valid ones of all three subjects join the view.
    let generated = tokio::process::Command::new(&riffle)
        .args([
            "produce",
            "--generate",
            &GENERATED.to_string(),
            "--rate",
            "2000",
        ])
        .args(["--invalid-ratio", "0"])
        .env_clear()
        .envs(&env)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&generated.stdout);
    assert!(
        generated.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(
        stdout.contains(&format!("produced {GENERATED} events")),
        "{stdout}"
    );
    let after = wait_for_view(&dynamo, &table, |seen| {
        seen.values().map(|(c, _)| c).sum::<i64>() >= LINES + GENERATED as i64
    })
    .await;
    let total: i64 = after.values().map(|(c, _)| c).sum();
    assert_eq!(total, LINES + GENERATED as i64, "{after:?}");
    assert!(
        after.keys().any(|k| !k.starts_with("pageviews:")),
        "generated orders and readings reach the view too: {after:?}"
    );

    // The archive, the DuckDB way: the live objects downloaded, read with hive partitioning;
    // every event once, the page views' totals those of the view.
    let folder = state.with_extension("archive");
    let python = duckdb_python();
    let archived = archived_totals(&riffle, &env, &folder, LINES + GENERATED as i64).await;
    assert_eq!(
        archived.values().map(|(c, _)| c).sum::<i64>(),
        LINES + GENERATED as i64
    );
    for (key, (count, sum)) in &after {
        let (c, s) = archived.get(key).copied().unwrap_or_default();
        assert_eq!(c, *count, "{key}");
        assert!(
            (s - sum).abs() < 1e-6 * sum.abs().max(1.0),
            "{key}: {s} vs {sum}"
        );
    }

    // The query API answers what DuckDB reads from the archive: per key and window (count
    // and metric sum), the ranking of a window, and the series of a view.
    let windows = duckdb_windows(&python, &folder).await;
    let query = |args: Vec<String>| {
        let riffle = riffle.clone();
        let env = env.clone();
        async move {
            let out = tokio::process::Command::new(&riffle)
                .args(["view", "query"])
                .args(&args)
                .arg("--json")
                .env_clear()
                .envs(&env)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "riffle view query {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let first = windows.keys().map(|(_, w)| *w).min().unwrap();
    let last = windows.keys().map(|(_, w)| *w).max().unwrap();
    let (from, to) = (first.to_string(), (last + 1).to_string());
    for key in after.keys() {
        let answer = query(vec![
            "windows".into(),
            "--key".into(),
            key.clone(),
            "--from".into(),
            from.clone(),
            "--to".into(),
            to.clone(),
            "--limit".into(),
            "5000".into(),
        ])
        .await;
        let api: HashMap<i64, (i64, f64)> = answer["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let start = w["window_start_ms"].as_i64().unwrap();
                (
                    start,
                    (w["count"].as_i64().unwrap(), w["sum"].as_f64().unwrap()),
                )
            })
            .collect();
        let archived: HashMap<i64, (i64, f64)> = windows
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, w), v)| (*w, *v))
            .collect();
        assert_eq!(
            api.keys().collect::<std::collections::BTreeSet<_>>(),
            archived.keys().collect(),
            "{key}: the API's windows are the archive's"
        );
        for (start, (count, sum)) in &archived {
            let (c, s) = api[start];
            assert_eq!(c, *count, "{key} @ {start}");
            assert!(
                (s - sum).abs() < 1e-6 * sum.abs().max(1.0),
                "{key} @ {start}: {s} vs {sum}"
            );
        }
    }
    // The busiest page-view window, ranked by the API as DuckDB counts it.
    let (busiest, _) = windows
        .iter()
        .filter(|((k, _), _)| k.starts_with("pageviews:"))
        .max_by_key(|(_, (count, _))| *count)
        .unwrap();
    let top = query(vec![
        "top".into(),
        "--view".into(),
        "pageviews".into(),
        "--at".into(),
        busiest.1.to_string(),
    ])
    .await;
    assert_eq!(top["window_start_ms"], busiest.1);
    let mut expected: Vec<(i64, String)> = windows
        .iter()
        .filter(|((k, w), _)| k.starts_with("pageviews:") && *w == busiest.1)
        .map(|((k, _), (count, _))| (*count, k.clone()))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let ranked: Vec<(i64, String)> = top["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["count"].as_i64().unwrap(),
                k["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(ranked, expected);
    // The series of the page views: every event once, window by window.
    let series = query(vec![
        "series".into(),
        "--view".into(),
        "pageviews".into(),
        "--from".into(),
        from.clone(),
        "--to".into(),
        to.clone(),
        "--limit".into(),
        "5000".into(),
    ])
    .await;
    let points: i64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum();
    assert_eq!(
        points,
        after
            .iter()
            .filter(|(k, _)| k.starts_with("pageviews:"))
            .map(|(_, (c, _))| c)
            .sum::<i64>()
    );

    stop_up(up, &state).await;
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&folder);
}
