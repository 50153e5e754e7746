//! `riffle alarms`' pure core: every alarm evaluated over the local metrics at one instant,
//! as [`Row`]s, then a table or JSON. No I/O: the command reads its inputs beforehand.

use std::fmt::Write as _;
use std::path::Path;

use riffle_alarms::{AlarmMetric, AlarmSpec, QueryBody, State, evaluate};
use serde_json::{Value, json};

use super::source::{Gap, LocalMetrics, metrics_of};

/// What the report is asked for, past reading its inputs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The templates folder; templates are named relative to its parent.
    pub infra: &'a Path,
    /// The instant evaluated, in epoch milliseconds.
    pub now_ms: i64,
    /// The drill: every alarm's period, in place of its template's.
    pub period_secs: Option<u32>,
    /// List only alarms in this state.
    pub state: Option<State>,
    /// JSON instead of the table.
    pub json: bool,
}

/// One alarm's evaluation, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub state: State,
    /// One per period of the window, oldest first; `None` is missing.
    pub datapoints: Vec<Option<f64>>,
    /// The evaluation's reason, or why there is nothing to evaluate.
    pub reason: String,
    /// False when the local stack measures nothing that stands for (one of) its metrics.
    pub local_source: bool,
    /// The period evaluated (the template's, or the drill's).
    pub period_secs: u32,
    pub template: String,
}

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "state": self.state.to_string(),
            "datapoints": self.datapoints,
            "reason": self.reason,
            "local_source": self.local_source,
            "period_secs": self.period_secs,
            "template": self.template,
        })
    }
}

/// The text `riffle alarms` prints for `specs` over `source`.
pub fn report(specs: &[AlarmSpec], source: &LocalMetrics, request: &Request<'_>) -> String {
    let all = rows(specs, source, request);
    let listed: Vec<&Row> = all
        .iter()
        .filter(|r| request.state.is_none_or(|s| r.state == s))
        .collect();
    if request.json {
        let rows: Vec<Value> = listed.iter().map(|r| r.to_json()).collect();
        // `{:#}`: pretty, and unlike `to_string_pretty` it cannot fail.
        return format!("{:#}\n", Value::Array(rows));
    }
    let mut out = table(&listed);
    if let Some(secs) = request.period_secs {
        let _ = writeln!(
            out,
            "drill: every alarm evaluated over periods of {secs} s instead of its template's (thresholds unscaled)"
        );
    }
    out.push_str(&summary(&all, request.state, listed.len()));
    out
}

/// Every alarm evaluated at `request.now_ms`: ALARM first, then by name.
pub fn rows(specs: &[AlarmSpec], source: &LocalMetrics, request: &Request<'_>) -> Vec<Row> {
    let mut rows: Vec<Row> = specs
        .iter()
        .map(|spec| match request.period_secs {
            Some(secs) => row(&with_period(spec, secs), source, request),
            None => row(spec, source, request),
        })
        .collect();
    rows.sort_by(|a, b| {
        let calm = |r: &Row| r.state != State::Alarm;
        calm(a).cmp(&calm(b)).then_with(|| a.name.cmp(&b.name))
    });
    rows
}

fn row(spec: &AlarmSpec, source: &LocalMetrics, request: &Request<'_>) -> Row {
    let evaluation = evaluate(spec, source, request.now_ms);
    let gaps: Vec<(String, Gap)> = metrics_of(spec)
        .into_iter()
        .filter_map(|m| source.gap(m).map(|gap| (m.to_string(), gap)))
        .collect();
    let local_source = !gaps.iter().any(|(_, g)| matches!(g, Gap::NoSource(_)));
    let template = request
        .infra
        .parent()
        .and_then(|root| spec.template.strip_prefix(root).ok())
        .unwrap_or(&spec.template);
    let mut row = Row {
        name: spec.name.clone(),
        state: evaluation.state,
        datapoints: evaluation.datapoints,
        reason: evaluation.reason,
        local_source,
        period_secs: evaluation.period_secs,
        template: template.display().to_string(),
    };
    if !gaps.is_empty() {
        // What a missing source would evaluate to (OK under notBreaching, FILL's zeros) is
        // not what the deployment would see: say there is nothing to see instead.
        row.state = State::InsufficientData;
        row.datapoints.fill(None);
        row.reason = gaps_reason(&gaps);
    }
    row
}

/// `no local source: M1, M2: why` (metrics with the same why together), and why a queue's
/// depth was not read.
fn gaps_reason(gaps: &[(String, Gap)]) -> String {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut unread: Vec<&str> = Vec::new();
    for (metric, gap) in gaps {
        match gap {
            Gap::Unread(why) => unread.push(why),
            Gap::NoSource(why) => match grouped.iter_mut().find(|(w, _)| w == why) {
                Some((_, metrics)) => metrics.push(metric),
                None => grouped.push((why, vec![metric])),
            },
        }
    }
    let no_source = grouped
        .iter()
        .map(|(why, metrics)| format!("no local source: {}: {why}", metrics.join(", ")));
    let parts: Vec<String> = no_source
        .chain(unread.iter().map(|w| (*w).to_owned()))
        .collect();
    parts.join("; ")
}

/// `spec` with every period `secs`: the drill of `--period`. The number of datapoints and
/// the threshold stay as they are.
pub fn with_period(spec: &AlarmSpec, secs: u32) -> AlarmSpec {
    let mut spec = spec.clone();
    match &mut spec.metric {
        AlarmMetric::Single { period_secs, .. } => *period_secs = secs,
        AlarmMetric::Math {
            period_secs,
            queries,
            ..
        } => {
            *period_secs = secs;
            for query in queries {
                if let QueryBody::Metric { period_secs, .. } = &mut query.body {
                    *period_secs = secs;
                }
            }
        }
    }
    spec
}

/// The table: a header row, then one line per alarm; WHY last and unpadded.
fn table(rows: &[&Row]) -> String {
    let header = ["ALARM", "STATE", "DATAPOINTS"];
    let cells: Vec<[String; 3]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.state.to_string(),
                datapoints(&r.datapoints),
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:<w2$}  WHY\n",
        header[0], header[1], header[2]
    );
    for (c, r) in cells.iter().zip(rows) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            c[0], c[1], c[2], r.reason
        );
    }
    out
}

/// `1 - 0 - 2.5`: oldest first, `-` for missing.
fn datapoints(points: &[Option<f64>]) -> String {
    let text = |v: f64| {
        // At most 3 decimals: a p99 in milliseconds needs no more to be read.
        let fixed = format!("{v:.3}");
        fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    let parts: Vec<String> = points
        .iter()
        .map(|p| p.map_or_else(|| "-".to_owned(), text))
        .collect();
    parts.join(" ")
}

/// `N alarms: a in ALARM, b OK, c without data (d with no local source)`, over every alarm
/// whatever `--state` lists.
fn summary(all: &[Row], filter: Option<State>, listed: usize) -> String {
    let count = |state: State| all.iter().filter(|r| r.state == state).count();
    let no_source = all.iter().filter(|r| !r.local_source).count();
    let mut out = format!(
        "{} alarms: {} in ALARM, {} OK, {} without data ({no_source} with no local source)",
        all.len(),
        count(State::Alarm),
        count(State::Ok),
        count(State::InsufficientData),
    );
    if let Some(state) = filter {
        let _ = write!(out, "; listed: the {listed} in {state}");
    }
    out.push('\n');
    out
}
