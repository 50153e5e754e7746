//! A load run's report in three forms: JSON (everything), CSV (one row a second) and a
//! self-contained HTML page whose plots are drawn by uPlot, inlined from the copy `make
//! install` puts under `.riffle/tools/node` (no CDN: reports are opened offline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::profile::Profile;

/// One stage in one second.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageSecond {
    /// Records its handler was given.
    pub records: u64,
    /// The largest iterator age its batches reported (none: no batch this second).
    pub iterator_age_ms: Option<f64>,
    /// Handler time.
    pub handler_ms: f64,
}

/// Ingest-to-view latency of the events applied in one second, from the aggregator's
/// per-batch percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the first event was offered (the second ending at `t`).
    pub t: u64,
    /// The profile's rate at that second (0 while draining).
    pub target_rate: f64,
    /// Events handed to the producer.
    pub offered: u64,
    /// Events Kinesis acknowledged.
    pub accepted: u64,
    /// PutRecords entries Kinesis throttled (retried by the producer).
    pub throttled: u64,
    /// Per stage.
    pub stages: BTreeMap<String, StageSecond>,
    /// Ingest to view (none: no event reached the view this second).
    pub latency_ms: Option<Latency>,
    /// Kinesis PUT payload units: the producer's and the stages'.
    pub kinesis_put_units: f64,
    /// DynamoDB items read by key.
    pub dynamo_reads: f64,
    /// DynamoDB items written.
    pub dynamo_writes: f64,
    /// Archive objects written (S3 PUTs).
    pub s3_puts: f64,
    /// Lambda-equivalent compute: handler time times each function's memory, GB-seconds.
    pub lambda_gb_s: f64,
    /// Kinesis records the producer put on the raw stream (plain records and aggregates):
    /// its IncomingRecords.
    pub raw_records: u64,
    /// Their bytes: its IncomingBytes.
    pub raw_bytes: u64,
    /// Open shards of the raw stream (with `--autoscale`).
    pub raw_shards: Option<u32>,
}

/// What `--check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Nothing lost, doubled or reordered.
    pub ok: bool,
    /// Differences of the view, archive and rejects from the ground truth.
    pub differences: Vec<String>,
    /// Partition keys whose order was checked.
    pub checked_keys: usize,
    /// Pairs of a key's consecutive events compared (both archived, on one enriched shard).
    pub compared_pairs: usize,
    /// Those whose archived events are out of production order.
    pub reordered_keys: Vec<String>,
}

/// Totals and extremes of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Events offered.
    pub offered: u64,
    /// Events Kinesis acknowledged.
    pub accepted: u64,
    /// Events the producer gave up on.
    pub put_failures: u64,
    /// Entries throttled (and retried).
    pub throttled: u64,
    /// Of the offered events, valid ones (by the generator's ground truth).
    pub valid: u64,
    /// Every stage took in what it was given before the drain timeout.
    pub drained: bool,
    /// Seconds from the last offered event until drained (or the timeout).
    pub drain_s: f64,
    /// Highest offered events/s in one second.
    pub peak_offered: u64,
    /// Per stage, the most records handled in one second.
    pub peak_stage_records: BTreeMap<String, u64>,
    /// Per stage, the largest iterator age.
    pub max_iterator_age_ms: BTreeMap<String, f64>,
    /// Ingest to view over the whole run (all the aggregator's percentile samples).
    pub latency_ms: Option<Latency>,
    /// Lambda-equivalent compute of the run.
    pub lambda_gb_s: f64,
}

/// A run's report.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The command that ran it.
    pub command: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The profile.
    pub profile: Profile,
    /// Seconds of offered load.
    pub duration_s: f64,
    /// Generator seed.
    pub seed: u64,
    /// Totals.
    pub summary: Summary,
    /// Per valid event, for `riffle cost --figures`.
    pub figures: riffle_cli::cost::Figures,
    /// Second by second, the drain included.
    pub seconds: Vec<Second>,
    /// Reshards of the raw stream (with `--autoscale`).
    pub reshards: Vec<super::autoscale::Reshard>,
    /// The read-back against the ground truth (with `--check`).
    pub check: Option<Check>,
}

/// Percentiles of `values` (nearest rank); none when empty.
pub fn latency_of(values: &[f64]) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    Some(Latency {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

/// The stages in the report's column order.
fn stage_names(report: &LoadReport) -> Vec<String> {
    let mut names: Vec<String> = report
        .seconds
        .iter()
        .flat_map(|s| s.stages.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    // Data-flow order where known.
    let order = |n: &str| {
        riffle_stage::stages::ALL
            .iter()
            .position(|s| *s == n)
            .unwrap_or(usize::MAX)
    };
    names.sort_by_key(|n| order(n));
    names
}

/// One row a second; a stage's columns are `<stage>_records`, `<stage>_iterator_age_ms`,
/// `<stage>_handler_ms`; empty cells where nothing was measured.
pub fn csv(report: &LoadReport) -> String {
    let stages = stage_names(report);
    let mut out = String::from(
        "t,target_rate,offered,accepted,throttled,latency_p50_ms,latency_p95_ms,latency_p99_ms,\
         kinesis_put_units,dynamo_reads,dynamo_writes,s3_puts,lambda_gb_s,raw_records,raw_bytes,\
         raw_shards",
    );
    for stage in &stages {
        let _ = write!(
            out,
            ",{stage}_records,{stage}_iterator_age_ms,{stage}_handler_ms"
        );
    }
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for s in &report.seconds {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.t,
            s.target_rate,
            s.offered,
            s.accepted,
            s.throttled,
            opt(s.latency_ms.map(|l| l.p50)),
            opt(s.latency_ms.map(|l| l.p95)),
            opt(s.latency_ms.map(|l| l.p99)),
            s.kinesis_put_units,
            s.dynamo_reads,
            s.dynamo_writes,
            s.s3_puts,
            s.lambda_gb_s,
            s.raw_records,
            s.raw_bytes,
            opt(s.raw_shards.map(f64::from)),
        );
        for stage in &stages {
            let st = s.stages.get(stage).cloned().unwrap_or_default();
            let _ = write!(
                out,
                ",{},{},{}",
                st.records,
                opt(st.iterator_age_ms),
                st.handler_ms
            );
        }
        out.push('\n');
    }
    out
}

/// Where `make install` puts uPlot.
pub fn uplot_dir() -> PathBuf {
    riffle_local::tools_dir().join("node/node_modules/uplot/dist")
}

/// HTML-escaped text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The number of plots [`html`] draws; the page sets `data-rendered` to it when done.
pub const PLOTS: usize = 7;

/// The report as one HTML file with uPlot (from `uplot`) inlined.
///
/// # Errors
/// uPlot is not installed (`make install`), or its files cannot be read.
pub fn html(report: &LoadReport, uplot: &Path) -> Result<String, String> {
    let read = |name: &str| {
        std::fs::read_to_string(uplot.join(name)).map_err(|e| {
            format!(
                "{}: {e}; `make install` puts uPlot there (the report's plotting library)",
                uplot.join(name).display()
            )
        })
    };
    let (script, style) = (read("uPlot.iife.min.js")?, read("uPlot.min.css")?);
    let data = serde_json::to_string(report).map_err(|e| e.to_string())?;
    // Inside <script type="application/json">, only `</` could end the element early.
    let data = data.replace("</", "<\\/");
    let s = &report.summary;
    let mut rows = String::new();
    let mut row = |name: &str, value: String| {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    };
    row("command", report.command.clone());
    row("started", report.started_at.clone());
    row(
        "profile",
        format!("{} over {} s", report.profile.name(), report.duration_s),
    );
    row(
        "offered / accepted",
        format!("{} / {}", s.offered, s.accepted),
    );
    row(
        "put failures / throttled entries",
        format!("{} / {}", s.put_failures, s.throttled),
    );
    row("valid events", s.valid.to_string());
    row(
        "drained",
        format!(
            "{} ({:.1} s after the last event)",
            if s.drained { "yes" } else { "no" },
            s.drain_s
        ),
    );
    row("peak offered", format!("{} events/s", s.peak_offered));
    for (stage, peak) in &s.peak_stage_records {
        row(
            &format!("{stage}: peak / max iterator age"),
            format!(
                "{peak} records/s / {:.0} ms",
                s.max_iterator_age_ms
                    .get(stage)
                    .copied()
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(l) = s.latency_ms {
        row(
            "ingest to view p50 / p95 / p99",
            format!("{:.0} / {:.0} / {:.0} ms", l.p50, l.p95, l.p99),
        );
    }
    row(
        "Lambda-equivalent compute",
        format!("{:.3} GB-s", s.lambda_gb_s),
    );
    Ok(format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Riffle load report: {title}</title>
<style>{style}
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ text-align: left; padding: 2px 12px 2px 0; }}
th {{ font-weight: 600; }}
h2 {{ font-size: 1.1em; margin: 1.5em 0 0.3em; }}
#errors {{ color: #b00; }}
</style>
<script>
window.reportErrors = [];
window.addEventListener("error", function (e) {{
  window.reportErrors.push(String(e.message));
  document.body.dataset.errors = String(window.reportErrors.length);
  var list = document.getElementById("errors");
  if (list) {{ list.textContent = window.reportErrors.join("\n"); }}
}});
</script>
<script>{script}</script>
</head>
<body data-errors="0" data-rendered="0">
<h1>Riffle load report: {title}</h1>
<pre id="errors"></pre>
<table>{rows}</table>
<div id="plots"></div>
<script type="application/json" id="report-data">{data}</script>
<script>
(function () {{
  var report = JSON.parse(document.getElementById("report-data").textContent);
  var seconds = report.seconds;
  var xs = seconds.map(function (s) {{ return s.t; }});
  var stages = [];
  seconds.forEach(function (s) {{
    Object.keys(s.stages).forEach(function (n) {{ if (stages.indexOf(n) < 0) stages.push(n); }});
  }});
  var order = ["validator", "enricher", "aggregator", "archiver"];
  stages.sort(function (a, b) {{ return order.indexOf(a) - order.indexOf(b); }});
  var colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];
  var plots = document.getElementById("plots");
  var drawn = 0;
  function plot(title, unit, series) {{
    var heading = document.createElement("h2");
    heading.textContent = title;
    plots.appendChild(heading);
    var target = document.createElement("div");
    target.className = "plot";
    plots.appendChild(target);
    var opts = {{
      width: Math.max(600, Math.min(1100, window.innerWidth - 80)),
      height: 240,
      scales: {{ x: {{ time: false }} }},
      axes: [{{ label: "seconds into the run" }}, {{ label: unit }}],
      series: [{{ label: "t" }}].concat(series.map(function (s, i) {{
        return {{ label: s.label, stroke: colours[i % colours.length], width: 1.5, spanGaps: false }};
      }}))
    }};
    new uPlot(opts, [xs].concat(series.map(function (s) {{ return s.values; }})), target);
    drawn += 1;
  }}
  function field(f) {{ return seconds.map(f); }}
  function perStage(f) {{
    return stages.map(function (n) {{
      return {{ label: n, values: field(function (s) {{ return s.stages[n] ? f(s.stages[n]) : null; }}) }};
    }});
  }}
  plot("Offered and accepted events", "events/s", [
    {{ label: "target rate", values: field(function (s) {{ return s.target_rate; }}) }},
    {{ label: "offered", values: field(function (s) {{ return s.offered; }}) }},
    {{ label: "accepted", values: field(function (s) {{ return s.accepted; }}) }},
    {{ label: "throttled entries", values: field(function (s) {{ return s.throttled; }}) }}
  ]);
  plot("Throughput per stage", "records/s", perStage(function (st) {{ return st.records; }}));
  plot("Iterator age per stage (largest of the second's batches)", "ms",
       perStage(function (st) {{ return st.iterator_age_ms; }}));
  plot("Ingest to view latency", "ms", ["p50", "p95", "p99"].map(function (q) {{
    return {{ label: q, values: field(function (s) {{ return s.latency_ms ? s.latency_ms[q] : null; }}) }};
  }}));
  plot("Requests", "per second", [
    {{ label: "Kinesis PUT units", values: field(function (s) {{ return s.kinesis_put_units; }}) }},
    {{ label: "DynamoDB items read", values: field(function (s) {{ return s.dynamo_reads; }}) }},
    {{ label: "DynamoDB items written", values: field(function (s) {{ return s.dynamo_writes; }}) }},
    {{ label: "S3 PUTs", values: field(function (s) {{ return s.s3_puts; }}) }}
  ]);
  plot("Raw stream: what the producer put, and its open shards", "per second / shards", [
    {{ label: "Kinesis records", values: field(function (s) {{ return s.raw_records; }}) }},
    {{ label: "KiB", values: field(function (s) {{ return s.raw_bytes / 1024; }}) }},
    {{ label: "open shards (x100)", values: field(function (s) {{ return s.raw_shards == null ? null : s.raw_shards * 100; }}) }}
  ]);
  plot("Lambda-equivalent compute", "GB-s per second", [
    {{ label: "all stages", values: field(function (s) {{ return s.lambda_gb_s; }}) }}
  ]);
  document.body.dataset.rendered = String(drawn);
}})();
</script>
</body></html>
"##,
        title = escape(&format!(
            "{} over {} s",
            report.profile.name(),
            report.duration_s
        )),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    pub(crate) fn sample_report() -> LoadReport {
        let second = |t: u64| Second {
            t,
            target_rate: 100.0 * t as f64,
            offered: 100 * t,
            accepted: 100 * t,
            stages: BTreeMap::from([(
                "validator".to_owned(),
                StageSecond {
                    records: 90 * t,
                    iterator_age_ms: t.is_multiple_of(2).then_some(12.5),
                    handler_ms: 3.0,
                },
            )]),
            latency_ms: latency_of(&[100.0, 200.0, 300.0]),
            ..Second::default()
        };
        LoadReport {
            command: "riffle-dev load --profile ramp </script>".into(),
            started_at: "2026-12-07T01:00:00Z".into(),
            profile: Profile::Ramp {
                from: 100.0,
                to: 300.0,
            },
            duration_s: 3.0,
            seed: 42,
            summary: Summary::default(),
            figures: riffle_cli::cost::Figures {
                source: "test".into(),
                measured_at: "now".into(),
                events: 0,
                valid_events: 0,
                event_bytes: 0.0,
                put_units: 0.0,
                dynamo_reads: 0.0,
                dynamo_writes: 0.0,
                s3_puts: 0.0,
                archive_bytes: 0.0,
                queue_messages: 0.0,
                stages: Vec::new(),
            },
            seconds: (1..=3).map(second).collect(),
            reshards: Vec::new(),
            check: None,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = latency_of(&values).unwrap();
        assert_eq!((l.p50, l.p95, l.p99), (50.0, 95.0, 99.0));
        assert_eq!(latency_of(&[7.0]).unwrap().p99, 7.0);
        assert!(latency_of(&[]).is_none());
    }

    #[test]
    fn csv_has_a_row_a_second_and_blank_cells_for_nothing_measured() {
        let text = csv(&sample_report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].ends_with("validator_records,validator_iterator_age_ms,validator_handler_ms")
        );
        let header: Vec<&str> = lines[0].split(',').collect();
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), header.len(), "{line}");
        }
        assert!(lines[1].ends_with(",90,,3"), "{}", lines[1]);
        assert!(lines[2].ends_with(",180,12.5,3"), "{}", lines[2]);
    }

    #[test]
    fn the_page_inlines_its_library_and_data_safely() {
        let dir = std::env::temp_dir().join(format!("riffle-uplot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("uPlot.iife.min.js"), "var uPlot = function () {};").unwrap();
        std::fs::write(dir.join("uPlot.min.css"), ".uplot {}").unwrap();
        let page = html(&sample_report(), &dir).unwrap();
        assert!(page.contains("var uPlot = function () {};"));
        // The command's `</script>` cannot close the data element early.
        assert!(!page.contains("ramp </script>"), "{page}");
        assert!(page.contains("ramp &lt;/script&gt;"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing fetched"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = html(&sample_report(), Path::new("/nonexistent")).unwrap_err();
        assert!(missing.contains("make install"), "{missing}");
    }
}
