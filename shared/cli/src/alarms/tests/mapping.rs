//! The mapping: a metrics store of several services, read through [`LocalMetrics`].

use super::super::source::*;
use super::super::*;
use super::{NOW, infra, line, line_in, store, wiring};
use riffle_alarms::{MetricId, MetricSource};
use riffle_telemetry::names;

/// An `IteratorAgeMs` array, as the local runtime prints it: one pair per element.
const ITERATOR_AGE_LINE: &str = concat!(
    r#"{"_aws":{"Timestamp":1800000000000,"CloudWatchMetrics":[{"Namespace":"Riffle","#,
    r#""Dimensions":[["Service","Env"]],"Metrics":[{"Name":"IteratorAgeMs","Unit":"Milliseconds"}]}]},"#,
    r#""Service":"riffle-local-validator","Env":"local","IteratorAgeMs":[100,250]}"#
);

/// A line to write: service, time, counters.
type Line = (&'static str, i64, &'static [(&'static str, u64)]);

/// A store of the local runtime's lines (function names), the stages' (short names), the
/// registry's and the producers', read back with two queue depths: one read, one not.
fn source(test: &str) -> LocalMetrics {
    let lines: [Line; 7] = [
        ("validator", NOW - 1_000, &[(names::REJECTED, 3)]),
        ("validator", NOW, &[(names::KINESIS_WRITE_THROTTLED, 1)]),
        (
            "riffle-local-validator",
            NOW - 2_000,
            &[
                (names::BATCH_ERRORS, 1),
                (names::THROTTLES, 2),
                (names::KINESIS_WRITE_THROTTLED, 4),
            ],
        ),
        (
            "riffle-local-enricher",
            NOW,
            &[(names::KINESIS_WRITE_THROTTLED, 5)],
        ),
        // Long before the window: never read.
        (
            "riffle-local-enricher",
            NOW - 3_600_000,
            &[(names::BATCH_ERRORS, 9)],
        ),
        (
            PRODUCER_SERVICE,
            NOW,
            &[(names::KINESIS_WRITE_THROTTLED, 7)],
        ),
        (REGISTRY_SERVICE, NOW, &[(names::SERVER_ERRORS, 2)]),
    ];
    let mut lines: Vec<(&str, String)> = lines
        .iter()
        .map(|(service, at, counts)| (*service, line(service, *at, counts)))
        .collect();
    lines.push(("riffle-local-validator", ITERATOR_AGE_LINE.to_owned()));
    // Another environment's line in the same store: never this environment's samples.
    let staging = line_in("staging", "validator", NOW - 500, &[(names::REJECTED, 100)]);
    lines.push(("validator-staging", staging));
    let dir = store(test, &lines);
    let records = read_store(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let depth = Sample {
        at_ms: NOW,
        value: 3.0,
    };
    let queues = BTreeMap::from([
        ("riffle-local-validator-dlq".to_owned(), Ok(depth)),
        (
            "riffle-local-enricher-dlq".to_owned(),
            Err("GetQueueUrl: DispatchFailure".to_owned()),
        ),
    ]);
    LocalMetrics::new(wiring(), &records, queues)
}

/// The values of `metric` in the last minute, sorted.
fn values(source: &LocalMetrics, metric: &MetricId) -> Vec<f64> {
    let mut v: Vec<f64> = source
        .samples(metric, NOW - 60_000, NOW + 1)
        .iter()
        .map(|s| s.value)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn no_source(source: &LocalMetrics, metric: &MetricId) -> bool {
    values(source, metric).is_empty() && matches!(source.gap(metric), Some(Gap::NoSource(_)))
}

fn lambda(name: &str, function: &str) -> MetricId {
    MetricId::new(LAMBDA, name, &[("FunctionName", function)])
}

#[test]
fn riffle_and_lambda_metrics_are_the_services_own() {
    let source = source("lambda");
    let env = riffle_plan::LOCAL_ENV;
    let rejected = MetricId::new(
        "Riffle",
        names::REJECTED,
        &[("Service", "validator"), ("Env", env)],
    );
    assert_eq!(values(&source, &rejected), [3.0], "staging's 100 left out");
    assert_eq!(source.gap(&rejected), None);
    for dimensions in [
        vec![("Service", "validator"), ("Stage", "x")],
        vec![("Service", "validator")],
        vec![("Service", "validator"), ("Env", "staging")],
        vec![("Service", "validator"), ("Env", env), ("Stage", "x")],
    ] {
        let metric = MetricId::new("Riffle", names::REJECTED, &dimensions);
        assert!(no_source(&source, &metric), "{dimensions:?}");
    }

    assert_eq!(
        values(&source, &lambda("Errors", "riffle-local-validator")),
        [1.0]
    );
    let iterator_age = values(&source, &lambda("IteratorAge", "riffle-local-validator"));
    assert_eq!(iterator_age, [100.0, 250.0]);
    assert_eq!(
        values(&source, &lambda("Throttles", "riffle-local-validator")),
        [2.0]
    );
    let old = values(&source, &lambda("Errors", "riffle-local-enricher"));
    assert!(old.is_empty(), "out of range: {old:?}");
    assert!(no_source(
        &source,
        &lambda("Duration", "riffle-local-validator")
    ));
    // The registry is a server locally: a 5xx answer is its failed invocation.
    let registry = "riffle-local-schema-registry";
    assert_eq!(values(&source, &lambda("Errors", registry)), [2.0]);
    assert!(no_source(&source, &lambda("Throttles", registry)));
}

#[test]
fn streams_queues_and_tables() {
    let source = source("aws");
    let stream = |s| MetricId::new(KINESIS, WRITE_THROTTLED, &[("StreamName", s)]);
    let validated = values(&source, &stream("riffle-local-validated"));
    assert_eq!(validated, [1.0, 4.0], "its writer under both names");
    assert_eq!(values(&source, &stream("riffle-local-enriched")), [5.0]);
    assert_eq!(
        values(&source, &stream("riffle-local-raw")),
        [7.0],
        "the producers"
    );
    assert!(no_source(&source, &stream("riffle-nowhere")));

    let queue = |q| MetricId::new(SQS, QUEUE_DEPTH, &[("QueueName", q)]);
    assert_eq!(values(&source, &queue("riffle-local-validator-dlq")), [3.0]);
    assert_eq!(source.gap(&queue("riffle-local-validator-dlq")), None);
    for unread in ["riffle-local-enricher-dlq", "riffle-local-archiver-dlq"] {
        assert!(values(&source, &queue(unread)).is_empty());
        let gap = source.gap(&queue(unread));
        assert!(matches!(gap, Some(Gap::Unread(_))), "{unread}: {gap:?}");
    }

    let table = [("TableName", "riffle-local-view")];
    assert!(no_source(
        &source,
        &MetricId::new(DYNAMODB, "ReadThrottleEvents", &table)
    ));
    assert!(no_source(
        &source,
        &MetricId::new("AWS/S3", "5xxErrors", &[])
    ));
}

#[test]
fn the_wiring_is_the_plan_s() {
    let w = wiring();
    let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(
        w.stream_writers["riffle-local-raw"],
        set(&[PRODUCER_SERVICE])
    );
    let validated = set(&["riffle-local-validator", "validator"]);
    assert_eq!(w.stream_writers["riffle-local-validated"], validated);
    let enriched = set(&["enricher", "riffle-local-enricher"]);
    assert_eq!(w.stream_writers["riffle-local-enriched"], enriched);
    assert_eq!(w.stream_writers.len(), 3);
    let registry = (
        "riffle-local-schema-registry".to_owned(),
        REGISTRY_SERVICE.to_owned(),
    );
    let query = (
        "riffle-local-view-query".to_owned(),
        VIEW_QUERY_SERVICE.to_owned(),
    );
    assert_eq!(w.servers, BTreeMap::from([registry, query]));
    assert_eq!(
        w.absent,
        BTreeSet::from(["riffle-local-autoscaler".to_owned()])
    );

    // The AWS names mapped are the ones the templates' test knows.
    let known = |ns: &str, name: &str| {
        names::AWS_METRICS
            .iter()
            .any(|(n, list)| *n == ns && list.contains(&name))
    };
    for (ns, name) in [
        (LAMBDA, LAMBDA_ERRORS),
        (LAMBDA, LAMBDA_ITERATOR_AGE),
        (LAMBDA, LAMBDA_THROTTLES),
        (SQS, QUEUE_DEPTH),
        (KINESIS, WRITE_THROTTLED),
    ] {
        assert!(known(ns, name), "{ns}/{name}");
    }
    // The queues the alarms watch are the plan's dead-letter queues.
    let specs = riffle_alarms::alarms(&infra(), riffle_plan::LOCAL_ENV).unwrap();
    let plan = riffle_plan::plan(&infra(), riffle_plan::LOCAL_ENV).unwrap();
    let dlqs: BTreeSet<String> = plan
        .queues
        .iter()
        .map(|q| q.name.clone())
        .filter(|q| q.ends_with("-dlq"))
        .collect();
    assert_eq!(queues_named(&specs, &w), dlqs);
}
