//! Reading the `AWS::CloudWatch::Alarm` resources of the templates into [`AlarmSpec`]s.
//!
//! Everything the evaluation relies on is checked here, once: an alarm this crate cannot
//! evaluate the way CloudWatch would is an error naming its file and resource, never a
//! guess.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;

use riffle_plan::PlanError;
use riffle_plan::template::{Scope, Template};
use serde_yaml_ng::{Mapping, Value};

use crate::error::AlarmsError;
use crate::math;
use crate::model::*;
use crate::names;

/// The CloudFormation type read.
pub const ALARM_TYPE: &str = "AWS::CloudWatch::Alarm";
/// CloudWatch periods: 10 or 30 s (high resolution), else a multiple of 60 s.
pub const HIGH_RESOLUTION_PERIODS_SECS: [u32; 2] = [10, 30];
pub const PERIOD_STEP_SECS: u32 = 60;
/// CloudWatch limit: dimensions per metric.
pub const MAX_DIMENSIONS: usize = 30;

/// Properties that change what CloudWatch compares, which this crate does not model.
const UNSUPPORTED: [(&str, &str); 2] = [
    ("Unit", "a unit filter"),
    ("ThresholdMetricId", "an anomaly-detection band"),
];

/// Every alarm of `infra_dir/platform.yaml` and `infra_dir/services/*.yaml` (the templates
/// `riffle_plan::plan` reads), in that order, each template's by logical id, with the names
/// they have in environment `env` (the local twin's is `riffle_plan::LOCAL_ENV`).
pub fn alarms(infra_dir: &Path, env: &str) -> Result<Vec<AlarmSpec>, AlarmsError> {
    let plan = riffle_plan::plan(infra_dir, env)?;
    let platform_names = names::platform(&plan)?;
    let exports = names::exports(&plan.platform, &platform_names);
    let scope = Scope {
        resources: &platform_names,
        exports: &exports,
    };
    let mut out = read_alarms(&plan.platform, scope)?;
    for service in &plan.services {
        let function = names::service(service);
        let scope = Scope {
            resources: &function,
            exports: &exports,
        };
        out.extend(read_alarms(&service.template, scope)?);
    }
    Ok(out)
}

/// The alarms of one template; references resolve through `scope`.
pub fn read_alarms(template: &Template, scope: Scope<'_>) -> Result<Vec<AlarmSpec>, AlarmsError> {
    template
        .resources_of(ALARM_TYPE)
        .map(|(logical, r)| {
            let reader = Reader {
                t: template,
                logical,
                scope,
                at: String::new(),
            };
            reader.alarm(&r.properties)
        })
        .collect()
}

/// Reads one alarm's properties; `at` is where in them, for errors.
struct Reader<'a> {
    t: &'a Template,
    logical: &'a str,
    scope: Scope<'a>,
    at: String,
}

impl<'a> Reader<'a> {
    fn within(&self, part: &str) -> Reader<'a> {
        let at = match self.at.as_str() {
            "" => part.to_owned(),
            outer => format!("{outer}.{part}"),
        };
        Reader { at, ..*self }
    }

    fn placed(&self, message: impl Display) -> String {
        match self.at.as_str() {
            "" => message.to_string(),
            at => format!("{at}: {message}"),
        }
    }

    fn bad(&self, message: impl Display) -> AlarmsError {
        AlarmsError::Alarm {
            file: self.t.file().to_path_buf(),
            resource: self.logical.to_owned(),
            message: self.placed(message),
        }
    }

    fn plan(&self, e: PlanError) -> AlarmsError {
        match e {
            PlanError::Template {
                file,
                resource,
                message,
            } => PlanError::Template {
                file,
                resource,
                message: self.placed(message),
            }
            .into(),
            other => other.into(),
        }
    }

    fn text(&self, m: &Mapping, name: &str) -> Result<Option<String>, AlarmsError> {
        let value = self.t.prop(self.logical, m, name, self.scope);
        value.map_err(|e| self.plan(e))
    }

    fn need_text(&self, m: &Mapping, name: &str) -> Result<String, AlarmsError> {
        self.text(m, name)?
            .ok_or_else(|| self.bad(format!("{name} is required")))
    }

    fn need_number<T: FromStr>(&self, m: &Mapping, name: &str) -> Result<T, AlarmsError> {
        let value = self.t.number(self.logical, m, name, self.scope);
        value
            .map_err(|e| self.plan(e))?
            .ok_or_else(|| self.bad(format!("{name} is required")))
    }

    fn mapping<'v>(&self, v: Option<&'v Value>, what: &str) -> Result<&'v Mapping, AlarmsError> {
        v.and_then(Value::as_mapping)
            .ok_or_else(|| self.bad(format!("{what} is required as a mapping")))
    }

    fn alarm(&self, p: &Mapping) -> Result<AlarmSpec, AlarmsError> {
        self.reject_unsupported(p)?;
        let evaluation_periods: u32 = self.need_number(p, "EvaluationPeriods")?;
        let datapoints_to_alarm = match p.contains_key("DatapointsToAlarm") {
            true => self.need_number(p, "DatapointsToAlarm")?,
            false => evaluation_periods,
        };
        if !(1..=evaluation_periods).contains(&datapoints_to_alarm) {
            return Err(self.bad(format!(
                "DatapointsToAlarm {datapoints_to_alarm} of EvaluationPeriods {evaluation_periods}: need 1 <= M <= N"
            )));
        }
        let threshold: f64 = self.need_number(p, "Threshold")?;
        if !threshold.is_finite() {
            return Err(self.bad(format!("Threshold {threshold} is not a finite number")));
        }
        let comparison = self.need_text(p, "ComparisonOperator")?;
        let treat_missing = match self.text(p, "TreatMissingData")? {
            Some(text) => TreatMissing::parse(&text).map_err(|m| self.bad(m))?,
            None => TreatMissing::default(),
        };
        Ok(AlarmSpec {
            logical: self.logical.to_owned(),
            name: self
                .text(p, "AlarmName")?
                .unwrap_or_else(|| self.logical.to_owned()),
            description: self.text(p, "AlarmDescription")?,
            template: self.t.file().to_path_buf(),
            actions_enabled: self.text(p, "ActionsEnabled")?.as_deref() != Some("false"),
            alarm_actions: self.actions(p, "AlarmActions")?,
            ok_actions: self.actions(p, "OKActions")?,
            comparison: Comparison::parse(&comparison).map_err(|m| self.bad(m))?,
            threshold,
            evaluation_periods,
            datapoints_to_alarm,
            treat_missing,
            metric: match p.contains_key("Metrics") {
                true => self.math(p)?,
                false => self.single(p)?,
            },
        })
    }

    fn reject_unsupported(&self, p: &Mapping) -> Result<(), AlarmsError> {
        for (name, what) in UNSUPPORTED {
            if p.contains_key(name) {
                return Err(self.bad(format!("{name} ({what}) is not supported")));
            }
        }
        // Only `evaluate` (the default) rates every period; `ignore` keeps a state this
        // stateless evaluation does not have.
        match self.text(p, "EvaluateLowSampleCountPercentile")?.as_deref() {
            None | Some("evaluate") => Ok(()),
            Some(other) => Err(self.bad(format!(
                "EvaluateLowSampleCountPercentile `{other}` is not supported (only evaluate)"
            ))),
        }
    }

    fn actions(&self, p: &Mapping, name: &str) -> Result<Vec<String>, AlarmsError> {
        let list = match p.get(name) {
            None => return Ok(Vec::new()),
            Some(Value::Sequence(list)) => list,
            Some(_) => return Err(self.bad(format!("{name} is not a list"))),
        };
        let at = self.within(name);
        let eval = |v| self.t.eval(v, self.scope).map_err(|m| at.bad(m));
        list.iter().map(eval).collect()
    }

    fn period(&self, m: &Mapping) -> Result<u32, AlarmsError> {
        let secs: u32 = self.need_number(m, "Period")?;
        let valid = HIGH_RESOLUTION_PERIODS_SECS.contains(&secs)
            || (secs > 0 && secs.is_multiple_of(PERIOD_STEP_SECS));
        match valid {
            true => Ok(secs),
            false => Err(self.bad(format!(
                "Period {secs} is not 10, 30 or a multiple of {PERIOD_STEP_SECS}"
            ))),
        }
    }

    fn single(&self, p: &Mapping) -> Result<AlarmMetric, AlarmsError> {
        let stat = match (
            self.text(p, "Statistic")?,
            self.text(p, "ExtendedStatistic")?,
        ) {
            (Some(s), None) => Stat::parse(&s)
                .ok()
                .filter(|s| !matches!(s, Stat::Percentile(_)))
                .ok_or_else(|| self.bad(format!("Statistic `{s}` is not a statistic")))?,
            (None, Some(s)) => Stat::parse(&s)
                .ok()
                .filter(|s| matches!(s, Stat::Percentile(_)))
                .ok_or_else(|| self.bad(format!("ExtendedStatistic `{s}` is not a percentile")))?,
            (Some(_), Some(_)) => return Err(self.bad("both Statistic and ExtendedStatistic")),
            (None, None) => {
                return Err(self.bad("no Statistic, ExtendedStatistic or Metrics"));
            }
        };
        Ok(AlarmMetric::Single {
            metric: self.metric_id(p)?,
            period_secs: self.period(p)?,
            stat,
        })
    }

    fn metric_id(&self, m: &Mapping) -> Result<MetricId, AlarmsError> {
        let list = match m.get("Dimensions") {
            None => &[][..],
            Some(Value::Sequence(list)) => list.as_slice(),
            Some(_) => return Err(self.bad("Dimensions is not a list")),
        };
        let mut dimensions = BTreeMap::new();
        for (i, d) in list.iter().enumerate() {
            let at = self.within(&format!("Dimensions[{i}]"));
            let d = at.mapping(Some(d), "a dimension")?;
            let name = at.need_text(d, "Name")?;
            if dimensions
                .insert(name.clone(), at.need_text(d, "Value")?)
                .is_some()
            {
                return Err(at.bad(format!("dimension {name} given twice")));
            }
        }
        if dimensions.len() > MAX_DIMENSIONS {
            return Err(self.bad(format!("more than {MAX_DIMENSIONS} dimensions")));
        }
        Ok(MetricId {
            namespace: self.need_text(m, "Namespace")?,
            name: self.need_text(m, "MetricName")?,
            dimensions,
        })
    }

    fn math(&self, p: &Mapping) -> Result<AlarmMetric, AlarmsError> {
        let single = [
            "Namespace",
            "MetricName",
            "Dimensions",
            "Statistic",
            "ExtendedStatistic",
            "Period",
        ];
        if let Some(key) = single.iter().find(|k| p.contains_key(**k)) {
            return Err(self.bad(format!("Metrics and {key} together")));
        }
        let Some(Value::Sequence(list)) = p.get("Metrics") else {
            return Err(self.bad("Metrics is not a list"));
        };
        let queries = list
            .iter()
            .enumerate()
            .map(|(i, q)| self.within(&format!("Metrics[{i}]")).query(q))
            .collect::<Result<Vec<Query>, AlarmsError>>()?;
        let (returned, period_secs) = self.within("Metrics").check_queries(&queries)?;
        Ok(AlarmMetric::Math {
            period_secs,
            queries,
            returned,
        })
    }

    fn query(&self, q: &Value) -> Result<Query, AlarmsError> {
        let q = self.mapping(Some(q), "a query")?;
        let id = self.need_text(q, "Id")?;
        let id_ok = id.starts_with(|c: char| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !id_ok {
            return Err(self.bad(format!(
                "Id `{id}` must start with a lowercase letter and hold only letters, digits and _"
            )));
        }
        let return_data = match self.text(q, "ReturnData")?.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(self.bad(format!("ReturnData `{other}` is not a boolean"))),
        };
        let body = match (q.get("MetricStat"), self.text(q, "Expression")?) {
            (Some(stat), None) => self.within("MetricStat").metric_stat(stat)?,
            (None, Some(text)) => QueryBody::Expression {
                expr: math::parse(&text)
                    .map_err(|m| self.bad(format!("Expression `{text}`: {m}")))?,
                text,
            },
            _ => return Err(self.bad("needs exactly one of MetricStat and Expression")),
        };
        Ok(Query {
            id,
            label: self.text(q, "Label")?,
            return_data,
            body,
        })
    }

    fn metric_stat(&self, v: &Value) -> Result<QueryBody, AlarmsError> {
        let m = self.mapping(Some(v), "MetricStat")?;
        if m.contains_key("Unit") {
            return Err(self.bad("Unit (a unit filter) is not supported"));
        }
        let metric = self.mapping(m.get("Metric"), "Metric")?;
        let stat = self.need_text(m, "Stat")?;
        Ok(QueryBody::Metric {
            metric: self.within("Metric").metric_id(metric)?,
            period_secs: self.period(m)?,
            stat: Stat::parse(&stat).map_err(|e| self.bad(e))?,
        })
    }

    /// Ids unique and resolvable, one query returned, one period: the returned id and it.
    fn check_queries(&self, queries: &[Query]) -> Result<(String, u32), AlarmsError> {
        let mut ids = BTreeSet::new();
        for q in queries {
            if !ids.insert(q.id.as_str()) {
                return Err(self.bad(format!("Id `{}` given twice", q.id)));
            }
        }
        for q in queries {
            if let Some(unknown) = q.reads().into_iter().find(|d| !ids.contains(d)) {
                return Err(self.bad(format!("query `{}` reads unknown id `{unknown}`", q.id)));
            }
        }
        let nodes: Vec<(&str, Vec<&str>)> =
            queries.iter().map(|q| (q.id.as_str(), q.reads())).collect();
        let (_, stuck) = math::order(&nodes);
        if !stuck.is_empty() {
            return Err(self.bad(format!(
                "queries {} read each other in a cycle",
                stuck.join(", ")
            )));
        }
        let returned: Vec<&Query> = queries.iter().filter(|q| q.return_data).collect();
        let [returned] = returned.as_slice() else {
            return Err(self.bad(format!(
                "{} queries have ReturnData true; an alarm needs exactly one",
                returned.len()
            )));
        };
        let periods: BTreeSet<u32> = queries
            .iter()
            .filter_map(|q| match q.body {
                QueryBody::Metric { period_secs, .. } => Some(period_secs),
                QueryBody::Expression { .. } => None,
            })
            .collect();
        match periods.into_iter().collect::<Vec<u32>>().as_slice() {
            [period] => Ok((returned.id.clone(), *period)),
            [] => Err(self.bad("no MetricStat query")),
            many => Err(self.bad(format!(
                "MetricStat periods differ ({many:?}); an alarm evaluates one period"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
