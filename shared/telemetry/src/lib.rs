//! Riffle's telemetry: logs and metrics, the same on AWS and on one machine.
//!
//! Layout:
//! - [`init`] sets up `tracing` logs on stderr (filter from `RUST_LOG`, default `info`).
//! - [`Metrics`] gathers counters and timings and prints them as one CloudWatch
//!   embedded-metric-format (EMF) JSON line on stdout per [`Metrics::flush`]. On AWS the
//!   Lambda log pipeline turns those lines into CloudWatch metrics with no API call; locally
//!   the orchestrator reads them back with [`parse_emf_line`].
//!
//! - [`names`]: every metric name, one definition each (emitters, readers and alarms).
//!
//! Stdout belongs to metrics and stderr to logs, so a reader of stdout never has to skip
//! log lines.

pub mod names;

use std::borrow::Cow;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tracing_subscriber::EnvFilter;

/// CloudWatch namespace of every Riffle metric.
pub const NAMESPACE: &str = "Riffle";
/// The dimension every Riffle metric carries: which service emitted it.
pub const SERVICE_DIMENSION: &str = "Service";
/// The dimension a Riffle metric carries next to [`SERVICE_DIMENSION`] when its process knows
/// its environment ([`ENV_VAR`]): two environments in one account then never add up in one
/// series, and an alarm filters on both (ADR 0016).
pub const ENV_DIMENSION: &str = "Env";
/// The variable holding the environment's name (`dev`, `local`): each function's template
/// sets it from its `Env` parameter, so locally it is `riffle_plan::LOCAL_ENV` too.
pub const ENV_VAR: &str = "RIFFLE_ENV";
/// EMF limit: metric definitions per directive.
pub const EMF_MAX_METRICS_PER_DIRECTIVE: usize = 100;
/// EMF limit: values in one metric's array.
pub const EMF_MAX_VALUES_PER_METRIC: usize = 100;

/// Sets up `tracing` for a service: compact lines on stderr, filtered by `RUST_LOG`
/// (default `info`). Calling it twice is harmless (the second call does nothing), which
/// keeps tests that start several services in one process simple.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .compact()
        .try_init()
        .is_ok();
    if installed {
        tracing::info!(service, "telemetry initialised");
    }
}

/// The unit CloudWatch shows for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count.
    Count,
    /// A duration in milliseconds.
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

#[derive(Debug)]
struct Entry {
    name: Cow<'static, str>,
    unit: Unit,
    values: Vec<f64>,
}

/// Metrics gathered between two flushes. Not shared between tasks: each task (or each
/// batch) keeps its own and flushes it; the stdout lock keeps lines whole.
#[derive(Debug)]
pub struct Metrics {
    service: Cow<'static, str>,
    /// The [`ENV_DIMENSION`] value; `None`: the line carries `Service` alone.
    env: Option<Cow<'static, str>>,
    // A Vec keeps the order of first use, so lines read the same way every time; there are
    // only a handful of metrics per line, so a linear search beats a map.
    entries: Vec<Entry>,
}

impl Metrics {
    /// Metrics for `service` (the value of the `Service` dimension) in the environment of
    /// this process ([`ENV_VAR`], read once; unset or empty: no `Env` dimension, as for a
    /// process no template started, such as a test or the local harness's producer).
    pub fn new(service: impl Into<Cow<'static, str>>) -> Self {
        static PROCESS_ENV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let env = PROCESS_ENV
            .get_or_init(|| std::env::var(ENV_VAR).ok().filter(|e| !e.trim().is_empty()));
        Self {
            service: service.into(),
            env: env.as_deref().map(Cow::Borrowed),
            entries: Vec::new(),
        }
    }

    /// The same metrics in environment `env` instead of the process's (`None`: none).
    pub fn with_env(mut self, env: Option<impl Into<Cow<'static, str>>>) -> Self {
        self.env = env.map(Into::into);
        self
    }

    fn entry(&mut self, name: Cow<'static, str>, unit: Unit) -> &mut Entry {
        let position = self
            .entries
            .iter()
            .position(|e| e.name == name && e.unit == unit);
        let index = match position {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    name,
                    unit,
                    values: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[index]
    }

    /// Adds `n` to the counter `name`; counters are summed until the next flush.
    pub fn count(&mut self, name: impl Into<Cow<'static, str>>, n: u64) {
        let entry = self.entry(name.into(), Unit::Count);
        match entry.values.first_mut() {
            Some(v) => *v += n as f64,
            None => entry.values.push(n as f64),
        }
    }

    /// Records one duration in milliseconds. Several durations under one name become an
    /// EMF value array (CloudWatch keeps each as a sample); past the EMF limit of
    /// [`EMF_MAX_VALUES_PER_METRIC`] values the rest are dropped, so flush at least once
    /// per batch.
    pub fn millis(&mut self, name: impl Into<Cow<'static, str>>, v: f64) {
        let entry = self.entry(name.into(), Unit::Milliseconds);
        if entry.values.len() < EMF_MAX_VALUES_PER_METRIC {
            entry.values.push(v);
        }
    }

    /// True when nothing was recorded since the last flush.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The EMF line (without newline) for what was recorded, stamped `timestamp_ms`;
    /// `None` when nothing was recorded.
    pub fn to_line(&self, timestamp_ms: u64) -> Option<String> {
        if self.entries.is_empty() {
            return None;
        }
        let dimensions = match self.env {
            Some(_) => json!([[SERVICE_DIMENSION, ENV_DIMENSION]]),
            None => json!([[SERVICE_DIMENSION]]),
        };
        let directives: Vec<Value> = self
            .entries
            .chunks(EMF_MAX_METRICS_PER_DIRECTIVE)
            .map(|chunk| {
                let metrics: Vec<Value> = chunk
                    .iter()
                    .map(|e| json!({"Name": e.name, "Unit": e.unit.as_str()}))
                    .collect();
                json!({
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": metrics,
                })
            })
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".to_owned(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
        );
        root.insert(
            SERVICE_DIMENSION.to_owned(),
            Value::String(self.service.to_string()),
        );
        if let Some(env) = &self.env {
            root.insert(ENV_DIMENSION.to_owned(), Value::String(env.to_string()));
        }
        for e in &self.entries {
            let value = match e.values.as_slice() {
                [one] => number(*one),
                many => Value::Array(many.iter().copied().map(number).collect()),
            };
            root.insert(e.name.to_string(), value);
        }
        Some(Value::Object(root).to_string())
    }

    /// Prints what was recorded as one EMF line on stdout and starts afresh. Writes through
    /// a locked handle so lines of concurrent tasks never interleave. A failed write (stdout
    /// closed) is ignored: losing metrics must not stop the pipeline.
    pub fn flush(&mut self) {
        if let Some(line) = self.to_line(now_millis()) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
        self.entries.clear();
    }
}

/// Whole numbers print without a fraction (`500`, not `500.0`), as people expect to read
/// counters.
fn number(v: f64) -> Value {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() < EXACT_INTEGER_LIMIT {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a local stack keeps every EMF line its processes printed (a directory of
/// `<service>.jsonl` files, one line each as printed), for `riffle alarms`.
pub const METRICS_STORE_ENV: &str = "RIFFLE_METRICS_STORE";

/// One EMF line read back: the service and every metric value in it (a value array gives
/// one pair per element).
#[derive(Debug, Clone, PartialEq)]
pub struct EmfRecord {
    /// Value of the `Service` dimension.
    pub service: String,
    /// Value of the `Env` dimension; `None` on a line without it.
    pub env: Option<String>,
    /// The line's `_aws.Timestamp` (epoch ms); 0 when it has none.
    pub timestamp_ms: i64,
    /// `(metric name, value)` pairs in the order of the metric definitions.
    pub values: Vec<(String, f64)>,
}

impl EmfRecord {
    /// Sum of all values of `name` in this record.
    pub fn sum(&self, name: &str) -> f64 {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

/// Reads one stdout line of a service; `None` when it is not an EMF line of a Riffle
/// service (other output, broken JSON, no `Service`).
pub fn parse_emf_line(line: &str) -> Option<EmfRecord> {
    let root: Value = serde_json::from_str(line.trim()).ok()?;
    let directives = root.get("_aws")?.get("CloudWatchMetrics")?.as_array()?;
    let service = root.get(SERVICE_DIMENSION)?.as_str()?.to_owned();
    let env = root
        .get(ENV_DIMENSION)
        .and_then(Value::as_str)
        .map(str::to_owned);
    let timestamp_ms = root
        .get("_aws")
        .and_then(|a| a.get("Timestamp"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut values = Vec::new();
    for directive in directives {
        let Some(metrics) = directive.get("Metrics").and_then(Value::as_array) else {
            continue;
        };
        for metric in metrics {
            let Some(name) = metric.get("Name").and_then(Value::as_str) else {
                continue;
            };
            match root.get(name) {
                Some(Value::Number(n)) => {
                    if let Some(v) = n.as_f64() {
                        values.push((name.to_owned(), v));
                    }
                }
                Some(Value::Array(items)) => {
                    values.extend(
                        items
                            .iter()
                            .filter_map(Value::as_f64)
                            .map(|v| (name.to_owned(), v)),
                    );
                }
                _ => {}
            }
        }
    }
    Some(EmfRecord {
        service,
        env,
        timestamp_ms,
        values,
    })
}

/// Every EMF record in a metrics store directory ([`METRICS_STORE_ENV`]): the lines of its
/// `*.jsonl` files that are EMF, oldest first.
///
/// # Errors
/// The directory or one of its files cannot be read.
pub fn read_metrics_store(dir: &std::path::Path) -> std::io::Result<Vec<EmfRecord>> {
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read_to_string(&path)?;
            records.extend(text.lines().filter_map(parse_emf_line));
        }
    }
    records.sort_by_key(|r| r.timestamp_ms);
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn line_has_the_emf_shape() {
        let mut m = Metrics::new("validator").with_env(None::<&str>);
        m.count("RecordsIn", 500);
        m.millis("HandlerMs", 12.5);
        let line = m.to_line(1_700_000_000_000).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], json!(1_700_000_000_000u64));
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Riffle");
        assert_eq!(directive["Dimensions"], json!([["Service"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "RecordsIn", "Unit": "Count"}, {"Name": "HandlerMs", "Unit": "Milliseconds"}])
        );
        assert_eq!(v["Service"], "validator");
        assert_eq!(v["RecordsIn"], json!(500));
        assert!(line.contains("\"RecordsIn\":500,") || line.ends_with("\"RecordsIn\":500}"));
        assert_eq!(v["HandlerMs"], json!(12.5));
        assert!(!line.contains('\n'));
    }

    /// With an environment, the line's one dimension set is `[Service, Env]`, so an alarm on
    /// `{Service, Env}` matches it, and reading it back gives the environment.
    #[test]
    fn an_environment_is_a_second_dimension() {
        let mut m = Metrics::new("validator").with_env(Some("staging"));
        m.count("Rejected", 2);
        let line = m.to_line(1).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Service", "Env"]]));
        assert_eq!(
            (&v["Service"], &v["Env"]),
            (&json!("validator"), &json!("staging"))
        );
        let rec = parse_emf_line(&line).unwrap();
        assert_eq!(rec.env.as_deref(), Some("staging"));
        let mut without = Metrics::new("validator").with_env(None::<&str>);
        without.count("Rejected", 1);
        let rec = parse_emf_line(&without.to_line(1).unwrap()).unwrap();
        assert_eq!(rec.env, None);
    }

    #[test]
    fn counts_add_up_and_timings_become_arrays() {
        let mut m = Metrics::new("aggregator");
        m.count("Records", 3);
        m.count("Records", 4);
        m.millis("HandlerMs", 1.0);
        m.millis("HandlerMs", 2.0);
        let rec = parse_emf_line(&m.to_line(1).unwrap()).unwrap();
        assert_eq!(rec.service, "aggregator");
        assert_eq!(
            rec.values,
            vec![
                ("Records".to_owned(), 7.0),
                ("HandlerMs".to_owned(), 1.0),
                ("HandlerMs".to_owned(), 2.0)
            ]
        );
        assert_eq!(rec.sum("HandlerMs"), 3.0);
    }

    #[test]
    fn value_arrays_stop_at_the_emf_limit() {
        let mut m = Metrics::new("s");
        for i in 0..(EMF_MAX_VALUES_PER_METRIC + 5) {
            m.millis("T", i as f64);
        }
        let rec = parse_emf_line(&m.to_line(1).unwrap()).unwrap();
        assert_eq!(rec.values.len(), EMF_MAX_VALUES_PER_METRIC);
    }

    #[test]
    fn many_metrics_split_into_directives() {
        let mut m = Metrics::new("s");
        for i in 0..(EMF_MAX_METRICS_PER_DIRECTIVE + 1) {
            m.count(format!("M{i}"), 1);
        }
        let line = m.to_line(1).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(), 2);
        assert_eq!(
            parse_emf_line(&line).unwrap().values.len(),
            EMF_MAX_METRICS_PER_DIRECTIVE + 1
        );
    }

    #[test]
    fn nothing_recorded_prints_nothing() {
        let mut m = Metrics::new("s");
        assert!(m.to_line(1).is_none());
        m.count("X", 1);
        m.flush();
        assert!(m.is_empty());
    }

    #[test]
    fn other_lines_are_not_emf() {
        assert!(parse_emf_line("hello").is_none());
        assert!(parse_emf_line("{\"Service\":\"x\"}").is_none());
        assert!(parse_emf_line("{\"_aws\":{\"CloudWatchMetrics\":[]}}").is_none());
        assert!(parse_emf_line("[1,2]").is_none());
    }
}
