//! The autoscaler on the local twin: a ramp of plain records (one Kinesis record each, so the
//! raw stream's record rate is the load) until the autoscaler's rules double the raw stream
//! with SplitShard (a second standing for a minute, a shard full at 400 records/s), and across that resharding nothing was
//! lost, doubled or reordered per partition key (`riffle-dev load --check`: the view, archive
//! and rejects against the ground truth, and each key's archived events in production order).
//!
//! Needs the service binaries and the emulators (`make install`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn a_ramp_doubles_the_raw_stream_and_nothing_is_lost_doubled_or_reordered() {
    let run = riffle_tests::test_support::riffle_dev_load(
        &riffle_harness::pipeline::bin_dir().join("riffle-dev"),
        "autoscale",
        &[
            "--profile",
            "ramp",
            "--from-rate",
            "200",
            "--rate",
            "2000",
            "--duration",
            "20",
            "--no-aggregate",
            "--autoscale",
            // A shard counted full at 400 records/s: the 2 raw shards are busy (75 %) from
            // 600/s, which even a loaded CI machine offers for the 5 seconds it takes.
            "--shard-capacity",
            "400",
            "--check",
            "--trace-sample-rate",
            "0",
        ],
    );
    let report = &run.report;

    // The template's 2 raw shards, doubled once the busy window passed.
    let reshards = report["reshards"].as_array().unwrap();
    let first = reshards.first().expect("the autoscaler resharded");
    assert_eq!(first["direction"], "up");
    assert_eq!(
        (first["from"].as_u64(), first["to"].as_u64()),
        (Some(2), Some(4))
    );
    assert!(first["utilization"].as_f64().unwrap() >= 0.75);
    // Decided only after 5 busy seconds: never in the first five.
    assert!(first["t"].as_u64().unwrap() > 5);
    let shards: Vec<u64> = report["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["raw_shards"].as_u64())
        .collect();
    assert_eq!(shards.first(), Some(&2));
    assert!(shards.contains(&4), "{shards:?}");

    // Across it: nothing lost, doubled or reordered.
    let check = &report["check"];
    assert_eq!(check["differences"], serde_json::json!([]), "{check}");
    assert_eq!(check["reordered_keys"], serde_json::json!([]), "{check}");
    assert!(check["compared_pairs"].as_u64().unwrap() > 1000, "{check}");
    assert_eq!(check["ok"], true);
}
