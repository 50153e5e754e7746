//! How to reach a target shard count with the calls every Kinesis has: SplitShard and
//! MergeShards (the local Kinesis has no UpdateShardCount). Pure: from the open shards'
//! hash ranges to the calls, in the order to make them.
//!
//! Like UpdateShardCount's uniform scaling, splits go to the widest shards first, at the
//! middle of their range, and merges to the narrowest adjacent pairs, so the shards stay
//! about equal whatever the starting layout.

/// An open shard and the hash keys it holds (inclusive, Kinesis' 128-bit key space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenShard {
    /// Its id.
    pub id: String,
    /// Lowest hash key.
    pub start: u128,
    /// Highest hash key.
    pub end: u128,
}

impl OpenShard {
    fn width(&self) -> u128 {
        self.end - self.start
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// SplitShard(shard, new_starting_hash_key): the upper half starts at `at`.
    Split {
        /// The shard to split.
        shard: String,
        /// The new shard's starting hash key (decimal in the API).
        at: u128,
    },
    /// MergeShards(shard, adjacent): `adjacent` starts where `shard` ends.
    Merge {
        /// The lower shard.
        shard: String,
        /// The shard right above it.
        adjacent: String,
    },
}

/// The calls that take `open` to `target` shards: `target - n` splits, or `n - target`
/// merges of adjacent pairs (at most `n / 2`, as each shard merges once in a round). None
/// when already there, or when a shard is too narrow to split.
pub fn plan(open: &[OpenShard], target: usize) -> Vec<Step> {
    let n = open.len();
    if target > n {
        let mut widest: Vec<&OpenShard> = open.iter().filter(|s| s.width() > 0).collect();
        widest.sort_by(|a, b| b.width().cmp(&a.width()).then(a.start.cmp(&b.start)));
        return widest
            .into_iter()
            .take(target - n)
            .map(|s| Step::Split {
                shard: s.id.clone(),
                at: s.start + s.width() / 2 + 1,
            })
            .collect();
    }
    if target < n {
        let mut sorted: Vec<&OpenShard> = open.iter().collect();
        sorted.sort_by_key(|s| s.start);
        // Adjacent pairs, narrowest first; each shard in one pair at most.
        let mut pairs: Vec<(usize, u128)> = sorted
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0].end.checked_add(1) == Some(w[1].start))
            .map(|(i, w)| (i, w[0].width() + w[1].width()))
            .collect();
        pairs.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut used = vec![false; n];
        let mut steps = Vec::new();
        for (i, _) in pairs {
            if steps.len() == n - target {
                break;
            }
            if used[i] || used[i + 1] {
                continue;
            }
            used[i] = true;
            used[i + 1] = true;
            steps.push(Step::Merge {
                shard: sorted[i].id.clone(),
                adjacent: sorted[i + 1].id.clone(),
            });
        }
        return steps;
    }
    Vec::new()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `n` equal shards over the whole key space.
    fn even(n: u128) -> Vec<OpenShard> {
        let width = u128::MAX / n;
        (0..n)
            .map(|i| OpenShard {
                id: format!("shardId-{i:012}"),
                start: i * width,
                end: if i + 1 == n {
                    u128::MAX
                } else {
                    (i + 1) * width - 1
                },
            })
            .collect()
    }

    /// The shards after `steps`, as Kinesis would leave them.
    fn apply(open: &[OpenShard], steps: &[Step]) -> Vec<OpenShard> {
        let mut shards = open.to_vec();
        let mut next = 1000;
        for step in steps {
            match step {
                Step::Split { shard, at } => {
                    let i = shards.iter().position(|s| &s.id == shard).unwrap();
                    let parent = shards.remove(i);
                    assert!(
                        parent.start < *at && *at <= parent.end,
                        "{at} inside {parent:?}"
                    );
                    for (start, end) in [(parent.start, at - 1), (*at, parent.end)] {
                        shards.push(OpenShard {
                            id: format!("shardId-{next:012}"),
                            start,
                            end,
                        });
                        next += 1;
                    }
                }
                Step::Merge { shard, adjacent } => {
                    let a = shards.iter().position(|s| &s.id == shard).unwrap();
                    let low = shards.remove(a);
                    let b = shards.iter().position(|s| &s.id == adjacent).unwrap();
                    let high = shards.remove(b);
                    assert_eq!(low.end + 1, high.start, "adjacent");
                    shards.push(OpenShard {
                        id: format!("shardId-{next:012}"),
                        start: low.start,
                        end: high.end,
                    });
                    next += 1;
                }
            }
        }
        shards.sort_by_key(|s| s.start);
        shards
    }

    /// The shards cover the key space once, without gaps or overlaps.
    fn covers(shards: &[OpenShard]) -> bool {
        shards.first().is_some_and(|s| s.start == 0)
            && shards.last().is_some_and(|s| s.end == u128::MAX)
            && shards.windows(2).all(|w| w[0].end + 1 == w[1].start)
    }

    #[test]
    fn doubling_splits_every_shard_in_the_middle() {
        for n in [1, 2, 3, 4] {
            let open = even(n);
            let after = apply(&open, &plan(&open, 2 * n as usize));
            assert_eq!(after.len(), 2 * n as usize);
            assert!(covers(&after), "{after:?}");
            let widths: Vec<u128> = after.iter().map(OpenShard::width).collect();
            let (lo, hi) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
            // Equal halves, give or take the key space not dividing evenly.
            assert!(hi - lo <= 8, "equal halves: {widths:?}");
        }
    }

    #[test]
    fn halving_merges_adjacent_pairs_and_uneven_layouts_even_out() {
        let open = even(4);
        let steps = plan(&open, 2);
        assert_eq!(steps.len(), 2);
        let after = apply(&open, &steps);
        assert_eq!(after.len(), 2);
        assert!(covers(&after));
        // Three shards down to two: one merge, of the narrowest pair.
        let uneven = apply(&even(2), &plan(&even(2), 3));
        assert_eq!(uneven.len(), 3);
        let steps = plan(&uneven, 2);
        assert_eq!(steps.len(), 1);
        let after = apply(&uneven, &steps);
        assert!(covers(&after) && after.len() == 2);
        // Growing 3 -> 4 splits the widest.
        let steps = plan(&uneven, 4);
        assert!(
            matches!(&steps[..], [Step::Split { shard, .. }] if *shard == uneven.iter().max_by_key(|s| s.width()).unwrap().id)
        );
        assert!(plan(&uneven, 3).is_empty());
        // One shard cannot merge.
        assert!(plan(&even(1), 0).is_empty());
    }
}
