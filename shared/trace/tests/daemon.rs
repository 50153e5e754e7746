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
