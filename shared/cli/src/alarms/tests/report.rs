//! The report over the project's templates: rows, table, `--state`, JSON, the drill.

use super::super::*;
use super::{NOW, infra, line, store, wiring};
use riffle_alarms::{AlarmMetric, AlarmSpec, QueryBody};
use riffle_telemetry::names;

/// The templates' alarms, and a store where the validator's batches failed in 3 of the
/// last 5 seconds (the enricher's in none).
fn failing_validator(test: &str) -> (Vec<AlarmSpec>, LocalMetrics) {
    let errors = [(NOW - 4_000, 1), (NOW - 2_000, 2), (NOW, 1)];
    let mut lines: Vec<(&str, String)> = errors
        .iter()
        .map(|(at, n)| {
            let text = line("riffle-local-validator", *at, &[(names::BATCH_ERRORS, *n)]);
            ("riffle-local-validator", text)
        })
        .collect();
    let enricher = line("riffle-local-enricher", NOW, &[(names::BATCH_ERRORS, 0)]);
    lines.push(("riffle-local-enricher", enricher));
    let dir = store(test, &lines);
    let records = read_store(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let specs = riffle_alarms::alarms(&infra(), riffle_plan::LOCAL_ENV).unwrap();
    (
        specs,
        LocalMetrics::new(wiring(), &records, BTreeMap::new()),
    )
}

/// `--period 1` at [`NOW`].
fn drill(infra: &Path) -> Request<'_> {
    Request {
        infra,
        now_ms: NOW,
        period_secs: Some(1),
        state: None,
        json: false,
    }
}

fn find<'r>(rows: &'r [Row], name: &str) -> &'r Row {
    rows.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn a_drill_drives_the_validator_errors_alarm_into_alarm() {
    let (infra, (specs, source)) = (infra(), failing_validator("drill"));
    let rows = rows(&specs, &source, &drill(&infra));
    let errors = find(&rows, "riffle-local-validator-errors");
    assert_eq!(errors.state, State::Alarm, "{}", errors.reason);
    let datapoints = [Some(1.0), None, Some(2.0), None, Some(1.0)];
    assert_eq!(errors.datapoints, datapoints);
    assert_eq!((errors.period_secs, errors.local_source), (1, true));
    assert_eq!(errors.template, "infra/services/validator.yaml");
    assert_eq!(rows[0].name, "riffle-local-validator-errors", "ALARM first");
    let enricher = find(&rows, "riffle-local-enricher-errors");
    assert_eq!(enricher.state, State::Ok, "{}", enricher.reason);

    // Over the templates' 60 s periods the same errors are one or two datapoints: no alarm.
    let undrilled = Request {
        period_secs: None,
        ..drill(&infra)
    };
    let rows = super::rows(&specs, &source, &undrilled);
    let errors = find(&rows, "riffle-local-validator-errors");
    assert_eq!((errors.state, errors.period_secs), (State::Ok, 60));
}

#[test]
fn alarms_without_data_to_read_say_why() {
    let (infra, (specs, source)) = (infra(), failing_validator("gaps"));
    let rows = rows(&specs, &source, &drill(&infra));
    let view = find(&rows, "riffle-local-view-throttled");
    assert_eq!(
        (view.state, view.local_source),
        (State::InsufficientData, false)
    );
    let why = "no local source: AWS/DynamoDB/ReadThrottleEvents{TableName=riffle-local-view}, ";
    assert!(view.reason.starts_with(why), "{}", view.reason);
    assert!(view.datapoints.iter().all(Option::is_none));
    let dlq = find(&rows, "riffle-local-validator-dlq-depth");
    assert_eq!(
        (dlq.state, dlq.local_source),
        (State::InsufficientData, true)
    );
    assert_eq!(dlq.reason, "depth of riffle-local-validator-dlq not read");
    // Only DynamoDB throttling, the server processes' Lambda throttles and the autoscaler
    // (not run on the twin) have no local source.
    let mut no_source: Vec<&str> = rows
        .iter()
        .filter(|r| !r.local_source)
        .map(|r| r.name.as_str())
        .collect();
    no_source.sort_unstable();
    let expected = [
        "riffle-local-autoscaler-errors",
        "riffle-local-claims-throttled",
        "riffle-local-reference-throttled",
        "riffle-local-schema-registry-throttles",
        "riffle-local-schemas-throttled",
        "riffle-local-view-query-throttles",
        "riffle-local-view-throttled",
    ];
    assert_eq!(no_source, expected);
}

#[test]
fn the_table_has_a_header_a_line_per_alarm_and_a_summary() {
    let (infra, (specs, source)) = (infra(), failing_validator("table"));
    let text = report(&specs, &source, &drill(&infra));
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ALARM", "STATE", "DATAPOINTS", "WHY"]);
    let first: Vec<&str> = lines[1].split_whitespace().take(8).collect();
    let expected = "riffle-local-validator-errors ALARM 1 - 2 - 1 Threshold";
    assert_eq!(first.join(" "), expected, "{text}");
    let drill_line = "drill: every alarm evaluated over periods of 1 s";
    assert!(text.contains(drill_line), "{text}");
    let summary = lines.last().unwrap();
    let expected = format!("{} alarms: 1 in ALARM, ", specs.len());
    assert!(summary.starts_with(&expected), "{summary}");
    assert!(summary.ends_with("(7 with no local source)"), "{summary}");
    assert_eq!(lines.len(), specs.len() + 3, "{text}");
}

#[test]
fn state_filters_the_listing_and_json_has_every_field() {
    let (infra, (specs, source)) = (infra(), failing_validator("json"));
    let alarm_only = Request {
        state: Some(State::Alarm),
        ..drill(&infra)
    };
    let text = report(&specs, &source, &alarm_only);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.ends_with("; listed: the 1 in ALARM\n"), "{text}");

    let json = Request {
        json: true,
        ..drill(&infra)
    };
    let parsed: serde_json::Value = serde_json::from_str(&report(&specs, &source, &json)).unwrap();
    let rows = parsed.as_array().unwrap();
    assert_eq!(rows.len(), specs.len());
    let first = &rows[0];
    assert_eq!(first["name"], "riffle-local-validator-errors");
    assert_eq!(first["state"], "ALARM");
    let datapoints = serde_json::json!([1.0, null, 2.0, null, 1.0]);
    assert_eq!(first["datapoints"], datapoints);
    assert_eq!(first["local_source"], true);
    assert_eq!(first["period_secs"], 1);
    assert_eq!(first["template"], "infra/services/validator.yaml");
    let reason = first["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Threshold Crossed: 3 out of the last 5"),
        "{reason}"
    );
    let filtered = Request {
        state: Some(State::Alarm),
        ..json
    };
    let parsed: serde_json::Value =
        serde_json::from_str(&report(&specs, &source, &filtered)).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 1);
}

#[test]
fn a_drill_sets_every_period_of_metric_math_too() {
    let specs = riffle_alarms::alarms(&infra(), riffle_plan::LOCAL_ENV).unwrap();
    let math = specs
        .iter()
        .find(|s| s.name == "riffle-local-view-throttled")
        .unwrap();
    let drilled = with_period(math, 10);
    let AlarmMetric::Math {
        period_secs,
        queries,
        ..
    } = &drilled.metric
    else {
        panic!("not metric math");
    };
    assert_eq!(*period_secs, 10);
    for q in queries {
        if let QueryBody::Metric { period_secs, .. } = &q.body {
            assert_eq!(*period_secs, 10, "{}", q.id);
        }
    }
    let kept = (drilled.threshold, drilled.evaluation_periods);
    assert_eq!(kept, (math.threshold, math.evaluation_periods));
}
