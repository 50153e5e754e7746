#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::*;
use crate::model::Comparison;
use crate::source::Recorded;

/// 2026-01-01T00:00:00Z: a multiple of every period used here.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;
/// Half-way through the fifth minute after T0: a 5-minute window starts at T0.
const NOW: i64 = T0 + 4 * MINUTE + 30_000;

fn metric() -> MetricId {
    MetricId::new("Riffle", "Things", &[("Service", "test")])
}

fn alarm(stat: Stat, comparison: Comparison, threshold: f64, n: u32, m: u32) -> AlarmSpec {
    AlarmSpec {
        logical: "A".into(),
        name: "riffle-test".into(),
        description: None,
        template: PathBuf::from("t.yaml"),
        actions_enabled: true,
        alarm_actions: Vec::new(),
        ok_actions: Vec::new(),
        comparison,
        threshold,
        evaluation_periods: n,
        datapoints_to_alarm: m,
        treat_missing: TreatMissing::Missing,
        metric: AlarmMetric::Single {
            metric: metric(),
            period_secs: 60,
            stat,
        },
    }
}

fn treating(mut a: AlarmSpec, treat: TreatMissing) -> AlarmSpec {
    a.treat_missing = treat;
    a
}

/// `(ms after T0, value)` of `metric()`.
fn recorded(points: &[(i64, f64)]) -> Recorded {
    let mut r = Recorded::new();
    for (at, v) in points {
        r.record(&metric(), T0 + at, *v);
    }
    r
}

fn the_templates() -> Vec<AlarmSpec> {
    crate::alarms(
        &riffle_plan::project_root().unwrap().join("infra"),
        riffle_plan::LOCAL_ENV,
    )
    .unwrap()
}

fn named(name: &str) -> AlarmSpec {
    the_templates()
        .into_iter()
        .find(|a| a.name == name)
        .unwrap()
}

#[test]
fn three_of_five_breaching_is_alarm() {
    let a = treating(
        alarm(Stat::Sum, Comparison::GreaterThanOrEqual, 1.0, 5, 3),
        TreatMissing::NotBreaching,
    );
    let points = [
        (0, 1.0),
        (2 * MINUTE, 2.0),
        (2 * MINUTE + 1, 3.0),
        (4 * MINUTE, 1.0),
    ];
    let e = evaluate(&a, &recorded(&points), NOW);
    assert_eq!(e.datapoints, [Some(1.0), None, Some(5.0), None, Some(1.0)]);
    assert_eq!((e.state, e.breaching), (State::Alarm, 3));
    assert_eq!((e.window_start_ms, e.period_secs), (T0, 60));
    assert_eq!(
        e.to_string(),
        "ALARM: Threshold Crossed: 3 out of the last 5 datapoints [1.0, missing, 5.0, missing, 1.0] \
         were greater than or equal to the threshold (1.0) (minimum 3 datapoints for ALARM, \
         2 missing treated as not breaching)"
    );
}

#[test]
fn two_of_five_breaching_is_ok() {
    let a = treating(
        alarm(Stat::Sum, Comparison::GreaterThanOrEqual, 1.0, 5, 3),
        TreatMissing::NotBreaching,
    );
    let points = [
        (0, 1.0),
        (MINUTE, 0.0),
        (2 * MINUTE, 0.5),
        (3 * MINUTE, 0.0),
        (4 * MINUTE, 4.0),
    ];
    let e = evaluate(&a, &recorded(&points), NOW);
    assert_eq!(
        e.datapoints,
        [Some(1.0), Some(0.0), Some(0.5), Some(0.0), Some(4.0)]
    );
    assert_eq!((e.state, e.breaching), (State::Ok, 2));
    assert_eq!(
        e.reason,
        "Threshold Crossed: 2 out of the last 5 datapoints [1.0, 0.0, 0.5, 0.0, 4.0] were greater \
         than or equal to the threshold (1.0) (minimum 3 datapoints for ALARM)"
    );
}

#[test]
fn each_treatment_of_missing_data() {
    use TreatMissing::*;
    // Two of the last three periods: one breaching datapoint, then nothing.
    let base = alarm(Stat::Maximum, Comparison::GreaterThan, 10.0, 3, 2);
    let now = T0 + 2 * MINUTE + 1;
    let sparse = recorded(&[(0, 50.0)]);
    let none = recorded(&[]);
    let cases = [
        (Missing, &sparse, State::Ok, 1),
        (Ignore, &sparse, State::Ok, 1),
        (Breaching, &sparse, State::Alarm, 3),
        (NotBreaching, &sparse, State::Ok, 1),
        (Missing, &none, State::InsufficientData, 0),
        (Ignore, &none, State::InsufficientData, 0),
        (Breaching, &none, State::Alarm, 3),
        (NotBreaching, &none, State::Ok, 0),
    ];
    for (treat, source, state, breaching) in cases {
        let e = evaluate(&treating(base.clone(), treat), source, now);
        assert_eq!((e.state, e.breaching), (state, breaching), "{treat} {e}");
    }
    let e = evaluate(&treating(base.clone(), Missing), &none, now);
    assert_eq!(e.datapoints, [None, None, None]);
    assert_eq!(
        e.to_string(),
        "INSUFFICIENT_DATA: Insufficient Data: no datapoints were received for the last 3 \
         periods of 60 s (TreatMissingData missing)"
    );
    let e = evaluate(&treating(base, Breaching), &sparse, now);
    assert!(e.reason.ends_with("2 missing treated as breaching)"), "{e}");
}

#[test]
fn each_comparison_at_and_around_the_threshold() {
    use Comparison::*;
    let points = [(0, 9.0), (MINUTE, 10.0), (2 * MINUTE, 11.0)];
    let now = T0 + 2 * MINUTE + 59_999;
    for (comparison, breaching, state) in [
        (GreaterThan, 1, State::Ok),
        (GreaterThanOrEqual, 2, State::Alarm),
        (LessThan, 1, State::Ok),
        (LessThanOrEqual, 2, State::Alarm),
    ] {
        let e = evaluate(
            &alarm(Stat::Maximum, comparison, 10.0, 3, 2),
            &recorded(&points),
            now,
        );
        assert_eq!(e.datapoints, [Some(9.0), Some(10.0), Some(11.0)]);
        assert_eq!((e.state, e.breaching), (state, breaching), "{comparison:?}");
        assert!(e.reason.contains(comparison.words()), "{e}");
    }
}

#[test]
fn sum_maximum_and_p99_of_the_same_periods() {
    // Each minute: 99 values of 100 and one of 5000 (the outlier), then a minute with two.
    let mut points = Vec::new();
    for minute in 0..2 {
        let outliers = 1 + minute;
        for i in 0..100 {
            let v = if i < outliers { 5000.0 } else { 100.0 };
            points.push((minute * MINUTE + i * 100, v));
        }
    }
    let source = recorded(&points);
    let now = T0 + MINUTE + 30_000;
    let datapoints = |stat| {
        evaluate(
            &alarm(stat, Comparison::GreaterThan, 3000.0, 2, 1),
            &source,
            now,
        )
        .datapoints
    };
    assert_eq!(datapoints(Stat::Sum), [Some(14_900.0), Some(19_800.0)]);
    assert_eq!(datapoints(Stat::Maximum), [Some(5000.0), Some(5000.0)]);
    assert_eq!(
        datapoints(Stat::Percentile(99.0)),
        [Some(100.0), Some(5000.0)]
    );
    assert_eq!(datapoints(Stat::SampleCount), [Some(100.0), Some(100.0)]);
}

#[test]
fn the_p99_alarm_of_the_templates_ignores_one_outlier_in_a_hundred() {
    let a = named("riffle-local-aggregator-ingest-to-view-p99");
    let latency = MetricId::new(
        "Riffle",
        "IngestToViewMs",
        &[("Service", "aggregator"), ("Env", "local")],
    );
    let run = |outliers: i64| {
        let mut r = Recorded::new();
        for minute in 0..5 {
            for i in 0..100 {
                let v = if i < outliers { 4000.0 } else { 250.0 };
                r.record(&latency, T0 + minute * MINUTE + i * 250, v);
            }
        }
        evaluate(&a, &r, NOW)
    };
    let one = run(1);
    assert_eq!((one.state, one.breaching), (State::Ok, 0));
    assert_eq!(one.datapoints, [Some(250.0); 5]);
    let two = run(2);
    assert_eq!((two.state, two.breaching), (State::Alarm, 5));
    assert_eq!(two.datapoints, [Some(4000.0); 5]);
}

fn view_throttles(reads: &[(i64, f64)], writes: &[(i64, f64)]) -> Recorded {
    let table = [("TableName", "riffle-local-view")];
    let mut r = Recorded::new();
    for (metric, points) in [
        ("ReadThrottleEvents", reads),
        ("WriteThrottleEvents", writes),
    ] {
        for (at, v) in points {
            r.record(&MetricId::new("AWS/DynamoDB", metric, &table), T0 + at, *v);
        }
    }
    r
}

#[test]
fn the_math_alarm_fills_the_missing_side() {
    let a = named("riffle-local-view-throttled");
    // Reads throttled in minutes 0..3, writes never: FILL makes writes 0, not missing.
    let reads = [(0, 2.0), (MINUTE, 1.0), (2 * MINUTE, 4.0)];
    let e = evaluate(&a, &view_throttles(&reads, &[]), NOW);
    assert_eq!(
        e.datapoints,
        [Some(2.0), Some(1.0), Some(4.0), Some(0.0), Some(0.0)]
    );
    assert_eq!((e.state, e.breaching), (State::Alarm, 3));
    // Both sides present, added; still only two minutes throttled.
    let writes = [(MINUTE + 5, 3.0), (4 * MINUTE, 1.0)];
    let e = evaluate(&a, &view_throttles(&reads[..1], &writes), NOW);
    assert_eq!(
        e.datapoints,
        [Some(2.0), Some(3.0), Some(0.0), Some(0.0), Some(1.0)]
    );
    assert_eq!((e.state, e.breaching), (State::Alarm, 3));
    let e = evaluate(&a, &view_throttles(&[], &writes), NOW);
    assert_eq!((e.state, e.breaching), (State::Ok, 2));
    // A sample under another dimension set (per operation) is another metric.
    let mut other = Recorded::new();
    let per_op = [("TableName", "riffle-local-view"), ("Operation", "PutItem")];
    for minute in 0..5 {
        other.record(
            &MetricId::new("AWS/DynamoDB", "WriteThrottleEvents", &per_op),
            T0 + minute * MINUTE,
            9.0,
        );
    }
    let e = evaluate(&a, &other, NOW);
    assert_eq!((e.state, e.datapoints), (State::Ok, vec![Some(0.0); 5]));
}

#[test]
fn without_fill_a_missing_side_is_a_missing_datapoint() {
    let mut a = named("riffle-local-view-throttled");
    let AlarmMetric::Math { queries, .. } = &mut a.metric else {
        panic!("a math alarm");
    };
    let expr = crate::math::parse("reads + writes").unwrap();
    queries.last_mut().unwrap().body = QueryBody::Expression {
        text: "reads + writes".into(),
        expr,
    };
    let reads = [(0, 2.0), (MINUTE, 1.0), (2 * MINUTE, 4.0)];
    let writes = [(MINUTE, 3.0), (3 * MINUTE, 1.0)];
    let e = evaluate(&a, &view_throttles(&reads, &writes), NOW);
    assert_eq!(e.datapoints, [None, Some(4.0), None, None, None]);
    assert_eq!((e.state, e.breaching), (State::Ok, 1));
    assert!(
        e.reason.contains("4 missing treated as not breaching"),
        "{e}"
    );
}

#[test]
fn periods_align_to_the_epoch_and_end_now() {
    let a = alarm(Stat::Sum, Comparison::GreaterThan, 0.0, 3, 1);
    let now = T0 + 2 * MINUTE + 10_000;
    let points = [
        (-1, 1000.0),                  // before the window
        (0, 1.0),                      // first instant of the first period
        (MINUTE - 1, 2.0),             // last instant of the first period
        (MINUTE, 10.0),                // a boundary belongs to the period it starts
        (2 * MINUTE + 10_000, 100.0),  // exactly now: counted
        (2 * MINUTE + 10_001, 1000.0), // after now: not yet
    ];
    let e = evaluate(&a, &recorded(&points), now);
    assert_eq!(e.window_start_ms, T0);
    assert_eq!(e.datapoints, [Some(3.0), Some(10.0), Some(100.0)]);
    // A sample that does not belong to the metric is not read (unknown metric: missing).
    let mut other = Recorded::new();
    other.record(&MetricId::new("Riffle", "Things", &[]), now, 5.0);
    assert_eq!(evaluate(&a, &other, now).datapoints, [None, None, None]);
}

#[test]
fn the_current_partial_period_counts() {
    // Rejected, Sum over 5 minutes > 100: ten seconds into a period, 101 rejects page.
    let a = named("riffle-local-validator-rejects");
    let rejected = MetricId::new(
        "Riffle",
        "Rejected",
        &[("Service", "validator"), ("Env", "local")],
    );
    let start = T0 + 5 * 5 * MINUTE;
    let mut r = Recorded::new();
    r.record(&rejected, start - 1, 500.0);
    r.record(&rejected, start + 1_000, 60.0);
    r.record(&rejected, start + 9_000, 41.0);
    let e = evaluate(&a, &r, start + 10_000);
    assert_eq!((e.window_start_ms, e.period_secs), (start, 300));
    assert_eq!(e.datapoints, [Some(101.0)]);
    assert_eq!(e.state, State::Alarm);
    assert!(e.reason.contains("minimum 1 datapoint for ALARM"), "{e}");
    let e = evaluate(&a, &r, start + 5_000);
    assert_eq!((e.state, e.datapoints), (State::Ok, vec![Some(60.0)]));
}

#[test]
fn every_alarm_of_the_templates_evaluates_quietly_with_no_data() {
    // All are notBreaching: no data is OK, never INSUFFICIENT_DATA or ALARM.
    for a in the_templates() {
        let e = evaluate(&a, &Recorded::new(), NOW);
        assert_eq!(e.state, State::Ok, "{}: {e}", a.name);
        assert_eq!(e.datapoints.len(), a.evaluation_periods as usize);
    }
}
