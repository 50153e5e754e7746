//! Pre-aggregation: a batch's events folded into one contribution per view item, and the
//! merge of a contribution into the stored item. Pure functions, no I/O.

use std::collections::BTreeMap;

/// Seconds in a day, for the TTL.
pub const SECS_PER_DAY: i64 = 86_400;

/// The key of one view item: a key over one tumbling window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewKey {
    /// Partition key.
    pub agg_key: String,
    /// Window start, epoch millis (sort key).
    pub window_start: i64,
}

/// Count, sum, min and max of some metric values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Number of values.
    pub count: i64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Aggregate {
    /// The aggregate of one value.
    pub fn of(value: f64) -> Self {
        Self {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    /// Folds `other` in; associative and commutative, so batches can be applied in any
    /// grouping.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// What one batch adds to one view item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// The values' aggregate.
    pub aggregate: Aggregate,
    /// The window length of the item.
    pub window_secs: u32,
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
}

/// Folds points into one contribution per (agg_key, window_start), ordered by key so that
/// writes (and logs) come out the same way every time.
pub fn pre_aggregate<'a>(
    points: impl IntoIterator<Item = Point<'a>>,
) -> BTreeMap<ViewKey, Contribution> {
    let mut out: BTreeMap<ViewKey, Contribution> = BTreeMap::new();
    for p in points {
        let key = ViewKey {
            agg_key: p.agg_key.to_owned(),
            window_start: p.window_start,
        };
        out.entry(key)
            .and_modify(|c| c.aggregate.merge(&Aggregate::of(p.metric)))
            .or_insert(Contribution {
                aggregate: Aggregate::of(p.metric),
                window_secs: p.window_secs,
            });
    }
    out
}

/// One item of the view (`schemas/view_row.avsc`) plus its optimistic-lock version.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRow {
    /// The item's key.
    pub key: ViewKey,
    /// Window length.
    pub window_secs: u32,
    /// The aggregate so far.
    pub aggregate: Aggregate,
    /// Last write, epoch millis.
    pub updated_at: i64,
    /// TTL, epoch seconds.
    pub expires_at: i64,
    /// Incremented by every write; a write succeeds only over the version it read.
    pub version: u64,
}

/// `current` (or nothing yet) with `contribution` applied, stamped `now_ms`, expiring
/// `ttl_days` after the window's end.
pub fn apply(
    key: &ViewKey,
    current: Option<&ViewRow>,
    contribution: &Contribution,
    now_ms: i64,
    ttl_days: u32,
) -> ViewRow {
    let mut aggregate = contribution.aggregate;
    let mut version = 1;
    if let Some(current) = current {
        aggregate = current.aggregate;
        aggregate.merge(&contribution.aggregate);
        version = current.version + 1;
    }
    let window_end_secs = key.window_start.div_euclid(1000) + i64::from(contribution.window_secs);
    ViewRow {
        key: key.clone(),
        window_secs: contribution.window_secs,
        aggregate,
        updated_at: now_ms,
        expires_at: window_end_secs.saturating_add(i64::from(ttl_days) * SECS_PER_DAY),
        version,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn p(agg_key: &str, window_start: i64, metric: f64) -> Point<'_> {
        Point {
            agg_key,
            window_start,
            metric,
            window_secs: 60,
        }
    }

    #[test]
    fn folds_per_key_and_window() {
        let out = pre_aggregate([
            p("a", 0, 2.0),
            p("a", 0, -1.5),
            p("a", 60_000, 4.0),
            p("b", 0, 10.0),
            p("a", 0, 7.0),
        ]);
        let keys: Vec<_> = out
            .keys()
            .map(|k| (k.agg_key.as_str(), k.window_start))
            .collect();
        assert_eq!(keys, vec![("a", 0), ("a", 60_000), ("b", 0)]);
        let a0 = out[&ViewKey {
            agg_key: "a".into(),
            window_start: 0,
        }]
            .aggregate;
        assert_eq!(
            a0,
            Aggregate {
                count: 3,
                sum: 7.5,
                min: -1.5,
                max: 7.0
            }
        );
        assert_eq!(out.values().map(|c| c.aggregate.count).sum::<i64>(), 5);
    }

    #[test]
    fn empty_batch_has_no_writes() {
        assert!(pre_aggregate([]).is_empty());
    }

    #[test]
    fn apply_merges_into_the_stored_item() {
        let key = ViewKey {
            agg_key: "a".into(),
            window_start: 1_764_000_000_000,
        };
        let first = pre_aggregate([p("a", key.window_start, 5.0), p("a", key.window_start, 1.0)]);
        let created = apply(&key, None, &first[&key], 1, 30);
        assert_eq!(created.version, 1);
        assert_eq!(created.aggregate.count, 2);
        assert_eq!(created.expires_at, 1_764_000_000 + 60 + 30 * SECS_PER_DAY);

        let second = pre_aggregate([p("a", key.window_start, 9.0), p("a", key.window_start, 0.5)]);
        let updated = apply(&key, Some(&created), &second[&key], 2, 30);
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
        assert_eq!(updated.updated_at, 2);
    }

    #[test]
    fn grouping_does_not_change_the_result() {
        let values = [3.0, -2.0, 8.5, 0.0, 1.25];
        let all = pre_aggregate(values.iter().map(|v| p("k", 0, *v)));
        let key = ViewKey {
            agg_key: "k".into(),
            window_start: 0,
        };
        let mut row: Option<ViewRow> = None;
        for chunk in values.chunks(2) {
            let part = pre_aggregate(chunk.iter().map(|v| p("k", 0, *v)));
            row = Some(apply(&key, row.as_ref(), &part[&key], 0, 1));
        }
        assert_eq!(row.unwrap().aggregate, all[&key].aggregate);
    }
}
