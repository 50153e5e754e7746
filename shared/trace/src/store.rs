//! Segment documents read back (from the local collector's file, or from X-Ray's
//! BatchGetTraces, which returns the same documents), and an event's path through them.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub use crate::error::TraceError;
use crate::keys;

/// What the path reader needs of one segment document.
#[derive(Debug, Clone, Deserialize)]
pub struct Segment {
    /// `1-<8 hex>-<24 hex>` (absent in a subsegment X-Ray returns inside its segment).
    #[serde(default)]
    pub trace_id: String,
    /// The segment's id.
    pub id: String,
    /// The span it continues (the previous stage's, for a stage's record span).
    #[serde(default)]
    pub parent_id: Option<String>,
    /// The service (`riffle-validator`, ...).
    pub name: String,
    /// Epoch seconds.
    pub start_time: f64,
    /// Epoch seconds; absent while in progress.
    #[serde(default)]
    pub end_time: Option<f64>,
    /// Indexed annotations (event id, stage, outcome, reason, where).
    #[serde(default)]
    pub annotations: HashMap<String, Value>,
    /// Set for a span that ended in a fault (retried, dead-lettered).
    #[serde(default)]
    pub fault: bool,
    /// Set for a call that failed on the client's side.
    #[serde(default)]
    pub error: bool,
    /// `subsegment` for a document sent on its own under a segment (an AWS call).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `aws` for an AWS call.
    #[serde(default)]
    pub namespace: Option<String>,
    /// For an AWS call, `{"operation": ...}`.
    #[serde(default)]
    pub aws: Option<Value>,
    /// Subsegments as X-Ray's API returns them, inside their segment.
    #[serde(default)]
    pub subsegments: Vec<Segment>,
}

impl Segment {
    /// An annotation's value as text (numbers and booleans as JSON writes them).
    pub(crate) fn annotation(&self, key: &str) -> Option<String> {
        match self.annotations.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// Every whole document in `path` (one per line; lines that are not documents are skipped).
///
/// # Errors
/// The file cannot be read.
pub fn read(path: &Path) -> Result<Vec<Segment>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(text.lines().filter_map(parse).collect())
}

/// One segment document (a line of the collector's file, or a `Document` of X-Ray's
/// BatchGetTraces); `None` for what is not one, such as a line a writer had not finished.
pub fn parse(document: &str) -> Option<Segment> {
    serde_json::from_str(document).ok()
}

/// One stage's handling of the event (one attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// The stage.
    pub stage: String,
    /// When it took the batch up, and when the record's effect landed (epoch seconds).
    pub start: f64,
    /// See `start`; `None` while in progress.
    pub end: Option<f64>,
    /// What became of the record (`published`, `rejected`, `viewed`, ...).
    pub outcome: String,
    /// Why (reject code, failure) or where (view item, archive object).
    pub detail: Option<String>,
    /// Time on the stream before this stage took it up: after the previous stage's end, or
    /// after the producer's put for the first stage (ms).
    pub waited_ms: Option<f64>,
    /// The AWS calls the stage's batch made while it held the record, in time order.
    pub calls: Vec<CallHop>,
    /// On Lambda: the trace of the invocation whose batch held the record, where the
    /// batch's own span is (see [`crate::invocation`]).
    pub invocation: Option<String>,
}

/// One AWS call under a stage's handling of the event.
#[derive(Debug, Clone, PartialEq)]
pub struct CallHop {
    /// The service (`Kinesis`, `DynamoDB`, `S3`, `SQS`).
    pub service: String,
    /// The operation (`PutRecords`, `GetItem`, ...).
    pub operation: String,
    /// When it began (epoch seconds).
    pub start: f64,
    /// How long it took (ms); `None` while in progress.
    pub took_ms: Option<f64>,
    /// It failed.
    pub failed: bool,
}

/// AWS calls by the id of the span they were made under: documents sent on their own, and
/// subsegments inside their segments.
fn calls_by_parent(segments: &[Segment]) -> HashMap<String, Vec<CallHop>> {
    fn call(s: &Segment) -> Option<CallHop> {
        if s.namespace.as_deref() != Some("aws") {
            return None;
        }
        let operation = s
            .aws
            .as_ref()
            .and_then(|a| a.get("operation"))
            .and_then(Value::as_str)
            .unwrap_or("call")
            .to_owned();
        Some(CallHop {
            service: s.name.clone(),
            operation,
            start: s.start_time,
            took_ms: s.end_time.map(|e| (e - s.start_time) * 1e3),
            failed: s.fault || s.error,
        })
    }
    let mut out: HashMap<String, Vec<CallHop>> = HashMap::new();
    for s in segments {
        if s.kind.as_deref() == Some("subsegment")
            && let (Some(parent), Some(c)) = (&s.parent_id, call(s))
        {
            out.entry(parent.clone()).or_default().push(c);
        }
        for inner in &s.subsegments {
            if let Some(c) = call(inner) {
                out.entry(s.id.clone()).or_default().push(c);
            }
        }
    }
    for calls in out.values_mut() {
        calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    }
    out
}

/// Where an event went, stage by stage.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPath {
    /// The event.
    pub event_id: String,
    /// Its trace.
    pub trace_id: String,
    /// Every stage's handling, in time order (a retried batch shows each attempt).
    pub hops: Vec<Hop>,
}

/// Outcomes after which the event goes nowhere else.
const TERMINAL: [&str; 2] = ["rejected", "dead_lettered"];

impl EventPath {
    /// Whether the event reached its ends: rejected or dead-lettered, or both counted into
    /// the view and archived.
    pub fn complete(&self) -> bool {
        let has = |o: &str| self.hops.iter().any(|h| h.outcome == o);
        TERMINAL.iter().any(|o| has(o)) || (has("viewed") && has("archived"))
    }

    /// From the first stage's start to the last effect (ms).
    pub fn total_ms(&self) -> Option<f64> {
        let start = self.hops.first()?.start - self.hops.first()?.waited_ms.unwrap_or(0.0) / 1e3;
        let end = self
            .hops
            .iter()
            .filter_map(|h| h.end)
            .fold(f64::MIN, f64::max);
        (end > f64::MIN).then_some((end - start) * 1e3)
    }
}

/// The path of `event_id` through `segments`.
///
/// # Errors
/// [`TraceError::Unknown`] when no segment names it.
pub fn path(segments: &[Segment], event_id: &str) -> Result<EventPath, TraceError> {
    let mine: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.annotation(keys::EVENT_ID).as_deref() == Some(event_id))
        .collect();
    path_of(event_id, &mine, &calls_by_parent(segments))
        .ok_or_else(|| TraceError::Unknown(event_id.to_owned()))
}

/// Every traced event's path, by event id: one pass over the documents.
pub fn paths(segments: &[Segment]) -> HashMap<String, EventPath> {
    let mut by_event: HashMap<String, Vec<&Segment>> = HashMap::new();
    for s in segments {
        if let Some(id) = s.annotation(keys::EVENT_ID) {
            by_event.entry(id).or_default().push(s);
        }
    }
    let calls = calls_by_parent(segments);
    by_event
        .into_iter()
        .filter_map(|(id, mine)| {
            let path = path_of(&id, &mine, &calls)?;
            Some((id, path))
        })
        .collect()
}

/// The path through `mine`, the segments naming `event_id`: those of its first trace (a
/// redriven record may start another).
fn path_of(
    event_id: &str,
    mine: &[&Segment],
    calls: &HashMap<String, Vec<CallHop>>,
) -> Option<EventPath> {
    let first = mine
        .iter()
        .min_by(|a, b| a.start_time.total_cmp(&b.start_time))?;
    let trace_id = first.trace_id.clone();
    let mut hops: Vec<(&Segment, Hop)> = mine
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| (*s, hop(s)))
        .collect();
    hops.sort_by(|a, b| a.1.start.total_cmp(&b.1.start));
    // A stage's wait: after the end of the span it continues (its parent), else after the
    // producer's put.
    let ends: HashMap<&str, f64> = hops
        .iter()
        .filter_map(|(s, h)| Some((s.id.as_str(), h.end?)))
        .collect();
    let mut out = Vec::with_capacity(hops.len());
    for (segment, mut hop) in hops {
        let before = segment
            .parent_id
            .as_deref()
            .and_then(|p| ends.get(p).copied())
            .or_else(|| {
                segment
                    .annotation(keys::INGEST_TIME)
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(|ms| ms / 1e3)
            });
        hop.waited_ms = before.map(|t| ((hop.start - t) * 1e3).max(0.0));
        hop.calls = calls.get(&segment.id).cloned().unwrap_or_default();
        out.push(hop);
    }
    Some(EventPath {
        event_id: event_id.to_owned(),
        trace_id,
        hops: out,
    })
}

fn hop(s: &Segment) -> Hop {
    Hop {
        stage: s.annotation(keys::STAGE).unwrap_or_else(|| s.name.clone()),
        start: s.start_time,
        end: s.end_time,
        outcome: s
            .annotation(keys::OUTCOME)
            .unwrap_or_else(|| "in progress".to_owned()),
        detail: s
            .annotation(keys::REASON)
            .or_else(|| s.annotation(keys::WHERE)),
        waited_ms: None,
        calls: Vec::new(),
        invocation: s.annotation(keys::INVOCATION_TRACE),
    }
}

/// The `n` complete paths with the longest total time, slowest first.
pub fn slowest(segments: &[Segment], n: usize) -> Vec<EventPath> {
    slowest_since(segments, n, f64::MIN)
}

/// [`slowest`] among the events whose first stage began at `from` (epoch seconds) or later.
pub fn slowest_since(segments: &[Segment], n: usize, from: f64) -> Vec<EventPath> {
    let mut paths: Vec<(f64, EventPath)> = paths(segments)
        .into_values()
        .filter(EventPath::complete)
        .filter(|p| p.hops.first().is_some_and(|h| h.start >= from))
        .filter_map(|p| Some((p.total_ms()?, p)))
        .collect();
    paths.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.event_id.cmp(&b.1.event_id))
    });
    paths.into_iter().take(n).map(|(_, p)| p).collect()
}

/// `path` as a person reads it: one line per stage with its wait and time.
pub fn render(path: &EventPath) -> String {
    let mut out = format!("event {}  trace {}\n", path.event_id, path.trace_id);
    for hop in &path.hops {
        let wait = hop
            .waited_ms
            .map_or_else(|| "        ".to_owned(), |w| format!("{w:>6.0} ms"));
        let took = hop.end.map_or_else(
            || "   ... ".to_owned(),
            |e| format!("{:>5.0} ms", (e - hop.start) * 1e3),
        );
        let detail = hop
            .detail
            .as_deref()
            .map_or_else(String::new, |d| format!(" ({d})"));
        out.push_str(&format!(
            "  ├─ waited {wait} on the stream, then {:<10} {took}  {}{detail}\n",
            hop.stage, hop.outcome
        ));
        for call in &hop.calls {
            let took = call
                .took_ms
                .map_or_else(|| "   ...".to_owned(), |ms| format!("{ms:>5.0} ms"));
            let failed = if call.failed { "  failed" } else { "" };
            out.push_str(&format!(
                "  │      {took}  {} {}{failed}\n",
                call.service, call.operation
            ));
        }
        if let Some(trace) = &hop.invocation {
            out.push_str(&format!(
                "  │      its batch: Lambda invocation trace {trace}\n"
            ));
        }
    }
    match path.total_ms() {
        Some(total) if path.complete() => {
            out.push_str(&format!(
                "  └─ done: {total:.0} ms from put to last effect\n"
            ));
        }
        _ => out.push_str(
            "  └─ not complete yet: later stages have not handled it (or their spans are \
             still on the way)\n",
        ),
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn seg(
        id: &str,
        parent: Option<&str>,
        stage: &str,
        start: f64,
        end: f64,
        outcome: &str,
    ) -> Segment {
        let mut annotations = HashMap::new();
        annotations.insert("event_id".into(), Value::String("e-1".into()));
        annotations.insert("stage".into(), Value::String(stage.into()));
        annotations.insert("outcome".into(), Value::String(outcome.into()));
        Segment {
            trace_id: "1-5f000000-000000000000000000000001".into(),
            id: id.into(),
            parent_id: parent.map(str::to_owned),
            name: format!("riffle-{stage}"),
            start_time: start,
            end_time: Some(end),
            annotations,
            fault: false,
            error: false,
            kind: None,
            namespace: None,
            aws: None,
            subsegments: Vec::new(),
        }
    }

    #[test]
    fn a_stage_shows_the_aws_calls_made_while_it_held_the_event() {
        // As the local daemon keeps them: each call a document of its own under the stage's.
        let call = |parent: &str, service: &str, operation: &str, start: f64, fault: bool| {
            serde_json::json!({
                "trace_id": "1-5f000000-000000000000000000000001", "id": format!("{parent}{operation}"),
                "parent_id": parent, "type": "subsegment", "namespace": "aws", "name": service,
                "start_time": start, "end_time": start + 0.004, "aws": {"operation": operation},
                "fault": fault,
            })
            .to_string()
        };
        let mut segments = vec![
            seg("a", None, "validator", 10.0, 10.1, "published"),
            parse(&call("a", "Kinesis", "PutRecords", 10.05, false)).unwrap(),
            parse(&call("a", "DynamoDB", "GetItem", 10.01, true)).unwrap(),
        ];
        // As X-Ray's API returns them: inside the segment.
        let mut enricher = seg("b", Some("a"), "enricher", 10.4, 10.45, "published");
        enricher.subsegments = vec![
            parse(
                r#"{"id": "x", "name": "DynamoDB", "namespace": "aws", "start_time": 10.41,
                    "end_time": 10.42, "aws": {"operation": "BatchGetItem"}}"#,
            )
            .unwrap(),
        ];
        segments.push(enricher);
        let p = path(&segments, "e-1").unwrap();
        let calls = |i: usize| -> Vec<(String, bool)> {
            p.hops[i]
                .calls
                .iter()
                .map(|c| (format!("{} {}", c.service, c.operation), c.failed))
                .collect()
        };
        assert_eq!(
            calls(0),
            [
                ("DynamoDB GetItem".into(), true),
                ("Kinesis PutRecords".into(), false)
            ]
        );
        assert_eq!(calls(1), [("DynamoDB BatchGetItem".into(), false)]);
        assert_eq!(p.hops[1].calls[0].took_ms.unwrap().round(), 10.0);
        let text = render(&p);
        assert!(text.contains("4 ms  DynamoDB GetItem  failed"), "{text}");
        assert!(text.contains("Kinesis PutRecords\n"), "{text}");
        // The calls are not stages of their own.
        assert_eq!(p.hops.len(), 2);
    }

    #[test]
    fn a_path_orders_the_stages_and_measures_each_wait() {
        let mut first = seg("a", None, "validator", 10.0, 10.1, "published");
        first
            .annotations
            .insert("ingest_time".into(), Value::from(9_800));
        let segments = vec![
            seg("d", Some("b"), "archiver", 12.0, 12.5, "archived"),
            first,
            seg("b", Some("a"), "enricher", 10.4, 10.45, "published"),
            seg("c", Some("b"), "aggregator", 11.0, 11.2, "viewed"),
        ];
        let p = path(&segments, "e-1").unwrap();
        let stages: Vec<_> = p.hops.iter().map(|h| h.stage.as_str()).collect();
        assert_eq!(stages, ["validator", "enricher", "aggregator", "archiver"]);
        let waits: Vec<_> = p
            .hops
            .iter()
            .map(|h| h.waited_ms.unwrap().round())
            .collect();
        assert_eq!(waits, [200.0, 300.0, 550.0, 1550.0]);
        assert!(p.complete());
        assert_eq!(p.total_ms().unwrap().round(), 2700.0);
        let text = render(&p);
        assert!(
            text.contains("archiver") && text.contains("done: 2700 ms"),
            "{text}"
        );
        assert!(matches!(
            path(&segments, "nope"),
            Err(TraceError::Unknown(_))
        ));
        // Without the archiver it is not complete yet.
        let p = path(&segments[1..], "e-1").unwrap();
        assert!(!p.complete());
        assert!(render(&p).contains("not complete"));
        assert_eq!(slowest(&segments, 5).len(), 1);
        assert_eq!(paths(&segments)["e-1"], path(&segments, "e-1").unwrap());
    }
}
