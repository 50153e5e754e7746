//! Every metric name Riffle emits, one definition each: the services and the runtime emit
//! them, the local harness reads them back, and the templates' alarms and dashboard name
//! them. Tests hold the templates to this list (and to [`AWS_METRICS`] for AWS's own), and
//! every alarm to the alarm topic and to its entry in `docs/runbook.md`.

/// Records handed to a stage's handler (per stage).
pub const RECORDS_IN: &str = "RecordsIn";
/// Records a stage passed on to its output stream.
pub const RECORDS_OUT: &str = "RecordsOut";
/// Records the validator rejected (to the rejects queue).
pub const REJECTED: &str = "Rejected";
/// Records reported as batch item failures for Lambda to retry.
pub const RECORDS_RETRIED: &str = "RecordsRetried";
/// Records a stage could not handle at all this batch.
pub const RECORDS_FAILED: &str = "RecordsFailed";
/// Copies dropped: not above their origin's mark (ADR 0010).
pub const DUPLICATES_DROPPED: &str = "DuplicatesDropped";
/// Origin marks items written (one per input shard whose marks moved).
pub const MARK_WRITES: &str = "MarkWrites";
/// Records the enricher sent to its dead-letter queue.
pub const DEAD_LETTERED: &str = "DeadLettered";
/// Events enriched without their reference item.
pub const REFERENCE_MISSING: &str = "ReferenceMissing";
/// Events that came after their window was final (ADR 0021): flagged by the enricher, left
/// out of the view by the aggregator, archived with `late = true` by the archiver.
pub const LATE_EVENTS: &str = "LateEvents";
/// Records the aggregator or the archiver parked on its dead-letter queue.
pub const RECORDS_PARKED: &str = "RecordsParked";
/// Records a view item already held (a redelivery).
pub const RECORDS_REPLAYED: &str = "RecordsReplayed";
/// View items written.
pub const VIEW_ITEMS_WRITTEN: &str = "ViewItemsWritten";
/// View item writes that lost a race and were redone.
pub const VIEW_WRITE_CONFLICTS: &str = "ViewWriteConflicts";
/// Time from ingest to the view, per-batch percentiles.
pub const INGEST_TO_VIEW_MS: &str = "IngestToViewMs";
/// Rows the archiver wrote.
pub const ROWS_ARCHIVED: &str = "RowsArchived";
/// Archive objects written.
pub const OBJECTS_WRITTEN: &str = "ObjectsWritten";
/// Archive bytes written.
pub const BYTES_WRITTEN: &str = "BytesWritten";
/// Rows an archiver attempt found already written by an earlier one.
pub const RECORDS_RECOVERED: &str = "RecordsRecovered";

/// Batches handed to a handler (local event source mapping).
pub const BATCHES: &str = "Batches";
/// Records in those batches.
pub const RECORDS: &str = "Records";
/// Time the handler took per batch.
pub const HANDLER_MS: &str = "HandlerMs";
/// Age of the newest record read, as Lambda's IteratorAge.
pub const ITERATOR_AGE_MS: &str = "IteratorAgeMs";
/// Batches that failed as a whole.
pub const BATCH_ERRORS: &str = "BatchErrors";
/// Failed batches split in two.
pub const BISECTIONS: &str = "Bisections";
/// Batch retries.
pub const RETRIES: &str = "Retries";
/// Records sent to the on-failure destination.
pub const RECORDS_TO_DESTINATION: &str = "RecordsToDestination";
/// Handler errors injected for fault tests.
pub const FAULTS_INJECTED: &str = "FaultsInjected";
/// Batch invocations the local mapping was refused (a throttle fault), as Lambda's Throttles.
pub const THROTTLES: &str = "Throttles";
/// Kinesis entries answered as throttled (ProvisionedThroughputExceeded), per attempt; what
/// the stream's WriteProvisionedThroughputExceeded counts on AWS.
pub const KINESIS_WRITE_THROTTLED: &str = "KinesisWriteThrottled";
/// Shard leases held by this instance.
pub const LEASES_HELD: &str = "LeasesHeld";
/// Shard leases taken over from an instance that stopped renewing.
pub const LEASE_TAKEOVERS: &str = "LeaseTakeovers";

/// DynamoDB items read (metered, `riffle_aws::meter`).
pub const DYNAMO_ITEMS_READ: &str = "DynamoItemsRead";
/// DynamoDB items written.
pub const DYNAMO_ITEMS_WRITTEN: &str = "DynamoItemsWritten";
/// DynamoDB items scanned.
pub const DYNAMO_ITEMS_SCANNED: &str = "DynamoItemsScanned";
/// Kinesis PUT payload units.
pub const KINESIS_PUT_UNITS: &str = "KinesisPutUnits";
/// Kinesis records put.
pub const KINESIS_RECORDS_PUT: &str = "KinesisRecordsPut";

/// Batches a stage failed as a whole (aggregator, archiver).
pub const BATCHES_FAILED: &str = "BatchesFailed";
/// Time a stage's batch took (aggregator, archiver).
pub const BATCH_MS: &str = "BatchMs";

/// Producer library: user records put.
pub const RECORDS_PUT: &str = "RecordsPut";
/// Producer library: bytes put.
pub const BYTES_PUT: &str = "BytesPut";
/// Producer library: PUT payload units.
pub const PUT_PAYLOAD_UNITS: &str = "PutPayloadUnits";
/// Producer library: PutRecords calls.
pub const PUT_REQUESTS: &str = "PutRequests";
/// Producer library: entries answered as throttled.
pub const THROTTLED: &str = "Throttled";

/// Schema registry: answers with a 5xx status (its own or its store's failure, never the
/// caller's), one per answer.
pub const SERVER_ERRORS: &str = "ServerErrors";

/// Lambda's own metrics the templates alarm on (emitted by AWS, not by Riffle).
pub const LAMBDA_METRICS: [&str; 3] = ["Errors", "IteratorAge", "Throttles"];

/// AWS's own metrics the templates alarm on or chart, by namespace (emitted by AWS, not by
/// Riffle). A metric of another namespace, or not listed here, is a typo as far as the
/// templates' test is concerned: CloudWatch accepts an alarm on any name and it never fires.
pub const AWS_METRICS: [(&str, &[&str]); 4] = [
    ("AWS/Lambda", &LAMBDA_METRICS),
    ("AWS/SQS", &["ApproximateNumberOfMessagesVisible"]),
    ("AWS/Kinesis", &["WriteProvisionedThroughputExceeded"]),
    (
        "AWS/DynamoDB",
        &["ReadThrottleEvents", "WriteThrottleEvents"],
    ),
];

/// Every name Riffle emits.
pub const ALL: &[&str] = &[
    RECORDS_IN,
    RECORDS_OUT,
    REJECTED,
    RECORDS_RETRIED,
    RECORDS_FAILED,
    DUPLICATES_DROPPED,
    MARK_WRITES,
    DEAD_LETTERED,
    REFERENCE_MISSING,
    LATE_EVENTS,
    RECORDS_PARKED,
    RECORDS_REPLAYED,
    VIEW_ITEMS_WRITTEN,
    VIEW_WRITE_CONFLICTS,
    INGEST_TO_VIEW_MS,
    ROWS_ARCHIVED,
    OBJECTS_WRITTEN,
    BYTES_WRITTEN,
    RECORDS_RECOVERED,
    BATCHES,
    RECORDS,
    HANDLER_MS,
    ITERATOR_AGE_MS,
    BATCH_ERRORS,
    BISECTIONS,
    RETRIES,
    RECORDS_TO_DESTINATION,
    FAULTS_INJECTED,
    LEASES_HELD,
    LEASE_TAKEOVERS,
    DYNAMO_ITEMS_READ,
    DYNAMO_ITEMS_WRITTEN,
    DYNAMO_ITEMS_SCANNED,
    KINESIS_PUT_UNITS,
    KINESIS_RECORDS_PUT,
    BATCHES_FAILED,
    BATCH_MS,
    RECORDS_PUT,
    BYTES_PUT,
    PUT_PAYLOAD_UNITS,
    PUT_REQUESTS,
    THROTTLED,
    SERVER_ERRORS,
    THROTTLES,
    KINESIS_WRITE_THROTTLED,
];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The templates under `infra/` held to this list and to the runbook. Read line by line:
    //! this crate has no YAML parser, and the templates keep one layout (two-space indents,
    //! one key per line, long-form intrinsics as riffle-local needs them).

    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// Where an alarm sends its notifications: the platform's topic, by reference inside the
    /// platform stack and by import everywhere else.
    const TOPIC_IN_PLATFORM: &str = "Ref: AlarmTopic";
    const TOPIC_IMPORTED: &str = "Fn::ImportValue: Fn::Sub: riffle-${Env}-AlarmTopicArn";
    /// The topic policy lets only alarms named `riffle-<env>-*` publish.
    const ALARM_NAME_PREFIX: &str = "riffle-${Env}-";
    /// What an alarm's name carries and its runbook anchor does not: one runbook serves every
    /// environment (ADR 0016).
    const ENV_PART: &str = "${Env}-";
    const TREAT_MISSING_DATA: [&str; 4] = ["breaching", "notBreaching", "ignore", "missing"];

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every stack template: `infra/*.yaml` and `infra/services/*.yaml`, with the name of the
    /// service a service template deploys (its file stem).
    fn templates() -> Vec<(PathBuf, Option<String>, String)> {
        let infra = root().join("infra");
        let mut found = Vec::new();
        for (dir, is_service) in [(infra.clone(), false), (infra.join("services"), true)] {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).unwrap();
                let service =
                    is_service.then(|| path.file_stem().unwrap().to_string_lossy().into_owned());
                found.push((path, service, text));
            }
        }
        assert!(found.len() > 1, "no templates under {}", infra.display());
        found
    }

    /// One resource of a template: its logical id, `Type` and lines.
    struct Resource<'a> {
        logical: &'a str,
        kind: &'a str,
        lines: Vec<&'a str>,
    }

    fn indent(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }

    fn resources(text: &str) -> Vec<Resource<'_>> {
        let mut out: Vec<Resource<'_>> = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            let body = line.trim_start();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            match indent(line) {
                0 => inside = line == "Resources:",
                2 if inside => out.push(Resource {
                    logical: body.trim_end_matches(':'),
                    kind: "",
                    lines: Vec::new(),
                }),
                _ if inside => {
                    if let Some(r) = out.last_mut() {
                        if indent(line) == 4
                            && let Some(kind) = body.strip_prefix("Type:")
                        {
                            r.kind = kind.trim();
                        }
                        r.lines.push(line);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The scalar after `key:` on the first line that starts with it, unquoted; for a
    /// `key:` alone on its line, the text of the `Fn::Sub:` on the next (`riffle-${Env}-raw`),
    /// or that next line as it is (`Fn::ImportValue:`).
    fn value<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
        lines.iter().enumerate().find_map(|(i, l)| {
            let rest = l.trim_start().strip_prefix(key)?.strip_prefix(':')?.trim();
            let rest = match rest {
                "" => {
                    let next = lines.get(i + 1)?.trim();
                    next.strip_prefix("Fn::Sub:").map_or(next, str::trim)
                }
                _ => rest,
            };
            Some(rest.trim_matches('"'))
        })
    }

    /// The items of the list under `key:`; an item that is an intrinsic over an intrinsic
    /// (`- Fn::ImportValue:` then `Fn::Sub: ...`) as one line, `Fn::ImportValue: Fn::Sub: ...`.
    fn list(lines: &[&str], key: &str) -> Vec<String> {
        let Some(at) = lines
            .iter()
            .position(|l| l.trim_start() == format!("{key}:"))
        else {
            return Vec::new();
        };
        let depth = indent(lines[at]);
        let body: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| indent(l) > depth)
            .copied()
            .collect();
        body.iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let item = l.trim_start().strip_prefix("- ")?;
                match body.get(i + 1) {
                    Some(next) if item.ends_with(':') && !next.trim_start().starts_with("- ") => {
                        Some(format!("{item} {}", next.trim()))
                    }
                    _ => Some(item.to_owned()),
                }
            })
            .collect()
    }

    /// A metric an alarm or a dashboard names: namespace, name and dimensions (value `None`
    /// when it is an intrinsic rather than a literal).
    #[derive(Debug)]
    struct MetricRef {
        namespace: String,
        name: String,
        dimensions: Vec<(String, Option<String>)>,
    }

    /// The metrics an alarm's lines name: each `MetricName` with the `Namespace` before it
    /// and the `Dimensions` after it (plain alarms and metric-math `MetricStat`s alike).
    fn alarm_metrics(lines: &[&str]) -> Vec<MetricRef> {
        let mut out = Vec::new();
        let mut namespace = "";
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            if let Some(ns) = body.strip_prefix("Namespace:") {
                namespace = ns.trim();
            }
            let Some(name) = body.strip_prefix("MetricName:") else {
                continue;
            };
            let mut dimensions = Vec::new();
            let rest = lines[i + 1..].iter().take_while(|l| {
                let b = l.trim_start();
                indent(l) >= indent(line) && !b.starts_with("Namespace:")
            });
            let rest: Vec<&str> = rest.copied().collect();
            for (j, l) in rest.iter().enumerate() {
                if let Some(dim) = l.trim_start().strip_prefix("- Name:") {
                    let literal = rest
                        .get(j + 1)
                        .and_then(|v| v.trim_start().strip_prefix("Value:"))
                        .map(|v| v.trim().trim_matches('"'))
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned);
                    dimensions.push((dim.trim().to_owned(), literal));
                }
            }
            out.push(MetricRef {
                namespace: namespace.to_owned(),
                name: name.trim().trim_matches('"').to_owned(),
                dimensions,
            });
        }
        out
    }

    /// A dashboard's body: the JSON text under its `Fn::Sub: |`, parsed (the `${...}` it
    /// substitutes all sit inside JSON strings).
    fn dashboard_body(lines: &[&str]) -> serde_json::Value {
        let at = lines
            .iter()
            .position(|l| l.trim_start() == "Fn::Sub: |")
            .expect("DashboardBody as `Fn::Sub: |` followed by the JSON");
        let depth = indent(lines[at]);
        let json: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > depth)
            .copied()
            .collect();
        serde_json::from_str(&json.join("\n")).expect("dashboard body is JSON")
    }

    /// Every metric of a dashboard's widgets, written out in full (no `"."` shorthand).
    fn dashboard_metrics(body: &serde_json::Value) -> Vec<MetricRef> {
        let widgets = body["widgets"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        for widget in &widgets {
            let metrics = widget["properties"]["metrics"].as_array();
            for metric in metrics.into_iter().flatten() {
                let Some(parts) = metric.as_array() else {
                    continue;
                };
                let strings: Vec<&str> = parts.iter().map_while(|v| v.as_str()).collect();
                let [namespace, name, dims @ ..] = strings.as_slice() else {
                    continue; // an expression
                };
                out.push(MetricRef {
                    namespace: (*namespace).to_owned(),
                    name: (*name).to_owned(),
                    dimensions: dims
                        .chunks(2)
                        .map(|d| (d[0].to_owned(), d.get(1).map(|v| (*v).to_owned())))
                        .collect(),
                });
            }
        }
        out
    }

    /// What a Riffle metric's `Env` dimension must say: the stack's own `Env`, as an alarm
    /// (`Value:` then `Ref: Env`, read as no literal) or the dashboard (`${Env}`) writes it.
    const ENV_VALUES: [Option<&str>; 2] = [None, Some("${Env}")];

    /// What is wrong with one metric reference: a name nothing emits, an unknown namespace,
    /// or (Riffle's own) other dimensions than the `Service` and `Env` the services emit
    /// with, an `Env` not the stack's, or a `Service` that is not `service` (an alarm's own
    /// service) or no service at all.
    fn metric_problem(m: &MetricRef, services: &[String], service: Option<&str>) -> Option<String> {
        if m.namespace == crate::NAMESPACE {
            if !ALL.contains(&m.name.as_str()) {
                return Some(format!("{}: nothing emits it", m.name));
            }
            let [(dim, value), (env_dim, env)] = m.dimensions.as_slice() else {
                return Some(format!(
                    "{}: dimensions {:?}, not Service and Env",
                    m.name, m.dimensions
                ));
            };
            if dim != crate::SERVICE_DIMENSION || env_dim != crate::ENV_DIMENSION {
                return Some(format!(
                    "{}: dimensions {dim}, {env_dim}, not {}, {}",
                    m.name,
                    crate::SERVICE_DIMENSION,
                    crate::ENV_DIMENSION
                ));
            }
            if !ENV_VALUES.contains(&env.as_deref()) {
                return Some(format!(
                    "{}: Env = {env:?}, not the stack's own (Ref: Env)",
                    m.name
                ));
            }
            let value = value.as_deref().unwrap_or("");
            return match service {
                Some(own) if value != own => Some(format!(
                    "{}: Service = {value} in the {own} stack, which only sees its own",
                    m.name
                )),
                None if !services.iter().any(|s| s == value) => {
                    Some(format!("{}: Service = {value}, no such service", m.name))
                }
                _ => None,
            };
        }
        match AWS_METRICS.iter().find(|(ns, _)| *ns == m.namespace) {
            Some((_, names)) if names.contains(&m.name.as_str()) => None,
            Some(_) => Some(format!("{} {}: not in AWS_METRICS", m.namespace, m.name)),
            None => Some(format!(
                "namespace {:?} of {}: neither Riffle nor in AWS_METRICS",
                m.namespace, m.name
            )),
        }
    }

    #[test]
    fn names_are_distinct() {
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len());
    }

    /// Every metric an alarm watches or the dashboard charts is one Riffle emits, with the
    /// dimension set it is emitted with, or AWS's own: CloudWatch takes any name and
    /// dimension without complaint, and an alarm on a misspelt one never fires.
    #[test]
    fn the_templates_watch_emitted_metrics() {
        let templates = templates();
        let services: Vec<String> = templates.iter().filter_map(|(_, s, _)| s.clone()).collect();
        let mut problems = Vec::new();
        let (mut alarms, mut charted) = (0, 0);
        for (file, service, text) in &templates {
            for r in resources(text) {
                let (metrics, own) = match r.kind {
                    "AWS::CloudWatch::Alarm" => (alarm_metrics(&r.lines), service.as_deref()),
                    "AWS::CloudWatch::Dashboard" => {
                        (dashboard_metrics(&dashboard_body(&r.lines)), None)
                    }
                    _ => continue,
                };
                assert!(
                    !metrics.is_empty(),
                    "{}: {} names no metric",
                    file.display(),
                    r.logical
                );
                if r.kind == "AWS::CloudWatch::Alarm" {
                    alarms += 1;
                } else {
                    charted += metrics.len();
                }
                for m in &metrics {
                    if let Some(p) = metric_problem(m, &services, own) {
                        problems.push(format!("{} {}: {p}", file.display(), r.logical));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(
            alarms > 0 && charted > 0,
            "no alarms or no dashboard under infra/"
        );
    }

    /// The test above catches a misspelt Riffle metric, AWS metric or dimension.
    #[test]
    fn a_misspelt_metric_is_caught() {
        let services = vec!["validator".to_owned()];
        let riffle = |name: &str, dim: &str, value: &str| MetricRef {
            namespace: crate::NAMESPACE.to_owned(),
            name: name.to_owned(),
            dimensions: vec![
                (dim.to_owned(), Some(value.to_owned())),
                ("Env".to_owned(), None),
            ],
        };
        let own = Some("validator");
        assert!(
            metric_problem(&riffle(REJECTED, "Service", "validator"), &services, own).is_none()
        );
        assert!(
            metric_problem(&riffle("Rejects", "Service", "validator"), &services, own).is_some()
        );
        assert!(metric_problem(&riffle(REJECTED, "Stage", "validator"), &services, own).is_some());
        assert!(
            metric_problem(
                &riffle(REJECTED, "Service", "riffle-validator"),
                &services,
                own
            )
            .is_some()
        );
        assert!(
            metric_problem(&riffle(REJECTED, "Service", "validatr"), &services, None).is_some()
        );
        // Without Env the alarm would add up every environment's series (or, as the services
        // emit with Env, match none); with a literal one, another environment's.
        let mut no_env = riffle(REJECTED, "Service", "validator");
        no_env.dimensions.pop();
        assert!(metric_problem(&no_env, &services, own).is_some());
        let mut fixed_env = riffle(REJECTED, "Service", "validator");
        fixed_env.dimensions[1].1 = Some("prod".to_owned());
        assert!(metric_problem(&fixed_env, &services, own).is_some());
        let aws = |namespace: &str, name: &str| MetricRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dimensions: Vec::new(),
        };
        assert!(metric_problem(&aws("AWS/Lambda", "Throttles"), &services, None).is_none());
        assert!(metric_problem(&aws("AWS/Lambda", "Throttled"), &services, None).is_some());
        assert!(metric_problem(&aws("AWS/Kinesis", "Rejected"), &services, None).is_some());
        assert!(metric_problem(&aws("AWS/Lamda", "Errors"), &services, None).is_some());
    }

    /// Every alarm reaches someone and says where to start: ALARM and OK go to the alarm
    /// topic, missing data is treated as decided, and the description links the runbook
    /// entry titled with the alarm's exact name.
    #[test]
    fn every_alarm_pages_and_has_a_runbook_entry() {
        let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
        let headings: BTreeSet<&str> = runbook
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim())
            .collect();
        let mut names = BTreeSet::new();
        let mut topic_defined = false;
        let mut problems = Vec::new();
        for (file, _, text) in &templates() {
            let resources = resources(text);
            let here = resources.iter().any(|r| r.logical == "AlarmTopic");
            if here {
                topic_defined = resources
                    .iter()
                    .any(|r| r.logical == "AlarmTopic" && r.kind == "AWS::SNS::Topic")
                    && text.contains("Fn::Sub: riffle-${Env}-AlarmTopicArn");
            }
            let topic = if here {
                TOPIC_IN_PLATFORM
            } else {
                TOPIC_IMPORTED
            };
            for r in resources
                .iter()
                .filter(|r| r.kind == "AWS::CloudWatch::Alarm")
            {
                let mut problem =
                    |p: String| problems.push(format!("{} {}: {p}", file.display(), r.logical));
                let Some(name) = value(&r.lines, "AlarmName").filter(|n| !n.is_empty()) else {
                    problem("no literal AlarmName".into());
                    continue;
                };
                if !name.starts_with(ALARM_NAME_PREFIX) {
                    problem(format!(
                        "{name}: the topic policy only takes {ALARM_NAME_PREFIX}*"
                    ));
                }
                if !names.insert(name.to_owned()) {
                    problem(format!("{name}: used twice"));
                }
                for key in ["AlarmActions", "OKActions"] {
                    if list(&r.lines, key) != [topic] {
                        problem(format!("{key} is not [{topic}]"));
                    }
                }
                if !value(&r.lines, "TreatMissingData")
                    .is_some_and(|t| TREAT_MISSING_DATA.contains(&t))
                {
                    problem("no TreatMissingData".into());
                }
                // The runbook's entry is the name without its environment.
                let anchor = name.replacen(ENV_PART, "", 1);
                let link = format!("docs/runbook.md#{anchor}");
                if !value(&r.lines, "AlarmDescription").is_some_and(|d| d.contains(&link)) {
                    problem(format!("AlarmDescription does not name {link}"));
                }
                if !headings.contains(format!("`{anchor}`").as_str()) {
                    problem(format!("docs/runbook.md has no heading `{anchor}`"));
                }
            }
        }
        assert!(
            topic_defined,
            "no AWS::SNS::Topic AlarmTopic exported as riffle-${{Env}}-AlarmTopicArn"
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(!names.is_empty(), "no alarms under infra/");
    }

    /// Every function logs to a group of its stack (retention set, encrypted) created before
    /// it, and traces; and the dashboard charts it by its name.
    #[test]
    fn every_function_has_its_log_group_and_is_charted() {
        let templates = templates();
        let mut dashboards = String::new();
        for (_, _, text) in &templates {
            for r in resources(text)
                .iter()
                .filter(|r| r.kind == "AWS::CloudWatch::Dashboard")
            {
                dashboards.push_str(&dashboard_body(&r.lines).to_string());
            }
        }
        let mut functions = 0;
        for (file, _, text) in &templates {
            let resources = resources(text);
            for f in resources
                .iter()
                .filter(|r| r.kind == "AWS::Lambda::Function")
            {
                functions += 1;
                let at = format!("{} {}", file.display(), f.logical);
                let name = value(&f.lines, "FunctionName").unwrap_or_default();
                let group = resources
                    .iter()
                    .find(|r| {
                        r.kind == "AWS::Logs::LogGroup"
                            && value(&r.lines, "LogGroupName")
                                == Some(&format!("/aws/lambda/{name}"))
                    })
                    .unwrap_or_else(|| panic!("{at}: no log group /aws/lambda/{name}"));
                assert!(
                    value(&group.lines, "RetentionInDays").is_some()
                        && value(&group.lines, "KmsKeyId").is_some(),
                    "{at}: log group without retention or key"
                );
                let depends = value(&f.lines, "DependsOn").map(|d| vec![d.to_owned()]);
                let depends = depends.unwrap_or_else(|| list(&f.lines, "DependsOn"));
                assert!(
                    depends.iter().any(|d| d == group.logical),
                    "{at}: not DependsOn its log group"
                );
                assert_eq!(
                    value(&f.lines, "Mode"),
                    Some("Active"),
                    "{at}: tracing not active"
                );
                assert!(
                    dashboards.contains(&format!("\"{name}\"")),
                    "{at}: {name} not on the dashboard"
                );
            }
        }
        assert!(functions > 0, "no functions under infra/");
    }
}
