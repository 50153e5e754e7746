//! `riffle-dev load --profile ramp` on the local twin writes its three outputs, and the HTML
//! report works as a web page in a real headless browser (Debian's chromium): every plot
//! renders and no script fails. A copy of the page with a broken script is caught, so the
//! browser check can fail.
//!
//! Needs the service binaries, the emulators and chromium (`make install`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The browser: `RIFFLE_CHROMIUM`, else chromium on the PATH.
fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("RIFFLE_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no chromium on the PATH: the report test needs a real browser (`apt-get install \
         chromium`, which `make install` does when run as root), or set RIFFLE_CHROMIUM"
    );
}

/// The page's DOM after its scripts ran, as headless chromium sees it.
fn rendered_dom(page: &Path) -> String {
    let profile = std::env::temp_dir().join(format!("riffle-chromium-{}", std::process::id()));
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn body_attribute(dom: &str, name: &str) -> String {
    let body = &dom[dom.find("<body").expect("a body")..];
    let body = &body[..body.find('>').unwrap()];
    let key = format!("{name}=\"");
    let start = body
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {body}"))
        + key.len();
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

#[test]
fn a_ramp_writes_json_csv_and_a_report_that_renders_in_a_browser() {
    let run = riffle_tests::test_support::riffle_dev_load(
        &riffle_harness::pipeline::bin_dir().join("riffle-dev"),
        "load-report",
        &[
            "--profile",
            "ramp",
            "--from-rate",
            "100",
            "--rate",
            "800",
            "--duration",
            "8",
            "--trace-sample-rate",
            "0",
        ],
    );
    assert!(
        run.stdout
            .contains("== Riffle load summary (ramp over 8 s) =="),
        "{}",
        run.stdout
    );
    let (report, out) = (&run.report, &run.out);

    // JSON: a second per second of load and of drain; what was offered adds up.
    let seconds = report["seconds"].as_array().unwrap();
    assert!(seconds.len() >= 8, "{}", seconds.len());
    let offered: u64 = seconds.iter().map(|s| s["offered"].as_u64().unwrap()).sum();
    let summary = &report["summary"];
    assert_eq!(offered, summary["offered"].as_u64().unwrap());
    // The ramp's area: (100 + 800) / 2 * 8 events, within the last fraction.
    assert!((3598..=3600).contains(&offered), "{offered}");
    assert_eq!(summary["accepted"], summary["offered"]);
    assert_eq!(summary["drained"], true);
    // Rising load: the last loaded second offers more than the first.
    assert!(seconds[7]["offered"].as_u64() > seconds[0]["offered"].as_u64());
    let validated: u64 = seconds
        .iter()
        .map(|s| s["stages"]["validator"]["records"].as_u64().unwrap())
        .sum();
    assert_eq!(validated, offered, "every event reached the validator once");
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(report["figures"]["dynamo_writes"].as_f64().unwrap() > 0.0);

    // CSV: a header and a row a second, every row as wide as the header.
    let csv = std::fs::read_to_string(out.join("report.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), seconds.len() + 1);
    let width = lines[0].split(',').count();
    assert!(lines.iter().all(|l| l.split(',').count() == width));

    // HTML, in a browser: every plot drawn, no script error.
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script src="),
        "self-contained: no external script"
    );
    let dom = rendered_dom(&page);
    assert_eq!(body_attribute(&dom, "data-errors"), "0", "script errors");
    assert_eq!(body_attribute(&dom, "data-rendered"), "7");
    assert_eq!(
        dom.matches("class=\"uplot").count(),
        7,
        "seven uPlot charts"
    );
    assert!(dom.matches("<canvas").count() >= 7);

    // The check catches a page whose script fails.
    let broken = out.join("broken.html");
    std::fs::write(
        &broken,
        html.replace(
            "var report = JSON.parse(",
            "undefinedFunction(); var report = JSON.parse(",
        ),
    )
    .unwrap();
    let dom = rendered_dom(&broken);
    assert_eq!(body_attribute(&dom, "data-errors"), "1");
    assert_eq!(body_attribute(&dom, "data-rendered"), "0");
}
