//! An alarm as the templates declare it, in CloudWatch's own terms.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::math::Expr;

/// One `AWS::CloudWatch::Alarm`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    /// Logical id in its template (`ErrorsAlarm`).
    pub logical: String,
    /// `AlarmName`, else the logical id (CloudFormation would generate one).
    pub name: String,
    pub description: Option<String>,
    /// The template the alarm is declared in.
    pub template: PathBuf,
    /// `ActionsEnabled` (default true).
    pub actions_enabled: bool,
    /// `AlarmActions`, resolved (see the crate docs for what a reference becomes).
    pub alarm_actions: Vec<String>,
    /// `OKActions`, resolved.
    pub ok_actions: Vec<String>,
    pub comparison: Comparison,
    pub threshold: f64,
    /// N: how many of the most recent periods are evaluated.
    pub evaluation_periods: u32,
    /// M: how many of those must breach for ALARM (default N).
    pub datapoints_to_alarm: u32,
    pub treat_missing: TreatMissing,
    pub metric: AlarmMetric,
}

/// A metric as CloudWatch keys it: an alarm matches only this exact dimension set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricId {
    pub namespace: String,
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
}

impl MetricId {
    /// A metric with the given dimensions (`[("Service", "validator")]`).
    pub fn new(namespace: &str, name: &str, dimensions: &[(&str, &str)]) -> MetricId {
        MetricId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dimensions: dimensions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

impl fmt::Display for MetricId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        let dims: Vec<String> = self
            .dimensions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(f, "{{{}}}", dims.join(","))
    }
}

/// What an alarm watches.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmMetric {
    /// `Namespace`, `MetricName`, `Dimensions`, `Statistic` or `ExtendedStatistic`, `Period`.
    Single {
        metric: MetricId,
        period_secs: u32,
        stat: Stat,
    },
    /// `Metrics`: queries, exactly one of which has `ReturnData: true` (`returned`).
    Math {
        period_secs: u32,
        queries: Vec<Query>,
        returned: String,
    },
}

impl AlarmMetric {
    /// The period of every datapoint the alarm evaluates.
    pub fn period_secs(&self) -> u32 {
        match self {
            AlarmMetric::Single { period_secs, .. } | AlarmMetric::Math { period_secs, .. } => {
                *period_secs
            }
        }
    }
}

/// One entry of an alarm's `Metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub id: String,
    pub label: Option<String>,
    pub return_data: bool,
    pub body: QueryBody,
}

impl Query {
    /// The ids of the other queries this one reads.
    pub fn reads(&self) -> Vec<&str> {
        match &self.body {
            QueryBody::Metric { .. } => Vec::new(),
            QueryBody::Expression { expr, .. } => expr.ids(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryBody {
    /// `MetricStat`: one metric, one statistic per period.
    Metric {
        metric: MetricId,
        period_secs: u32,
        stat: Stat,
    },
    /// `Expression`, as written and parsed.
    Expression { text: String, expr: Expr },
}

/// A statistic over one period's raw values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Sum,
    Maximum,
    Minimum,
    Average,
    SampleCount,
    /// `pNN` (`p99`, `p99.9`): nearest rank over the period's values.
    Percentile(f64),
}

impl Stat {
    /// `Statistic`, `ExtendedStatistic` or `MetricStat.Stat` as CloudWatch spells them.
    pub fn parse(text: &str) -> Result<Stat, String> {
        Ok(match text {
            "Sum" => Stat::Sum,
            "Maximum" => Stat::Maximum,
            "Minimum" => Stat::Minimum,
            "Average" => Stat::Average,
            "SampleCount" => Stat::SampleCount,
            _ => match text.strip_prefix('p').map(str::parse::<f64>) {
                Some(Ok(p)) if (0.0..=100.0).contains(&p) => Stat::Percentile(p),
                _ => return Err(format!("unknown statistic `{text}`")),
            },
        })
    }

    /// The statistic of one period's values; `None` when there are none (CloudWatch has no
    /// datapoint for an empty period, not even a SampleCount of 0).
    pub fn of(self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        Some(match self {
            Stat::Sum => values.iter().sum(),
            Stat::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Stat::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
            Stat::Average => values.iter().sum::<f64>() / n as f64,
            Stat::SampleCount => n as f64,
            Stat::Percentile(p) => {
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                // p * n first: exact for whole percentiles, so a whole rank is not pushed up by one.
                let rank = (p * n as f64 / 100.0).ceil() as usize;
                return sorted.get(rank.clamp(1, n) - 1).copied();
            }
        })
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stat::Sum => f.write_str("Sum"),
            Stat::Maximum => f.write_str("Maximum"),
            Stat::Minimum => f.write_str("Minimum"),
            Stat::Average => f.write_str("Average"),
            Stat::SampleCount => f.write_str("SampleCount"),
            Stat::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

/// `ComparisonOperator`; the anomaly-band operators need a model and are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
}

impl Comparison {
    pub fn parse(text: &str) -> Result<Comparison, String> {
        match text {
            "GreaterThanThreshold" => Ok(Comparison::GreaterThan),
            "GreaterThanOrEqualToThreshold" => Ok(Comparison::GreaterThanOrEqual),
            "LessThanThreshold" => Ok(Comparison::LessThan),
            "LessThanOrEqualToThreshold" => Ok(Comparison::LessThanOrEqual),
            other => Err(format!(
                "ComparisonOperator `{other}` is not supported (only the four static-threshold operators)"
            )),
        }
    }

    /// Whether a datapoint breaches the threshold.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterThan => value > threshold,
            Comparison::GreaterThanOrEqual => value >= threshold,
            Comparison::LessThan => value < threshold,
            Comparison::LessThanOrEqual => value <= threshold,
        }
    }

    /// As CloudWatch's state reasons word it.
    pub fn words(self) -> &'static str {
        match self {
            Comparison::GreaterThan => "greater than",
            Comparison::GreaterThanOrEqual => "greater than or equal to",
            Comparison::LessThan => "less than",
            Comparison::LessThanOrEqual => "less than or equal to",
        }
    }
}

/// `TreatMissingData` (default `missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreatMissing {
    #[default]
    Missing,
    Ignore,
    Breaching,
    NotBreaching,
}

impl TreatMissing {
    pub fn parse(text: &str) -> Result<TreatMissing, String> {
        match text {
            "missing" => Ok(TreatMissing::Missing),
            "ignore" => Ok(TreatMissing::Ignore),
            "breaching" => Ok(TreatMissing::Breaching),
            "notBreaching" => Ok(TreatMissing::NotBreaching),
            other => Err(format!(
                "TreatMissingData `{other}` is not one of missing, ignore, breaching, notBreaching"
            )),
        }
    }
}

impl fmt::Display for TreatMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TreatMissing::Missing => "missing",
            TreatMissing::Ignore => "ignore",
            TreatMissing::Breaching => "breaching",
            TreatMissing::NotBreaching => "notBreaching",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn statistics_parse_as_cloudwatch_spells_them() {
        assert_eq!(Stat::parse("Sum").unwrap(), Stat::Sum);
        assert_eq!(Stat::parse("p99").unwrap(), Stat::Percentile(99.0));
        assert_eq!(Stat::parse("p99.9").unwrap(), Stat::Percentile(99.9));
        assert_eq!(Stat::parse("p99").unwrap().to_string(), "p99");
        for bad in ["sum", "p101", "tm99", "p", "IQM"] {
            assert!(Stat::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statistics_of_one_period() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(Stat::Sum.of(&v), Some(10.0));
        assert_eq!(Stat::Maximum.of(&v), Some(4.0));
        assert_eq!(Stat::Minimum.of(&v), Some(1.0));
        assert_eq!(Stat::Average.of(&v), Some(2.5));
        assert_eq!(Stat::SampleCount.of(&v), Some(4.0));
        assert_eq!(Stat::Percentile(50.0).of(&v), Some(2.0));
        assert_eq!(Stat::Percentile(75.0).of(&v), Some(3.0));
        assert_eq!(Stat::Percentile(76.0).of(&v), Some(4.0));
        assert_eq!(Stat::Percentile(0.0).of(&v), Some(1.0));
        assert_eq!(Stat::SampleCount.of(&[]), None);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        // 1..=200: rank ceil(0.99 * 200) = 198.
        let v: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(Stat::Percentile(99.0).of(&v), Some(198.0));
        assert_eq!(Stat::Percentile(99.0).of(&[7.0]), Some(7.0));
    }

    #[test]
    fn comparisons_and_their_edges() {
        use Comparison::*;
        assert!(GreaterThan.breaches(2.0, 1.0) && !GreaterThan.breaches(1.0, 1.0));
        assert!(GreaterThanOrEqual.breaches(1.0, 1.0) && !GreaterThanOrEqual.breaches(0.9, 1.0));
        assert!(LessThan.breaches(0.0, 1.0) && !LessThan.breaches(1.0, 1.0));
        assert!(LessThanOrEqual.breaches(1.0, 1.0) && !LessThanOrEqual.breaches(1.1, 1.0));
        let err = Comparison::parse("LessThanLowerOrGreaterThanUpperThreshold").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        assert_eq!(
            TreatMissing::parse("notBreaching").unwrap(),
            TreatMissing::NotBreaching
        );
        assert!(TreatMissing::parse("NotBreaching").is_err());
    }
}
