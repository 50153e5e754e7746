//! `riffle-dev up` as a user runs it: the twin comes up, prints the variables that point
//! another process at it, stays up, and those variables alone take the operator binary to
//! it; Ctrl-C (SIGINT) stops everything.
//!
//! Needs the service binaries (`cargo build --workspace --bins`) and the emulators.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twin_stays_up_and_its_printed_endpoints_reach_it() {
    let bin = riffle_harness::pipeline::bin_dir().join("riffle-dev");
    let state = std::env::temp_dir().join(format!("riffle-up-test-{}", std::process::id()));
    let (mut child, env) = riffle_tests::test_support::start_up(&bin, &state).await;
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KINESIS",
        "AWS_XRAY_DAEMON_ADDRESS",
        "RIFFLE_REGISTRY_URL",
        "RIFFLE_QUERY_URL",
        "RIFFLE_QUERY_TOKEN",
    ] {
        assert!(env.contains_key(key), "{key} missing from {env:?}");
    }
    // Still up a while later (nothing exits by itself), and the operator binary reaches it
    // with nothing but the printed variables.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none(), "up exited by itself");
    let riffle = riffle_harness::pipeline::bin_dir().join("riffle");
    let list = tokio::process::Command::new(&riffle)
        .args(["schema", "list"])
        .env_clear()
        .envs(&env)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(text.contains("com.riffle.pipeline.Envelope"), "{text}");

    // Ctrl-C ends it cleanly.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped after Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut said_stop = false;
    while let Ok(Some(line)) = stderr.next_line().await {
        said_stop |= line.contains("stopping everything");
    }
    assert!(said_stop);
    let _ = std::fs::remove_dir_all(&state);
}
