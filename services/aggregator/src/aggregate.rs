//! Pre-aggregation: a batch's events folded into one contribution per view item, and the
//! merge of a contribution into the stored item, skipping what the item already holds.
//! Pure functions, no I/O.
//!
//! Exactly once (ADR 0009): every item keeps, per input shard, the highest record position
//! it has folded in. A shard is read in order by one batch at a time, and every redelivery
//! (retry, bisection half, replay after a crash) re-presents a contiguous range, so
//! "position above the mark" is exactly "not applied yet".

use std::collections::{BTreeMap, HashMap};

pub use riffle_codec::Position;

pub use riffle_view::{Aggregate, SECS_PER_DAY, ViewKey, ViewRow};

/// One record's value as pre-aggregation keeps it: enough to fold it again alone when an
/// earlier delivery applied only part of the batch to an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Index of the record's shard in the batch's shard list.
    pub shard: u32,
    /// Where the record sits on that shard.
    pub position: Position,
    /// The value.
    pub metric: f64,
    /// Index of the record in the batch (to mark its claim applied).
    pub record: u32,
}

/// The positions one batch brings to one item from one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRange {
    /// Index of the shard in the batch's shard list.
    pub shard: u32,
    /// The lowest position.
    pub first: Position,
    /// The highest position.
    pub last: Position,
}

/// What one batch adds to one view item.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The values' aggregate.
    pub aggregate: Aggregate,
    /// The window length of the item.
    pub window_secs: u32,
    /// Positions per shard (one range per shard the batch read, so nearly always one).
    pub ranges: Vec<ShardRange>,
    /// Every value with its position, in batch order.
    pub samples: Vec<Sample>,
}

/// One input to [`pre_aggregate`].
#[derive(Debug, Clone, Copy)]
pub struct Point<'a> {
    /// The view key.
    pub agg_key: &'a str,
    /// Window start, epoch millis.
    pub window_start: i64,
    /// The value.
    pub metric: f64,
    /// The window length.
    pub window_secs: u32,
    /// Index of the record's shard in the batch's shard list.
    pub shard: u32,
    /// Where the record sits on that shard.
    pub position: Position,
    /// Index of the record in the batch.
    pub record: u32,
}

/// Folds points into one contribution per (agg_key, window_start), ordered by key so that
/// writes (and logs) come out the same way every time.
pub fn pre_aggregate<'a>(
    points: impl IntoIterator<Item = Point<'a>>,
) -> BTreeMap<ViewKey, Contribution> {
    let mut out: BTreeMap<ViewKey, Contribution> = BTreeMap::new();
    // Keys are compared as borrowed strings first: most points hit an item already seen,
    // and building a `ViewKey` for the lookup would allocate per point.
    let mut index: HashMap<(&'a str, i64), ViewKey> = HashMap::new();
    for p in points {
        let key = index
            .entry((p.agg_key, p.window_start))
            .or_insert_with(|| ViewKey {
                agg_key: p.agg_key.to_owned(),
                window_start: p.window_start,
            });
        let sample = Sample {
            shard: p.shard,
            position: p.position,
            metric: p.metric,
            record: p.record,
        };
        match out.get_mut(key) {
            Some(c) => {
                c.aggregate.merge(&Aggregate::of(p.metric));
                match c.ranges.iter_mut().find(|r| r.shard == p.shard) {
                    Some(r) => {
                        r.first = r.first.min(p.position);
                        r.last = r.last.max(p.position);
                    }
                    None => c.ranges.push(ShardRange {
                        shard: p.shard,
                        first: p.position,
                        last: p.position,
                    }),
                }
                c.samples.push(sample);
            }
            None => {
                out.insert(
                    key.clone(),
                    Contribution {
                        aggregate: Aggregate::of(p.metric),
                        window_secs: p.window_secs,
                        ranges: vec![ShardRange {
                            shard: p.shard,
                            first: p.position,
                            last: p.position,
                        }],
                        samples: vec![sample],
                    },
                );
            }
        }
    }
    out
}

/// How much of a batch's contribution an item has already seen from one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing: apply every sample of the shard.
    All,
    /// Everything: skip the shard.
    Nothing,
    /// A part (an earlier delivery applied the first samples): apply those after the mark.
    After(Position),
}

fn cut(mark: Option<&Position>, range: &ShardRange) -> Cut {
    match mark {
        None => Cut::All,
        Some(mark) if *mark < range.first => Cut::All,
        Some(mark) if *mark >= range.last => Cut::Nothing,
        Some(mark) => Cut::After(*mark),
    }
}

/// What [`apply`] decided for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// The row to write; `None` when the item already holds every sample.
    pub row: Option<ViewRow>,
    /// Samples folded in now.
    pub applied: usize,
    /// Samples the item already held (a redelivery).
    pub skipped: usize,
}

/// `current` (or nothing yet) with the samples of `contribution` it does not hold yet
/// applied, stamped `now_ms`, expiring `ttl_days` after the window's end. `shards` names
/// the shard indexes of the contribution.
///
/// Per shard, the item's high-water mark decides: below the contribution's first position,
/// everything is new (the common case: the batch's aggregate is used as it is); at or above
/// its last, nothing is; in between, the samples after the mark are folded again.
pub fn apply(
    key: &ViewKey,
    current: Option<&ViewRow>,
    contribution: &Contribution,
    shards: &[String],
    now_ms: i64,
    ttl_days: u32,
) -> Merge {
    let shard_name = |i: u32| shards.get(i as usize).map_or("", String::as_str);
    let cuts: Vec<(u32, Cut)> = contribution
        .ranges
        .iter()
        .map(|r| {
            let mark = current.and_then(|c| c.applied.get(shard_name(r.shard)));
            (r.shard, cut(mark, r))
        })
        .collect();
    let total = contribution.samples.len();
    let (new, applied) = if cuts.iter().all(|(_, c)| *c == Cut::All) {
        (Some(contribution.aggregate), total)
    } else if cuts.iter().all(|(_, c)| *c == Cut::Nothing) {
        (None, 0)
    } else {
        let mut folded: Option<Aggregate> = None;
        let mut n = 0;
        for s in &contribution.samples {
            let take = match cuts.iter().find(|(shard, _)| *shard == s.shard) {
                Some((_, Cut::All)) => true,
                Some((_, Cut::After(mark))) => s.position > *mark,
                Some((_, Cut::Nothing)) | None => false,
            };
            if take {
                n += 1;
                match folded.as_mut() {
                    Some(a) => a.merge(&Aggregate::of(s.metric)),
                    None => folded = Some(Aggregate::of(s.metric)),
                }
            }
        }
        (folded, n)
    };
    let Some(new) = new else {
        return Merge {
            row: None,
            applied: 0,
            skipped: total,
        };
    };

    let mut aggregate = new;
    let mut version = 1;
    let mut marks = BTreeMap::new();
    if let Some(current) = current {
        aggregate = current.aggregate;
        aggregate.merge(&new);
        version = current.version + 1;
        marks = current.applied.clone();
    }
    for ((_, c), r) in cuts.iter().zip(&contribution.ranges) {
        if *c != Cut::Nothing {
            marks.insert(shard_name(r.shard).to_owned(), r.last);
        }
    }
    let window_end_secs = key.window_start.div_euclid(1000) + i64::from(contribution.window_secs);
    Merge {
        row: Some(ViewRow {
            key: key.clone(),
            window_secs: contribution.window_secs,
            aggregate,
            updated_at: now_ms,
            expires_at: window_end_secs.saturating_add(i64::from(ttl_days) * SECS_PER_DAY),
            version,
            applied: marks,
        }),
        applied,
        skipped: total - applied,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A point at sequence number `seq` of shard 0.
    fn p(agg_key: &str, window_start: i64, metric: f64, seq: u32) -> Point<'_> {
        at(agg_key, window_start, metric, 0, seq, 0)
    }

    fn at(
        agg_key: &str,
        window_start: i64,
        metric: f64,
        shard: u32,
        seq: u32,
        sub: u32,
    ) -> Point<'_> {
        Point {
            agg_key,
            window_start,
            metric,
            window_secs: 60,
            shard,
            position: pos(seq, sub),
            record: seq,
        }
    }

    fn pos(seq: u32, sub: u32) -> Position {
        Position::new(&seq.to_string(), sub).unwrap()
    }

    fn shards() -> Vec<String> {
        vec!["shardId-0".into(), "shardId-1".into()]
    }

    fn k(agg_key: &str, window_start: i64) -> ViewKey {
        ViewKey {
            agg_key: agg_key.into(),
            window_start,
        }
    }

    /// Applies `points` as one batch over `row`; the written row (or the old one).
    fn batch(row: Option<ViewRow>, points: &[Point<'_>]) -> (Option<ViewRow>, Merge) {
        let key = k(points[0].agg_key, points[0].window_start);
        let c = pre_aggregate(points.iter().copied());
        let merge = apply(&key, row.as_ref(), &c[&key], &shards(), 1, 30);
        (merge.row.clone().or(row), merge)
    }

    #[test]
    fn folds_per_key_and_window() {
        let out = pre_aggregate([
            p("a", 0, 2.0, 1),
            p("a", 0, -1.5, 2),
            p("a", 60_000, 4.0, 3),
            p("b", 0, 10.0, 4),
            p("a", 0, 7.0, 5),
        ]);
        let keys: Vec<_> = out
            .keys()
            .map(|k| (k.agg_key.as_str(), k.window_start))
            .collect();
        assert_eq!(keys, vec![("a", 0), ("a", 60_000), ("b", 0)]);
        let a0 = &out[&k("a", 0)];
        assert_eq!(
            a0.aggregate,
            Aggregate {
                count: 3,
                sum: 7.5,
                min: -1.5,
                max: 7.0
            }
        );
        assert_eq!(
            a0.ranges,
            vec![ShardRange {
                shard: 0,
                first: pos(1, 0),
                last: pos(5, 0)
            }]
        );
        assert_eq!(
            a0.samples.iter().map(|s| s.record).collect::<Vec<_>>(),
            vec![1, 2, 5]
        );
        assert_eq!(out.values().map(|c| c.aggregate.count).sum::<i64>(), 5);
    }

    #[test]
    fn ranges_are_kept_per_shard() {
        let out = pre_aggregate([
            at("a", 0, 1.0, 1, 50, 0),
            at("a", 0, 1.0, 0, 7, 0),
            at("a", 0, 1.0, 0, 7, 1),
            at("a", 0, 1.0, 1, 51, 0),
        ]);
        let a = &out[&k("a", 0)];
        assert_eq!(
            a.ranges,
            vec![
                ShardRange {
                    shard: 1,
                    first: pos(50, 0),
                    last: pos(51, 0)
                },
                ShardRange {
                    shard: 0,
                    first: pos(7, 0),
                    last: pos(7, 1)
                },
            ]
        );
    }

    #[test]
    fn empty_batch_has_no_writes() {
        assert!(pre_aggregate([]).is_empty());
    }

    #[test]
    fn apply_merges_into_the_stored_item() {
        let w = 1_764_000_000_000;
        let (created, merge) = batch(None, &[p("a", w, 5.0, 1), p("a", w, 1.0, 2)]);
        let created = created.unwrap();
        assert_eq!((merge.applied, merge.skipped), (2, 0));
        assert_eq!(created.version, 1);
        assert_eq!(created.aggregate.count, 2);
        assert_eq!(created.expires_at, 1_764_000_000 + 60 + 30 * SECS_PER_DAY);
        assert_eq!(created.applied["shardId-0"], pos(2, 0));

        let (updated, _) = batch(Some(created), &[p("a", w, 9.0, 3), p("a", w, 0.5, 4)]);
        let updated = updated.unwrap();
        assert_eq!(
            updated.aggregate,
            Aggregate {
                count: 4,
                sum: 15.5,
                min: 0.5,
                max: 9.0
            }
        );
        assert_eq!(updated.version, 2);
        assert_eq!(updated.updated_at, 1);
        assert_eq!(updated.applied["shardId-0"], pos(4, 0));
    }

    #[test]
    fn a_batch_applied_twice_writes_nothing_the_second_time() {
        let points = [p("a", 0, 5.0, 1), p("a", 0, 1.0, 2), p("a", 0, 2.0, 3)];
        let (row, _) = batch(None, &points);
        let (again, merge) = batch(row.clone(), &points);
        assert_eq!(merge.row, None);
        assert_eq!((merge.applied, merge.skipped), (0, 3));
        assert_eq!(again, row);
        // Any part of it (a bisection half) is skipped too.
        assert_eq!(batch(row.clone(), &points[..1]).1.row, None);
        assert_eq!(batch(row, &points[1..]).1.row, None);
    }

    #[test]
    fn a_partial_overlap_applies_only_what_follows_the_mark() {
        let points = [
            p("a", 0, 1.0, 1),
            p("a", 0, 10.0, 2),
            p("a", 0, 100.0, 3),
            p("a", 0, 1000.0, 4),
        ];
        // An earlier delivery applied records 1 and 2 (the first half of a bisection).
        let (row, _) = batch(None, &points[..2]);
        // The whole range comes again: only 3 and 4 are new.
        let (row, merge) = batch(row, &points);
        assert_eq!((merge.applied, merge.skipped), (2, 2));
        let row = row.unwrap();
        assert_eq!(
            row.aggregate,
            Aggregate {
                count: 4,
                sum: 1111.0,
                min: 1.0,
                max: 1000.0
            }
        );
        assert_eq!(row.applied["shardId-0"], pos(4, 0));
        assert_eq!(row.version, 2);
    }

    #[test]
    fn sub_records_of_one_kinesis_record_are_told_apart() {
        let points = [
            at("a", 0, 1.0, 0, 9, 0),
            at("a", 0, 2.0, 0, 9, 1),
            at("a", 0, 4.0, 0, 9, 2),
        ];
        let (row, _) = batch(None, &points[..2]);
        let (row, merge) = batch(row, &points);
        assert_eq!(merge.applied, 1);
        assert_eq!(row.unwrap().aggregate.sum, 7.0);
    }

    #[test]
    fn shards_have_their_own_marks() {
        let (row, _) = batch(None, &[at("a", 0, 1.0, 1, 900, 0)]);
        // Shard 0's numbers are lower than shard 1's mark, and still new.
        let (row, merge) = batch(row, &[at("a", 0, 2.0, 0, 5, 0), at("a", 0, 4.0, 1, 900, 0)]);
        assert_eq!((merge.applied, merge.skipped), (1, 1));
        let row = row.unwrap();
        assert_eq!(row.aggregate.sum, 3.0);
        assert_eq!(row.applied["shardId-0"], pos(5, 0));
        assert_eq!(row.applied["shardId-1"], pos(900, 0));
    }

    #[test]
    fn grouping_does_not_change_the_result() {
        let values = [3.0, -2.0, 8.5, 0.0, 1.25];
        let points: Vec<Point<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| p("k", 0, *v, i as u32 + 1))
            .collect();
        let all = pre_aggregate(points.iter().copied());
        let key = k("k", 0);
        let mut row: Option<ViewRow> = None;
        for chunk in points.chunks(2) {
            row = batch(row, chunk).0;
        }
        assert_eq!(row.unwrap().aggregate, all[&key].aggregate);
    }
}
