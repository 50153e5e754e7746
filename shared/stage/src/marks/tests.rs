//! Unit tests of the gate and the commit, on [`MemoryMarks`]: copies seen once committed,
//! marks that never pass a record whose effect did not land, a second reader refused, idle
//! and excess origins dropped, and a shard never opened never committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::*;
use crate::dedup::Position;

fn pos(n: u64) -> Position {
    Position::new(&n.to_string(), 0).unwrap()
}

fn marks() -> Marks<MemoryMarks> {
    Marks::new(MemoryMarks::default(), DEFAULT_MARK_WINDOW)
}

#[tokio::test]
async fn copies_and_redeliveries_are_seen_once_committed() {
    let m = marks();
    let mut gate = m.open("s", &["sh-1"]).await.unwrap();
    let a = gate.admit("sh-1", "p/0", pos(1)).unwrap();
    let b = gate.admit("sh-1", "p/0", pos(2)).unwrap();
    // The same event twice in one batch, and one from before its predecessor.
    assert_eq!(gate.admit("sh-1", "p/0", pos(2)), None);
    assert_eq!(gate.admit("sh-1", "p/0", pos(1)), None);
    let c = gate.admit("sh-1", "q/0", pos(1)).unwrap();
    for t in [a, b, c] {
        gate.done(t);
    }
    let done = m.commit("s", &mut gate, 100).await.unwrap();
    assert_eq!(done.writes, 1);
    assert!(gate.covered(a) && gate.covered(c));

    let mut again = m.open("s", &["sh-1"]).await.unwrap();
    assert_eq!(again.admit("sh-1", "p/0", pos(2)), None);
    assert!(again.admit("sh-1", "p/0", pos(3)).is_some());
    assert!(again.admit("sh-1", "q/1", pos(1)).is_some());
    // Another shard keeps marks of its own.
    let mut other = m.open("s", &["sh-2"]).await.unwrap();
    assert!(other.admit("sh-2", "p/0", pos(1)).is_some());
    // And another stage.
    let mut stage = m.open("t", &["sh-1"]).await.unwrap();
    assert!(stage.admit("sh-1", "p/0", pos(1)).is_some());
}

#[tokio::test]
async fn a_mark_never_passes_a_record_whose_effect_did_not_land() {
    let m = marks();
    let mut gate = m.open("s", &["sh"]).await.unwrap();
    let t: Vec<Ticket> = (1..=5)
        .map(|i| gate.admit("sh", "p/0", pos(i)).unwrap())
        .collect();
    let other = gate.admit("sh", "r/0", pos(9)).unwrap();
    // 1, 2 and 4 landed; 3 did not (a failed publish), 5 did not either.
    for i in [0, 1, 3] {
        gate.done(t[i]);
    }
    gate.done(other);
    m.commit("s", &mut gate, 1).await.unwrap();
    let stored = m.store().get("s", "sh");
    assert_eq!(stored.marks["p/0"].seq, pos(2));
    assert_eq!(stored.marks["r/0"].seq, pos(9));
    assert!(gate.covered(t[1]) && !gate.covered(t[3]));
    // The redelivery from record 3 on applies 3, 4 and 5 again (their effects are
    // idempotent at the same position, or dropped downstream as copies).
    let mut redelivery = m.open("s", &["sh"]).await.unwrap();
    assert_eq!(redelivery.admit("sh", "p/0", pos(2)), None);
    assert!(redelivery.admit("sh", "p/0", pos(3)).is_some());
    // Committing the rest later in the same batch goes on from the first commit.
    gate.done(t[2]);
    gate.done(t[4]);
    let second = m.commit("s", &mut gate, 2).await.unwrap();
    assert_eq!(second.writes, 1);
    assert_eq!(m.store().get("s", "sh").marks["p/0"].seq, pos(5));
    assert_eq!(m.store().get("s", "sh").version, 2);
    // Nothing moved: no write.
    assert_eq!(m.commit("s", &mut gate, 3).await.unwrap().writes, 0);
}

#[tokio::test]
async fn a_second_reader_of_the_shard_cannot_move_the_marks() {
    let m = marks();
    let mut first = m.open("s", &["sh"]).await.unwrap();
    let mut second = m.open("s", &["sh"]).await.unwrap();
    let a = first.admit("sh", "p/0", pos(1)).unwrap();
    let b = second.admit("sh", "p/0", pos(1)).unwrap();
    first.done(a);
    second.done(b);
    m.commit("s", &mut first, 1).await.unwrap();
    let err = m.commit("s", &mut second, 1).await.unwrap_err();
    assert!(err.retryable());
    assert!(err.to_string().contains("MarksConflict"), "{err}");
}

#[tokio::test]
async fn idle_origins_expire_and_the_oldest_go_past_the_cap() {
    let m = Marks::new(MemoryMarks::default(), Duration::from_secs(100));
    let mut gate = m.open("s", &["sh"]).await.unwrap();
    let old = gate.admit("sh", "old", pos(1)).unwrap();
    gate.done(old);
    m.commit("s", &mut gate, 0).await.unwrap();
    let mut gate = m.open("s", &["sh"]).await.unwrap();
    for i in 0..=MAX_ORIGINS_PER_SHARD {
        let t = gate.admit("sh", &format!("o{i}"), pos(1)).unwrap();
        gate.done(t);
    }
    let done = m.commit("s", &mut gate, 150).await.unwrap();
    let stored = m.store().get("s", "sh");
    assert!(
        !stored.marks.contains_key("old"),
        "expired after the window"
    );
    assert_eq!(stored.marks.len(), MAX_ORIGINS_PER_SHARD);
    assert_eq!(done.evicted, 1);
    // A redriven record's origin goes before any stage's or producer's, however new.
    let mut gate = m.open("s", &["sh"]).await.unwrap();
    let redriven = gate.admit("sh", "redrive:s/m-1/0", pos(0)).unwrap();
    gate.done(redriven);
    let done = m.commit("s", &mut gate, 160).await.unwrap();
    let stored = m.store().get("s", "sh");
    assert_eq!(done.evicted, 1);
    assert!(!stored.marks.contains_key("redrive:s/m-1/0"));
    assert_eq!(stored.marks.len(), MAX_ORIGINS_PER_SHARD);
}

#[tokio::test]
async fn a_shard_not_opened_drops_nothing_and_is_never_committed() {
    let m = marks();
    let mut gate = Gate::default();
    let t = gate.admit("sh", "p", pos(1)).unwrap();
    gate.done(t);
    let err = m.commit("s", &mut gate, 1).await.unwrap_err();
    assert!(!err.retryable());
    assert_eq!(m.store().writes(), 0);
}

#[tokio::test]
async fn a_mark_keeps_the_latest_observed_time_of_what_it_covers() {
    let m = marks();
    let mut gate = m.open("s", &["sh"]).await.unwrap();
    let t: Vec<Ticket> = (1..=3)
        .map(|i| gate.admit("sh", "p/0", pos(i)).unwrap())
        .collect();
    let q = gate.admit("sh", "q/0", pos(1)).unwrap();
    let unobserved = gate.admit("sh", "u/0", pos(1)).unwrap();
    // Event times out of order; the third record's effect did not land.
    for (ticket, time) in [(t[0], 500), (t[1], 300), (t[2], 900), (q, 200)] {
        gate.observe(ticket, time);
    }
    for ticket in [t[0], t[1], q, unobserved] {
        gate.done(ticket);
    }
    m.commit("s", &mut gate, 100).await.unwrap();
    let stored = m.store().get("s", "sh");
    // Only what the marks cover counts: not the third record's 900.
    assert_eq!(stored.marks["p/0"].time, Some(500));
    assert_eq!(stored.marks["u/0"].time, None);
    assert_eq!(
        (stored.watermark(), stored.slowest()),
        (Some(500), Some(200))
    );

    // A later batch with earlier events never moves a time back.
    let mut next = m.open("s", &["sh"]).await.unwrap();
    assert_eq!(next.watermark("sh"), Some(500));
    let again = next.admit("sh", "p/0", pos(3)).unwrap();
    next.observe(again, 400);
    next.done(again);
    m.commit("s", &mut next, 200).await.unwrap();
    assert_eq!(m.store().get("s", "sh").marks["p/0"].time, Some(500));
}
