//! Spans from two stages' tracers, through AWS's exporter and a real UDP socket, into the
//! local collector, read back as the event's path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use riffle_trace::{Collector, Outcome, Tracer, store};

async fn wait_for_path(collector: &Collector, event_id: &str, hops: usize) -> store::EventPath {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let segments = store::read(collector.path()).unwrap();
        if let Ok(path) = store::path(&segments, event_id)
            && path.hops.len() >= hops
        {
            return path;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "segments never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_trace_follows_an_event_across_stages_and_unsampled_records_cost_no_span() {
    let dir = std::env::temp_dir().join(format!("riffle-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let collector = Collector::start(&dir).unwrap();
    let validator = Tracer::to_daemon("riffle-validator", collector.address(), 1.0).unwrap();
    let enricher = Tracer::to_daemon("riffle-enricher", collector.address(), 1.0).unwrap();

    // No header: the validator starts the trace (sample rate 1) and writes the header on.
    let mut header = None;
    let span = validator
        .record("validator", &mut header, "e-1", SystemTime::now(), true)
        .expect("sampled");
    let sent = header.clone().unwrap();
    assert!(
        sent.starts_with("Root=1-") && sent.contains(";Sampled=1"),
        "{sent}"
    );
    validator.export(vec![span.finish(Outcome::Published, SystemTime::now())]);
    validator.force_flush();
    tokio::time::sleep(Duration::from_millis(30)).await;

    // The enricher continues it: same root, a new parent.
    let mut onward = header.clone();
    let span = enricher
        .record("enricher", &mut onward, "e-1", SystemTime::now(), false)
        .expect("the header says sampled");
    let next = onward.unwrap();
    assert_eq!(next[..40], sent[..40], "same root");
    assert_ne!(next, sent, "a new parent");
    enricher.export(vec![span.finish(
        Outcome::Rejected("unknown_subject".into()),
        SystemTime::now(),
    )]);
    enricher.force_flush();
    let stats = enricher.export_stats().unwrap();
    assert_eq!((stats.exported(), stats.dropped()), (1, 0));

    let path = wait_for_path(&collector, "e-1", 2).await;
    let stages: Vec<_> = path.hops.iter().map(|h| h.stage.as_str()).collect();
    assert_eq!(stages, ["validator", "enricher"]);
    assert_eq!(path.hops[1].outcome, "rejected");
    assert_eq!(path.hops[1].detail.as_deref(), Some("unknown_subject"));
    assert!(
        path.hops[1].waited_ms.unwrap() >= 20.0,
        "{:?}",
        path.hops[1]
    );
    assert!(path.complete(), "a reject ends the path");
    assert!(sent.contains(&path.trace_id), "{sent} vs {}", path.trace_id);

    // Unsampled and unstarted records get no span and keep their header.
    let mut off = Some(
        "Root=1-5f000000-000000000000000000000001;Parent=53995c3f42cd8ad8;Sampled=0".to_owned(),
    );
    let before = off.clone();
    assert!(
        enricher
            .record("enricher", &mut off, "e-2", SystemTime::now(), true)
            .is_none()
    );
    assert_eq!(off, before);
    let mut none = None;
    assert!(
        enricher
            .record("enricher", &mut none, "e-3", SystemTime::now(), false)
            .is_none()
    );
    assert!(
        Tracer::off()
            .record("validator", &mut None, "e-4", SystemTime::now(), true)
            .is_none()
    );
    let never = Tracer::to_daemon("riffle-validator", collector.address(), 0.0).unwrap();
    assert!(
        never
            .record("validator", &mut None, "e-5", SystemTime::now(), true)
            .is_none()
    );
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_invocation_keeps_its_span_under_lambdas_segment_and_its_records_name_it() {
    let dir = std::env::temp_dir().join(format!("riffle-trace-inv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let collector = Collector::start(&dir).unwrap();
    let tracer = Tracer::to_daemon("riffle-archiver", collector.address(), 1.0).unwrap();
    // A root of now: AWS's translator refuses trace ids from outside X-Ray's 30 days.
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let root = format!("1-{secs:08x}-0000000000000000000000aa");
    let root = root.as_str();
    let lambda = format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a1:0");

    // Unsampled, unparented or unreadable headers give no invocation span.
    let now = SystemTime::now();
    for header in [
        format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=0"),
        format!("Root={root};Sampled=1"),
        "Root=1-nothex;Parent=53995c3f42cd8ad8;Sampled=1".to_owned(),
    ] {
        assert!(
            tracer.invocation("archiver", &header, now).is_none(),
            "{header}"
        );
    }
    assert!(Tracer::off().invocation("archiver", &lambda, now).is_none());

    let invocation = tracer
        .invocation("archiver", &lambda, now)
        .expect("sampled");
    let mut event_header = None;
    let mut span = tracer
        .record("archiver", &mut event_header, "e-9", now, true)
        .expect("rate 1")
        .finish(Outcome::Archived("object-1".into()), SystemTime::now());
    span.set_invocation(invocation.trace_id());
    let mut summary = riffle_trace::BatchSummary {
        records: 3,
        shard: Some("shardId-000000000001".into()),
        first_sequence: Some("4960001".into()),
        last_sequence: Some("4960003".into()),
        error: Some("the archive bucket refused the write".into()),
        ..Default::default()
    };
    summary.add_trace(span.trace_id());
    tracer.export(vec![span]);
    tracer.export_invocation(invocation.finish(summary, SystemTime::now()));
    tracer.force_flush();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (batch, record) = loop {
        let text = std::fs::read_to_string(collector.path()).unwrap_or_default();
        let docs: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let batch = docs.iter().find(|d| d["trace_id"] == root).cloned();
        let record = docs
            .iter()
            .find(|d| d["annotations"]["event_id"] == "e-9")
            .cloned();
        if let (Some(batch), Some(record)) = (batch, record) {
            break (batch, record);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "documents never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A subsegment of Lambda's function segment, faulted with the batch's error.
    assert_eq!(batch["type"], "subsegment", "{batch}");
    assert_eq!(batch["parent_id"], "53995c3f42cd8ad8");
    assert_eq!(batch["name"], "archiver batch");
    assert_eq!(batch["annotations"]["records"], 3);
    assert_eq!(batch["annotations"]["outcome"], "failed");
    assert_eq!(batch["fault"], true);
    assert_eq!(batch["annotations"]["traced"], 1);
    assert_eq!(batch["annotations"]["shard"], "shardId-000000000001");
    let text = batch.to_string();
    assert!(
        text.contains("4960001") && text.contains("4960003"),
        "{text}"
    );
    assert!(
        text.contains("the archive bucket refused the write"),
        "{text}"
    );
    let event_trace = record["trace_id"].as_str().unwrap();
    assert!(
        text.contains(event_trace),
        "the batch lists its records' traces: {text}"
    );
    // The record's span, in its event's trace, names the invocation's trace.
    assert_eq!(record["annotations"]["invocation_trace"], root);
    let segments = store::read(collector.path()).unwrap();
    let path = store::path(&segments, "e-9").unwrap();
    assert_eq!(path.hops[0].invocation.as_deref(), Some(root));
    assert!(
        store::render(&path).contains(&format!("Lambda invocation trace {root}")),
        "{}",
        store::render(&path)
    );
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);
}
