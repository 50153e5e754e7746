//! Evaluating an alarm over samples, the way CloudWatch does.
//!
//! - Periods are aligned to multiples of the period since the Unix epoch (a sample exactly
//!   on a boundary belongs to the period that starts there).
//! - The window is the last `evaluation_periods` periods ending at `now`, the last of them
//!   the current, still partial, period. CloudWatch waits for a period to fill before it
//!   rates it; counting the partial one lets a local run see an alarm fire without waiting
//!   a whole period, at the price of reading a period whose Sum may still grow.
//! - A period's datapoint is the statistic over its samples; a period without samples is
//!   missing. A metric-math alarm combines its queries' datapoints period by period.
//! - M of N: ALARM when at least `datapoints_to_alarm` datapoints breach, else OK, with
//!   missing datapoints treated as `TreatMissingData` says:
//!   - `missing`: only present datapoints count; none present is INSUFFICIENT_DATA;
//!   - `ignore`: CloudWatch keeps the previous state; this evaluation is stateless, so it
//!     is `missing` (none present is INSUFFICIENT_DATA, standing for "unchanged");
//!   - `breaching` / `notBreaching`: a missing datapoint counts as breaching / not.
//!
//! Not modelled: CloudWatch's look-back beyond the window when datapoints are missing, and
//! its rule that alarms on `AWS/DynamoDB` metrics always ignore missing data. The table
//! alarms of the templates FILL both of their metrics, so here no datapoint of theirs is
//! ever missing.

use std::collections::BTreeMap;
use std::fmt;

use crate::math;
use crate::model::{AlarmMetric, AlarmSpec, MetricId, Query, QueryBody, Stat, TreatMissing};
use crate::source::MetricSource;

/// An alarm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Alarm,
    Ok,
    InsufficientData,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Alarm => "ALARM",
            State::Ok => "OK",
            State::InsufficientData => "INSUFFICIENT_DATA",
        })
    }
}

/// One evaluation of one alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub state: State,
    /// Start of the oldest period of the window, in epoch milliseconds.
    pub window_start_ms: i64,
    pub period_secs: u32,
    /// One per period of the window, oldest first; `None` is missing.
    pub datapoints: Vec<Option<f64>>,
    /// Breaching datapoints, counting missing ones treated as breaching.
    pub breaching: usize,
    /// Why, in the words of CloudWatch's state reason.
    pub reason: String,
}

/// `ALARM: Threshold Crossed: 3 out of the last 5 datapoints [...] were ...`.
impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.state, self.reason)
    }
}

/// Evaluates `alarm` over `source` at `now_ms` (epoch milliseconds). The window's last
/// period is the current, partial one (unlike CloudWatch, which rates complete periods), so
/// a local test need not wait a whole period; see the module docs for the rest.
pub fn evaluate(alarm: &AlarmSpec, source: &dyn MetricSource, now_ms: i64) -> Evaluation {
    let window = Window::new(alarm.metric.period_secs(), alarm.evaluation_periods, now_ms);
    let datapoints = match &alarm.metric {
        AlarmMetric::Single { metric, stat, .. } => window.series(source, metric, *stat),
        AlarmMetric::Math {
            queries, returned, ..
        } => window.math(source, queries, returned),
    };
    judge(alarm, &window, datapoints)
}

/// The periods an evaluation reads.
struct Window {
    start_ms: i64,
    period_ms: i64,
    len: usize,
    now_ms: i64,
}

impl Window {
    fn new(period_secs: u32, periods: u32, now_ms: i64) -> Window {
        let period_ms = i64::from(period_secs.max(1)) * 1000;
        let current = now_ms.div_euclid(period_ms) * period_ms;
        let earlier = i64::from(periods.max(1) - 1).saturating_mul(period_ms);
        Window {
            start_ms: current.saturating_sub(earlier),
            period_ms,
            len: periods.max(1) as usize,
            now_ms,
        }
    }

    /// One statistic per period over the metric's samples.
    fn series(&self, source: &dyn MetricSource, metric: &MetricId, stat: Stat) -> Vec<Option<f64>> {
        let mut periods: Vec<Vec<f64>> = vec![Vec::new(); self.len];
        let to_ms = self.now_ms.saturating_add(1);
        for sample in source.samples(metric, self.start_ms, to_ms) {
            if !sample.value.is_finite() || !(self.start_ms..to_ms).contains(&sample.at_ms) {
                continue;
            }
            let index = (sample.at_ms - self.start_ms) / self.period_ms;
            if let Some(values) = usize::try_from(index).ok().and_then(|i| periods.get_mut(i)) {
                values.push(sample.value);
            }
        }
        periods.iter().map(|values| stat.of(values)).collect()
    }

    /// The returned query's series; reading the alarm checked that every id resolves.
    fn math(
        &self,
        source: &dyn MetricSource,
        queries: &[Query],
        returned: &str,
    ) -> Vec<Option<f64>> {
        let nodes: Vec<(&str, Vec<&str>)> =
            queries.iter().map(|q| (q.id.as_str(), q.reads())).collect();
        let mut series: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
        for query in math::order(&nodes)
            .0
            .into_iter()
            .filter_map(|i| queries.get(i))
        {
            let values = match &query.body {
                QueryBody::Metric { metric, stat, .. } => self.series(source, metric, *stat),
                QueryBody::Expression { expr, .. } => expr.eval(&series, self.len),
            };
            series.insert(query.id.clone(), values);
        }
        series
            .remove(returned)
            .unwrap_or_else(|| vec![None; self.len])
    }
}

fn judge(alarm: &AlarmSpec, window: &Window, datapoints: Vec<Option<f64>>) -> Evaluation {
    let breaches = |v: &f64| alarm.comparison.breaches(*v, alarm.threshold);
    let present = datapoints.iter().flatten().count();
    let missing = datapoints.len() - present;
    let mut breaching = datapoints.iter().flatten().filter(|v| breaches(v)).count();
    if alarm.treat_missing == TreatMissing::Breaching {
        breaching += missing;
    }
    let unknown = matches!(
        alarm.treat_missing,
        TreatMissing::Missing | TreatMissing::Ignore
    );
    let state = if present == 0 && unknown {
        State::InsufficientData
    } else if breaching >= alarm.datapoints_to_alarm as usize {
        State::Alarm
    } else {
        State::Ok
    };
    let reason = reason(alarm, state, &datapoints, breaching);
    Evaluation {
        state,
        window_start_ms: window.start_ms,
        period_secs: alarm.metric.period_secs(),
        datapoints,
        breaching,
        reason,
    }
}

fn reason(alarm: &AlarmSpec, state: State, datapoints: &[Option<f64>], breaching: usize) -> String {
    let n = datapoints.len();
    let missing = datapoints.iter().filter(|d| d.is_none()).count();
    if state == State::InsufficientData {
        return format!(
            "Insufficient Data: no datapoints were received for the last {n} periods of {} s (TreatMissingData {})",
            alarm.metric.period_secs(),
            alarm.treat_missing
        );
    }
    let listed: Vec<String> = datapoints
        .iter()
        .map(|d| d.map_or("missing".to_owned(), |v| format!("{v:?}")))
        .collect();
    let m = alarm.datapoints_to_alarm;
    let treated = match (missing, alarm.treat_missing) {
        (0, _) => String::new(),
        (_, TreatMissing::Breaching) => format!(", {missing} missing treated as breaching"),
        (_, TreatMissing::NotBreaching) => format!(", {missing} missing treated as not breaching"),
        (_, _) => format!(", {missing} missing not counted"),
    };
    format!(
        "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] {} {} the threshold ({:?}) (minimum {m} datapoint{} for ALARM{treated})",
        listed.join(", "),
        if breaching == 1 { "was" } else { "were" },
        alarm.comparison.words(),
        alarm.threshold,
        if m == 1 { "" } else { "s" },
    )
}

#[cfg(test)]
mod tests;
