//! Tests of `riffle alarms`, over the project's own templates and metrics stores written to
//! temporary directories: [`mapping`] (which local measurement stands for which metric),
//! [`report`] (the rows, the table, the JSON, the drill); here the helpers and the command's
//! errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mapping;
mod report;

use super::*;
use riffle_telemetry::Metrics;

/// An instant in the middle of a second, so one-second periods are not on its edge.
const NOW: i64 = 1_800_000_000_500;

fn infra() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra")
}

fn wiring() -> Wiring {
    Wiring::from_plan(&riffle_plan::plan(&infra(), riffle_plan::LOCAL_ENV).unwrap())
}

/// A fresh metrics store holding `lines` per service file.
fn store(test: &str, lines: &[(&str, String)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("riffle-alarms-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (service, line) in lines {
        let path = dir.join(format!("{service}.jsonl"));
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    dir
}

/// One EMF line of `service` at `at_ms` with counters, as a local process prints it: in the
/// local environment (its template's `RIFFLE_ENV`).
fn line(service: &str, at_ms: i64, counts: &[(&'static str, u64)]) -> String {
    line_in(riffle_plan::LOCAL_ENV, service, at_ms, counts)
}

/// The same line in environment `env`.
fn line_in(env: &str, service: &str, at_ms: i64, counts: &[(&'static str, u64)]) -> String {
    let mut m = Metrics::new(service.to_owned()).with_env(Some(env.to_owned()));
    for (name, n) in counts {
        m.count(*name, *n);
    }
    m.to_line(u64::try_from(at_ms).unwrap()).unwrap()
}

#[tokio::test]
async fn a_missing_store_says_how_to_get_one() {
    let dir = std::env::temp_dir().join(format!("riffle-alarms-{}-none", std::process::id()));
    let args = AlarmsArgs {
        infra: Some(infra()),
        metrics: Some(dir.clone()),
        period: None,
        state: None,
        json: false,
    };
    let e = run(&args).await.unwrap_err();
    assert!(matches!(e, OpsError::NoMetricsStore(_)));
    let message = e.to_string();
    for part in [
        dir.display().to_string().as_str(),
        "riffle-dev demo",
        "riffle-dev up",
        "RIFFLE_METRICS_STORE",
    ] {
        assert!(message.contains(part), "{message}");
    }
}
