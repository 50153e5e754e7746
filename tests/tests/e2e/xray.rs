//! `riffle trace --source xray` against moto's X-Ray, through the real SDK: two stages'
//! tracers send their spans over UDP to the local X-Ray daemon, which forwards the documents
//! to moto (PutTraceSegments); the reader then finds one event's segments (GetTraceSummaries,
//! BatchGetTraces) and renders its stages, and the recent traces hold both events.
//!
//! moto's X-Ray implements no filter expression (it fails every one with InternalFailure), so
//! here the reader takes its fallback: the window read unfiltered, the annotation matched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use riffle_cli::trace::{TraceArgs, from_xray};
use riffle_local::Emulators;
use riffle_tests::test_support::state_dir;
use riffle_trace::store::{self, TraceError};
use riffle_trace::xray::{self, Window};
use riffle_trace::{Outcome, Tracer};

const DEADLINE: Duration = Duration::from_secs(30);

/// Sends the spans of two events: `a` through the validator to an enricher reject, `b`
/// rejected by the validator.
fn trace_two_events(daemon: SocketAddr, a: &str, b: &str) {
    let validator = Tracer::to_daemon("riffle-validator", daemon, 1.0).unwrap();
    let enricher = Tracer::to_daemon("riffle-enricher", daemon, 1.0).unwrap();
    let mut header = None;
    let span = validator
        .record("validator", &mut header, a, SystemTime::now(), true)
        .unwrap();
    let published = span.finish(Outcome::Published, SystemTime::now());
    let mut other = None;
    let span = validator
        .record("validator", &mut other, b, SystemTime::now(), true)
        .unwrap();
    let rejected = span.finish(
        Outcome::Rejected("pattern_mismatch".into()),
        SystemTime::now(),
    );
    validator.export(vec![published, rejected]);
    validator.force_flush();
    let span = enricher
        .record("enricher", &mut header, a, SystemTime::now(), false)
        .unwrap();
    enricher.export(vec![span.finish(
        Outcome::Rejected("unknown_subject".into()),
        SystemTime::now(),
    )]);
    enricher.force_flush();
}

/// Polls X-Ray until both events' whole paths are there (forwarding batches every 200 ms).
async fn wait_for(client: &xray::Client, window: Window, a: &str, b: &str) -> xray::Recent {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let recent = xray::recent(client, window).await.unwrap();
        let paths = store::paths(&recent.segments);
        if paths.get(a).is_some_and(|p| p.hops.len() == 2) && paths.contains_key(b) {
            return recent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto's X-Ray never held both traces: {} segments",
            recent.segments.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn args(event_id: Option<&str>, slowest: Option<usize>) -> TraceArgs {
    TraceArgs {
        event_id: event_id.map(str::to_owned),
        slowest,
        since: None,
        source: None,
        store: None,
        from: None,
        to: None,
        minutes: None,
    }
}

#[tokio::test]
async fn events_forwarded_to_moto_are_read_back_from_xray() {
    let state = state_dir("xray");
    let mut emulators = Emulators::start(&state).await.unwrap();
    emulators.forward_traces().await.unwrap();
    let daemon: SocketAddr = emulators
        .env()
        .into_iter()
        .find(|(k, _)| k == riffle_trace::DAEMON_ADDRESS_ENV)
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let client = xray::Client::new(&emulators.sdk_config().await);
    let (a, b) = (
        format!("xray-{}-a", std::process::id()),
        format!("xray-{}-b", std::process::id()),
    );
    // A window ending a minute ahead: the spans end after it is made.
    let now = SystemTime::now() + Duration::from_secs(60);
    let window = Window::resolve(None, None, Some(10), now).unwrap();

    trace_two_events(daemon, &a, &b);
    let recent = wait_for(&client, window, &a, &b).await;
    assert!(!recent.capped);
    assert_eq!(recent.traces, 2, "one trace per event");

    // Exactly a's segments, though moto answered with every trace of the window.
    let mine = xray::events(&client, &a, window).await.unwrap();
    assert_eq!(mine.len(), 2);
    let path = store::path(&mine, &a).unwrap();
    let stages: Vec<_> = path.hops.iter().map(|h| h.stage.as_str()).collect();
    assert_eq!(stages, ["validator", "enricher"]);
    assert_eq!(path.hops[1].detail.as_deref(), Some("unknown_subject"));
    assert!(store::path(&mine, &b).is_err());
    assert_eq!(xray::events(&client, &b, window).await.unwrap().len(), 1);

    // The command's text, as `riffle trace --source xray` prints it.
    let text = from_xray(&args(Some(&a), None), &client, window)
        .await
        .unwrap();
    assert!(
        text.contains("enricher") && text.contains("rejected (unknown_subject)"),
        "{text}"
    );
    let slowest = from_xray(&args(None, Some(5)), &client, window)
        .await
        .unwrap();
    assert!(slowest.contains(&a) && slowest.contains(&b), "{slowest}");

    // An event X-Ray never saw: the window named, and why it may be missing.
    let missing = xray::events(&client, "never-traced", window)
        .await
        .unwrap_err();
    // moto refused the filter expression: the reader read the window's two traces instead.
    assert!(
        matches!(
            missing,
            TraceError::NotInWindow {
                scanned: Some(2),
                capped: false,
                ..
            }
        ),
        "{missing}"
    );
    let text = missing.to_string();
    assert!(
        text.contains(&window.to_string()) && text.contains("not sampled"),
        "{text}"
    );
    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}
