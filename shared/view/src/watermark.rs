//! When a view item is final (ADR 0021): the view's event-time watermark, kept in one
//! DynamoDB item of the claims table, and the rule that reads finality from it.
//!
//! The enricher flags an event late when the watermark of its input shard (the latest event
//! time seen there, capped by the stream's clock) has passed the event's window end plus the
//! subject's allowed lateness; the aggregator leaves late events out. The view's watermark is
//! how far every enricher input shard has come as the aggregator sees it: each aggregator
//! shard publishes the earliest of the latest times of the enricher shards feeding it, and
//! the view's watermark is the earliest of those. Once it passes an item's window end plus
//! the lateness, every event of that window still to come is flagged late upstream, so the
//! item can no longer change: it is final.
//!
//! Layout: `{pk: "watermark#view", "s:<aggregator shard>": "<time>|<at>",
//! "l:<view name>": <lateness ms>}`, times epoch millis (`at`: when the shard last
//! published). An aggregator shard that published nothing for [`IDLE_MS`] before the newest
//! one (closed by a reshard, or idle) no longer holds the watermark back.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

/// Partition key (attribute `pk`) of the watermark item in the claims table.
pub const WATERMARK_KEY: &str = "watermark#view";
/// Partition key attribute of the claims table.
pub const CLAIMS_KEY_ATTRIBUTE: &str = "pk";
/// Attribute prefix of an aggregator shard's entry.
pub const SHARD_PREFIX: &str = "s:";
/// Attribute prefix of a view's allowed lateness.
pub const LATENESS_PREFIX: &str = "l:";
/// How long an aggregator shard may be silent, before the newest one published, and still
/// hold the watermark back: longer than any healthy batch interval, short enough that a
/// shard closed by a reshard stops holding back finality soon.
pub const IDLE_MS: i64 = 5 * 60_000;

/// One aggregator shard's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardEntry {
    /// The earliest latest-event-time among the enricher shards feeding it.
    pub time: i64,
    /// When it was published, epoch millis.
    pub at: i64,
}

/// The watermark item read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermarks {
    /// Per aggregator shard.
    pub shards: BTreeMap<String, ShardEntry>,
    /// Allowed lateness per view name, millis.
    pub lateness_ms: BTreeMap<String, i64>,
}

/// The value of a shard's entry.
pub fn shard_value(time: i64, at: i64) -> AttributeValue {
    AttributeValue::S(format!("{time}|{at}"))
}

impl Watermarks {
    /// Reads the item; entries of another shape are skipped (they hold nothing back).
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Self {
        let mut out = Watermarks::default();
        for (name, value) in item {
            if let Some(shard) = name.strip_prefix(SHARD_PREFIX) {
                let parsed = value.as_s().ok().and_then(|s| {
                    let (time, at) = s.split_once('|')?;
                    Some(ShardEntry {
                        time: time.parse().ok()?,
                        at: at.parse().ok()?,
                    })
                });
                if let Some(entry) = parsed {
                    out.shards.insert(shard.to_owned(), entry);
                }
            } else if let Some(view) = name.strip_prefix(LATENESS_PREFIX)
                && let Some(ms) = value.as_n().ok().and_then(|n| n.parse().ok())
            {
                out.lateness_ms.insert(view.to_owned(), ms);
            }
        }
        out
    }

    /// The view's watermark: the earliest time among the shards that published within
    /// [`IDLE_MS`] of the newest; `None` before any did.
    pub fn watermark(&self) -> Option<i64> {
        let newest = self.shards.values().map(|e| e.at).max()?;
        self.shards
            .values()
            .filter(|e| e.at >= newest.saturating_sub(IDLE_MS))
            .map(|e| e.time)
            .min()
    }

    /// The allowed lateness of the view `agg_key` belongs to, if the aggregator published one.
    pub fn lateness_of(&self, agg_key: &str) -> Option<i64> {
        self.lateness_ms.get(crate::view_name(agg_key)).copied()
    }

    /// Whether the item of `agg_key` for the window of `window_secs` from `window_start` is
    /// final: the watermark passed its end plus its view's lateness (the default lateness
    /// when none is published).
    pub fn is_final(&self, agg_key: &str, window_start: i64, window_secs: u32) -> bool {
        let lateness = self.lateness_of(agg_key).unwrap_or_else(|| {
            i64::from(riffle_codec::rules::DEFAULT_ALLOWED_LATENESS_SECS) * 1000
        });
        let closes_at = riffle_codec::rules::closes_at(window_start, window_secs, lateness);
        self.watermark().is_some_and(|w| w >= closes_at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn item(entries: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn the_watermark_is_the_slowest_shard_that_is_not_idle() {
        let w = Watermarks::from_item(&item(&[
            ("pk", AttributeValue::S(WATERMARK_KEY.into())),
            ("s:shard-0", shard_value(500_000, 1_000_000)),
            ("s:shard-1", shard_value(400_000, 990_000)),
            // Silent for more than IDLE_MS before the newest: a closed shard.
            ("s:shard-2", shard_value(10_000, 1_000_000 - IDLE_MS - 1)),
            ("s:broken", AttributeValue::S("x".into())),
            ("l:sensors", AttributeValue::N("120000".into())),
        ]));
        assert_eq!(w.shards.len(), 3);
        assert_eq!(w.watermark(), Some(400_000));
        assert_eq!(w.lateness_of("sensors:site=a"), Some(120_000));
        assert_eq!(w.lateness_of("orders:x"), None);
        // Window [0, 60 s) closes at 180 s with 120 s lateness: final at 400 s.
        assert!(w.is_final("sensors:site=a", 0, 60));
        // Window [240 s, 300 s) closes at 420 s: still open.
        assert!(!w.is_final("sensors:site=a", 240_000, 60));
        // A view with no published lateness takes the default (120 s): [180, 240) closes at 360.
        assert!(w.is_final("orders:x", 180_000, 60));
    }

    #[test]
    fn nothing_is_final_before_a_watermark_exists() {
        let w = Watermarks::from_item(&HashMap::new());
        assert_eq!(w.watermark(), None);
        assert!(!w.is_final("a", i64::MIN, 60));
    }

    #[test]
    fn when_every_shard_is_quiet_the_last_ones_still_count() {
        // The pipeline stopped: the newest entry is old, and the ones near it still count.
        let w = Watermarks::from_item(&item(&[
            ("s:a", shard_value(700, 5_000)),
            ("s:b", shard_value(900, 4_000)),
        ]));
        assert_eq!(w.watermark(), Some(700));
    }
}
