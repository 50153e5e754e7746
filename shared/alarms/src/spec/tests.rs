#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::*;

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:riffle-local-alarms";

fn infra() -> PathBuf {
    riffle_plan::project_root().unwrap().join("infra")
}

fn all() -> Vec<AlarmSpec> {
    alarms(&infra(), riffle_plan::LOCAL_ENV).unwrap()
}

fn named<'a>(all: &'a [AlarmSpec], name: &str) -> &'a AlarmSpec {
    all.iter().find(|a| a.name == name).expect(name)
}

#[test]
fn every_alarm_of_the_templates_is_read() {
    let all = all();
    assert_eq!(all.len(), 32);
    let mut names: Vec<&str> = all.iter().map(|a| a.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 32, "alarm names are unique");
    for a in &all {
        assert!(a.name.starts_with("riffle-local-"), "{}", a.name);
        // One runbook for every environment: the entry is the name without the environment.
        let anchor = a.name.replacen("riffle-local-", "riffle-", 1);
        assert!(
            a.description
                .as_deref()
                .is_some_and(|d| d.ends_with(&format!("Runbook: docs/runbook.md#{anchor}"))),
            "{}",
            a.name
        );
        assert!(a.actions_enabled, "{}", a.name);
        assert_eq!(a.alarm_actions, [TOPIC], "{}", a.name);
        assert_eq!(a.ok_actions, [TOPIC], "{}", a.name);
        assert!(a.threshold.is_finite() && a.threshold > 0.0, "{}", a.name);
        assert!(a.datapoints_to_alarm <= a.evaluation_periods, "{}", a.name);
        assert!(
            a.description
                .as_deref()
                .is_some_and(|d| d.contains("Runbook"))
        );
    }
    let per_template = |file: &str| all.iter().filter(|a| a.template.ends_with(file)).count();
    assert_eq!(per_template("platform.yaml"), 11);
    assert_eq!(per_template("services/validator.yaml"), 4);
    assert_eq!(per_template("services/aggregator.yaml"), 4);
    assert_eq!(per_template("services/view-query.yaml"), 3);
    assert_eq!(per_template("services/autoscaler.yaml"), 1);
    let math = all
        .iter()
        .filter(|a| matches!(a.metric, AlarmMetric::Math { .. }));
    assert_eq!(math.count(), 4);
}

#[test]
fn a_single_metric_alarm_is_read_exactly() {
    let all = all();
    let errors = named(&all, "riffle-local-validator-errors");
    let expected = AlarmSpec {
        logical: "ErrorsAlarm".into(),
        name: "riffle-local-validator-errors".into(),
        description: Some(
            "riffle-local-validator failed whole batches in 3 of the last 5 minutes. \
             Runbook: docs/runbook.md#riffle-validator-errors"
                .into(),
        ),
        template: infra().join("services/validator.yaml"),
        actions_enabled: true,
        alarm_actions: vec![TOPIC.into()],
        ok_actions: vec![TOPIC.into()],
        comparison: Comparison::GreaterThanOrEqual,
        threshold: 1.0,
        evaluation_periods: 5,
        datapoints_to_alarm: 3,
        treat_missing: TreatMissing::NotBreaching,
        metric: AlarmMetric::Single {
            metric: MetricId::new(
                "AWS/Lambda",
                "Errors",
                &[("FunctionName", "riffle-local-validator")],
            ),
            period_secs: 60,
            stat: Stat::Sum,
        },
    };
    assert_eq!(errors, &expected);
}

#[test]
fn thresholds_from_parameters_percentiles_and_defaults() {
    let all = all();
    let p99 = named(&all, "riffle-local-aggregator-ingest-to-view-p99");
    assert_eq!(p99.threshold, 3000.0);
    assert_eq!(p99.comparison, Comparison::GreaterThan);
    assert_eq!(
        p99.metric,
        AlarmMetric::Single {
            metric: MetricId::new(
                "Riffle",
                "IngestToViewMs",
                &[("Service", "aggregator"), ("Env", "local")]
            ),
            period_secs: 60,
            stat: Stat::Percentile(99.0),
        }
    );
    let rejects = named(&all, "riffle-local-validator-rejects");
    assert_eq!(rejects.threshold, 100.0);
    assert_eq!(
        (rejects.evaluation_periods, rejects.datapoints_to_alarm),
        (1, 1)
    );
    assert_eq!(rejects.metric.period_secs(), 300);
    let age = named(&all, "riffle-local-enricher-iterator-age");
    assert_eq!((age.evaluation_periods, age.datapoints_to_alarm), (5, 5));
}

#[test]
fn dimension_values_are_the_deployed_names() {
    let all = all();
    let dimension = |name: &str| match &named(&all, name).metric {
        AlarmMetric::Single { metric, .. } => metric.dimensions.clone(),
        AlarmMetric::Math { .. } => panic!("{name} is a math alarm"),
    };
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
    assert_eq!(
        dimension("riffle-local-validator-dlq-depth"),
        one("QueueName", "riffle-local-validator-dlq")
    );
    assert_eq!(
        dimension("riffle-local-raw-write-throttled"),
        one("StreamName", "riffle-local-raw")
    );
    assert_eq!(
        dimension("riffle-local-schema-registry-throttles"),
        one("FunctionName", "riffle-local-schema-registry")
    );
}

#[test]
fn a_math_alarm_is_read_exactly() {
    let all = all();
    let view = named(&all, "riffle-local-view-throttled");
    let stat = |id: &str, name: &str| Query {
        id: id.into(),
        label: None,
        return_data: false,
        body: QueryBody::Metric {
            metric: MetricId::new("AWS/DynamoDB", name, &[("TableName", "riffle-local-view")]),
            period_secs: 60,
            stat: Stat::Sum,
        },
    };
    let text = "FILL(reads, 0) + FILL(writes, 0)";
    let expected = AlarmMetric::Math {
        period_secs: 60,
        queries: vec![
            stat("reads", "ReadThrottleEvents"),
            stat("writes", "WriteThrottleEvents"),
            Query {
                id: "throttled".into(),
                label: Some("read and write throttle events".into()),
                return_data: true,
                body: QueryBody::Expression {
                    text: text.into(),
                    expr: math::parse(text).unwrap(),
                },
            },
        ],
        returned: "throttled".into(),
    };
    assert_eq!(view.metric, expected);
    assert_eq!((view.evaluation_periods, view.datapoints_to_alarm), (5, 3));
}

const EMPTY: Scope<'static> = Scope {
    resources: &BTreeMap::new(),
    exports: &BTreeMap::new(),
};

/// The error reading one alarm whose properties are `props` (YAML, indented by 6).
fn error_of(props: &str) -> String {
    let text = format!(
        "Parameters:\n  T:\n    Type: Number\n    Default: 7\nResources:\n  Bad:\n    Type: AWS::CloudWatch::Alarm\n    Properties:\n{props}"
    );
    let t = Template::parse(Path::new("infra/bad.yaml"), &text).unwrap();
    let err = read_alarms(&t, EMPTY).unwrap_err().to_string();
    assert!(
        err.contains("infra/bad.yaml") && err.contains("Bad"),
        "names file and resource: {err}"
    );
    err
}

const SINGLE: &str = "      Namespace: Riffle\n      MetricName: M\n      Period: 60\n      EvaluationPeriods: 1\n      ComparisonOperator: GreaterThanThreshold\n";

#[test]
fn a_well_formed_alarm_with_defaults_reads() {
    let text = format!(
        "Resources:\n  A:\n    Type: AWS::CloudWatch::Alarm\n    Properties:\n{SINGLE}      Statistic: Average\n      Threshold: 2.5\n"
    );
    let t = Template::parse(Path::new("t.yaml"), &text).unwrap();
    let [a] = read_alarms(&t, EMPTY).unwrap().try_into().unwrap();
    assert_eq!(a.name, "A");
    assert_eq!(a.datapoints_to_alarm, 1);
    assert_eq!(a.treat_missing, TreatMissing::Missing);
    assert!(a.alarm_actions.is_empty() && a.ok_actions.is_empty());
    assert_eq!(a.threshold, 2.5);
}

#[test]
fn what_cannot_be_evaluated_is_a_named_error() {
    let with = |extra: &str| error_of(&format!("{SINGLE}{extra}"));
    let e = with("      Statistic: Median\n      Threshold: 1\n");
    assert!(e.contains("Statistic `Median`"), "{e}");
    let e = with("      ExtendedStatistic: tm99\n      Threshold: 1\n");
    assert!(e.contains("ExtendedStatistic `tm99`"), "{e}");
    let e = with("      Statistic: Sum\n");
    assert!(e.contains("Threshold is required"), "{e}");
    let e = with("      Statistic: Sum\n      Threshold:\n        Ref: Nope\n");
    assert!(e.contains("Threshold: Ref Nope"), "{e}");
    let e = with("      Statistic: Sum\n      Threshold: 1\n      Unit: Count\n");
    assert!(e.contains("Unit"), "{e}");
    let e = with("      Statistic: Sum\n      Threshold: 1\n      DatapointsToAlarm: 2\n");
    assert!(e.contains("need 1 <= M <= N"), "{e}");
    let e = with("      Statistic: Sum\n      Threshold: 1\n      TreatMissingData: maybe\n");
    assert!(e.contains("TreatMissingData `maybe`"), "{e}");
    let ok = "      Statistic: Sum\n      Threshold: 1\n";
    let e = error_of(&format!(
        "{}{ok}",
        SINGLE.replace("Period: 60", "Period: 45")
    ));
    assert!(e.contains("Period 45"), "{e}");
    let upper = SINGLE.replace("GreaterThanThreshold", "GreaterThanUpperThreshold");
    let e = error_of(&format!("{upper}{ok}"));
    assert!(
        e.contains("`GreaterThanUpperThreshold` is not supported"),
        "{e}"
    );
    let e = with(
        "      Statistic: Sum\n      Threshold: 1\n      Dimensions:\n        - Name: D\n          Value:\n            Ref: Missing\n",
    );
    assert!(e.contains("Dimensions[0]: Value: Ref Missing"), "{e}");
}

/// An alarm of metric-math `queries` (YAML list items, indented by 8).
fn math_error(queries: &str) -> String {
    error_of(&format!(
        "      EvaluationPeriods: 1\n      Threshold:\n        Ref: T\n      ComparisonOperator: LessThanThreshold\n      Metrics:\n{queries}"
    ))
}

fn stat_query(id: &str, period: u32) -> String {
    format!(
        "        - Id: {id}\n          ReturnData: false\n          MetricStat:\n            Metric:\n              Namespace: N\n              MetricName: M\n            Period: {period}\n            Stat: Sum\n"
    )
}

fn expression(id: &str, text: &str) -> String {
    format!("        - Id: {id}\n          Expression: \"{text}\"\n")
}

#[test]
fn what_a_math_alarm_cannot_evaluate_is_a_named_error() {
    let a = stat_query("a", 60);
    let e = math_error(&format!("{a}{}", expression("e", "a + b")));
    assert!(e.contains("query `e` reads unknown id `b`"), "{e}");
    let e = math_error(&format!(
        "{a}{}{}",
        expression("x", "y"),
        expression("y", "x + a")
    ));
    assert!(e.contains("x, y read each other in a cycle"), "{e}");
    let e = math_error(&format!(
        "{a}{}{}",
        expression("x", "a"),
        expression("y", "a")
    ));
    assert!(e.contains("2 queries have ReturnData true"), "{e}");
    let e = math_error(&format!(
        "{a}{}{}",
        stat_query("b", 300),
        expression("e", "a + b")
    ));
    assert!(e.contains("periods differ ([60, 300])"), "{e}");
    let e = math_error(&format!("{a}{}", expression("e", "RATE(a)")));
    assert!(
        e.contains("Metrics[1]: Expression `RATE(a)`: function RATE"),
        "{e}"
    );
    let e = math_error(&format!("{a}{a}{}", expression("e", "a")));
    assert!(e.contains("Id `a` given twice"), "{e}");
    let e = math_error(&format!("{a}{}", expression("Big", "a")));
    assert!(e.contains("Id `Big`"), "{e}");
    let e = math_error(&stat_query("a", 60).replace("Stat: Sum", "Stat: p200"));
    assert!(
        e.contains("Metrics[0].MetricStat: unknown statistic `p200`"),
        "{e}"
    );
}

#[test]
fn a_math_alarm_with_a_parameter_threshold_reads() {
    let text = format!(
        "Parameters:\n  T:\n    Type: Number\n    Default: 7\nResources:\n  Ok:\n    Type: AWS::CloudWatch::Alarm\n    Properties:\n      EvaluationPeriods: 1\n      Threshold:\n        Ref: T\n      ComparisonOperator: LessThanThreshold\n      Metrics:\n{}{}",
        stat_query("a", 300),
        expression("e", "a * 2")
    );
    let t = Template::parse(Path::new("t.yaml"), &text).unwrap();
    let [a] = read_alarms(&t, EMPTY).unwrap().try_into().unwrap();
    assert_eq!(a.threshold, 7.0);
    assert_eq!(a.metric.period_secs(), 300);
    assert!(matches!(&a.metric, AlarmMetric::Math { returned, .. } if returned == "e"));
}
