#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const NOW: i64 = 1_765_000_000 - 1_765_000_000 % 60;
/// Records per minute at `u` utilization of `shards` shards (by record rate).
fn records_at(u: f64, shards: u32) -> f64 {
    u * SHARD_RECORDS_PER_SEC * 60.0 * f64::from(shards)
}

/// `n` minutes ending at NOW, each at utilization `u` of `shards` (records, 100-byte events).
fn steady(n: i64, u: f64, shards: u32) -> Vec<Minute> {
    (1..=n)
        .map(|i| {
            let records = records_at(u, shards);
            Minute {
                start: NOW - i * 60,
                incoming_bytes: Some(records * 100.0),
                incoming_records: Some(records),
                iterator_age_ms: Some(500.0),
            }
        })
        .collect()
}

fn obs<'a>(shards: u32, minutes: &'a [Minute], updates: &'a [i64]) -> Observation<'a> {
    Observation {
        now: NOW,
        shards,
        active: true,
        created: NOW - 10 * DAY_SECS,
        minutes,
        updates,
    }
}

#[test]
fn utilization_is_the_larger_of_bytes_and_records() {
    let m = Minute {
        start: 0,
        incoming_bytes: Some(SHARD_BYTES_PER_SEC * 60.0 * 0.5),
        incoming_records: Some(SHARD_RECORDS_PER_SEC * 60.0 * 0.2),
        iterator_age_ms: None,
    };
    assert!((utilization(&m, 1).unwrap() - 0.5).abs() < 1e-9);
    assert!((utilization(&m, 2).unwrap() - 0.25).abs() < 1e-9);
    let small_events = Minute {
        incoming_bytes: Some(1000.0),
        incoming_records: Some(SHARD_RECORDS_PER_SEC * 60.0 * 0.9),
        ..m
    };
    assert!((utilization(&small_events, 1).unwrap() - 0.9).abs() < 1e-9);
    let empty = Minute {
        incoming_bytes: None,
        incoming_records: None,
        ..m
    };
    assert_eq!(utilization(&empty, 1), None);
}

#[test]
fn five_busy_minutes_double_the_stream() {
    let minutes = steady(5, 0.8, 4);
    let d = decide(&Policy::default(), &obs(4, &minutes, &[]));
    assert!(
        matches!(
            d,
            Decision::Scale {
                direction: Direction::Up,
                from: 4,
                to: 8,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn four_busy_minutes_or_one_quiet_one_do_not() {
    let policy = Policy::default();
    let mut minutes = steady(5, 0.8, 4);
    minutes[2].incoming_records = Some(records_at(0.7, 4));
    minutes[2].incoming_bytes = Some(0.0);
    assert!(matches!(
        decide(&policy, &obs(4, &minutes, &[])),
        Decision::Hold(Hold::Steady { .. })
    ));
    // A minute without datapoints is no evidence of load.
    let mut minutes = steady(5, 0.9, 4);
    minutes[4].incoming_records = None;
    minutes[4].incoming_bytes = None;
    assert!(matches!(
        decide(&policy, &obs(4, &minutes, &[])),
        Decision::Hold(Hold::Steady { .. })
    ));
}

#[test]
fn an_idle_hour_halves_the_stream_rounding_up() {
    let minutes = steady(60, 0.1, 5);
    let d = decide(&Policy::default(), &obs(5, &minutes, &[]));
    assert!(
        matches!(
            d,
            Decision::Scale {
                direction: Direction::Down,
                from: 5,
                to: 3,
                ..
            }
        ),
        "{d:?}"
    );
    // No datapoints at all is an idle stream.
    let d = decide(&Policy::default(), &obs(4, &[], &[]));
    assert!(
        matches!(
            d,
            Decision::Scale {
                direction: Direction::Down,
                to: 2,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn one_busy_minute_in_the_hour_keeps_the_shards() {
    let mut minutes = steady(60, 0.1, 4);
    minutes[37].incoming_records = Some(records_at(0.3, 4));
    assert!(matches!(
        decide(&Policy::default(), &obs(4, &minutes, &[])),
        Decision::Hold(Hold::Steady { .. })
    ));
}

#[test]
fn bounds_hold_at_the_limits() {
    let policy = Policy {
        min_shards: 2,
        max_shards: 6,
        ..Policy::default()
    };
    let busy = steady(5, 0.9, 6);
    assert_eq!(
        decide(&policy, &obs(6, &busy, &[])),
        Decision::Hold(Hold::AtMax)
    );
    // Doubling is capped at the maximum.
    let busy = steady(5, 0.9, 4);
    assert!(matches!(
        decide(&policy, &obs(4, &busy, &[])),
        Decision::Scale { to: 6, .. }
    ));
    let idle = steady(60, 0.0, 2);
    assert_eq!(
        decide(&policy, &obs(2, &idle, &[])),
        Decision::Hold(Hold::AtMin)
    );
    let idle = steady(60, 0.0, 3);
    assert!(matches!(
        decide(&policy, &obs(3, &idle, &[])),
        Decision::Scale { to: 2, .. }
    ));
}

#[test]
fn lagging_consumers_block_scaling_down_not_up() {
    let mut idle = steady(60, 0.1, 4);
    idle[0].iterator_age_ms = Some(120_000.0);
    assert_eq!(
        decide(&Policy::default(), &obs(4, &idle, &[])),
        Decision::Hold(Hold::Lagging {
            iterator_age_ms: 120_000.0
        })
    );
    let mut busy = steady(5, 0.9, 4);
    busy[0].iterator_age_ms = Some(120_000.0);
    assert!(matches!(
        decide(&Policy::default(), &obs(4, &busy, &[])),
        Decision::Scale {
            direction: Direction::Up,
            ..
        }
    ));
}

#[test]
fn minutes_before_a_reshard_do_not_count() {
    // Resharded 3 minutes ago: the busy minutes before it were measured on fewer shards.
    let busy = steady(10, 0.9, 8);
    let d = decide(&Policy::default(), &obs(8, &busy, &[NOW - 180]));
    assert!(matches!(d, Decision::Hold(Hold::Steady { .. })), "{d:?}");
    // Idle, but the hour since the last reshard is not over.
    let idle = steady(60, 0.0, 8);
    let d = decide(&Policy::default(), &obs(8, &idle, &[NOW - 30 * 60]));
    assert!(matches!(d, Decision::Hold(Hold::Steady { .. })), "{d:?}");
    // Nor since the stream was created.
    let young = Observation {
        created: NOW - 600,
        ..obs(8, &idle, &[])
    };
    assert!(matches!(
        decide(&Policy::default(), &young),
        Decision::Hold(Hold::Steady { .. })
    ));
}

#[test]
fn ten_reshards_in_a_day_wait_for_the_oldest_to_age_out() {
    let busy = steady(5, 0.9, 4);
    let updates: Vec<i64> = (0..10).map(|i| NOW - 23 * 3600 + i * 600).collect();
    assert_eq!(
        decide(&Policy::default(), &obs(4, &busy, &updates)),
        Decision::Hold(Hold::DailyLimit {
            next_allowed: NOW - 23 * 3600 + DAY_SECS
        })
    );
    // One of them a day old: a call is free again.
    let mut older = updates.clone();
    older[0] = NOW - DAY_SECS;
    assert!(matches!(
        decide(&Policy::default(), &obs(4, &busy, &older)),
        Decision::Scale { .. }
    ));
}

#[test]
fn a_stream_being_resharded_is_left_alone() {
    let busy = steady(5, 0.9, 4);
    let o = Observation {
        active: false,
        ..obs(4, &busy, &[])
    };
    assert_eq!(
        decide(&Policy::default(), &o),
        Decision::Hold(Hold::NotActive)
    );
}

/// The fixture day replayed minute by minute, applying each decision as the scaler would
/// (the reshard takes effect the next minute).
fn replay_day(policy: &Policy, start_shards: u32) -> (Vec<(i64, u32, u32)>, Vec<f64>) {
    let text = include_str!("../../tests/fixtures/retail-day.csv");
    let day0 = NOW - DAY_SECS;
    let minutes: Vec<Minute> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            Minute {
                start: day0 + f[0] as i64 * 60,
                incoming_bytes: Some(f[1]),
                incoming_records: Some(f[2]),
                iterator_age_ms: Some(f[3]),
            }
        })
        .collect();
    assert_eq!(minutes.len(), 1440);
    let mut shards = start_shards;
    let mut updates: Vec<i64> = Vec::new();
    let mut changes = Vec::new();
    let mut load = Vec::new();
    for i in 0..minutes.len() {
        let now = minutes[i].start + 60;
        let seen = &minutes[i.saturating_sub(90)..=i];
        load.push(utilization(&minutes[i], shards).unwrap());
        let o = Observation {
            now,
            shards,
            active: true,
            created: day0 - DAY_SECS,
            minutes: seen,
            updates: &updates,
        };
        if let Decision::Scale { from, to, .. } = decide(policy, &o) {
            assert_eq!(from, shards);
            changes.push((now, from, to));
            updates.push(now);
            shards = to;
        }
    }
    (changes, load)
}

#[test]
fn a_recorded_day_scales_with_its_load_within_every_limit() {
    let policy = Policy {
        min_shards: 1,
        max_shards: 16,
        ..Policy::default()
    };
    let (changes, load) = replay_day(&policy, 1);
    let ups = changes.iter().filter(|(_, f, t)| t > f).count();
    let downs = changes.iter().filter(|(_, f, t)| t < f).count();
    assert!(ups >= 2, "the ramp and the spike scale up: {changes:?}");
    assert!(downs >= 2, "the evening scales back down: {changes:?}");
    assert!(changes.len() <= UPDATES_PER_DAY, "{changes:?}");
    for (at, from, to) in &changes {
        assert!(
            *to <= from * 2 && *to >= from.div_ceil(2),
            "{at}: {from} -> {to}"
        );
        assert!((policy.min_shards..=policy.max_shards).contains(to));
    }
    // No halving while the spike's backlog lasts (iterator age over a minute at 12:15-13:15).
    let day0 = NOW - DAY_SECS;
    for (at, from, to) in &changes {
        let minute = (at - day0) / 60;
        if to < from {
            assert!(
                !(735..=800).contains(&minute),
                "scaled down while lagging at {minute}"
            );
        }
    }
    // The scaler keeps the stream out of sustained overload: utilization stays under 100% in
    // all but a few minutes (each ramp takes 5 minutes to be believed).
    let overloaded = load.iter().filter(|u| **u > 1.0).count();
    println!(
        "reshards (minute of the day, from, to): {:?}",
        changes
            .iter()
            .map(|(at, f, t)| ((at - day0) / 60, f, t))
            .collect::<Vec<_>>()
    );
    println!("minutes over capacity: {overloaded}");
    assert!(
        overloaded <= 15,
        "{overloaded} minutes over capacity: {changes:?}"
    );
    // Night traffic ends on few shards again.
    assert!(
        changes.last().is_some_and(|(_, _, to)| *to <= 2),
        "{changes:?}"
    );
}
