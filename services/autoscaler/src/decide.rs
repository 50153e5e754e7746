//! The scaling decision for one stream, from its recent minutes.

use crate::{DAY_SECS, SHARD_BYTES_PER_SEC, SHARD_RECORDS_PER_SEC, UPDATES_PER_DAY};

/// One minute of a stream's metrics (CloudWatch's one-minute `Sum` of `IncomingBytes` and
/// `IncomingRecords`, `Maximum` of the consumers' `GetRecords.IteratorAgeMilliseconds`).
/// `None` is a minute CloudWatch has no datapoint for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minute {
    /// Start of the minute, epoch seconds.
    pub start: i64,
    pub incoming_bytes: Option<f64>,
    pub incoming_records: Option<f64>,
    pub iterator_age_ms: Option<f64>,
}

/// The scaling rules and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Scale up when every minute of the last `up_minutes` is at or above this utilization.
    pub up_threshold: f64,
    pub up_minutes: u32,
    /// Scale down when every minute of the last `down_minutes` is below this utilization.
    pub down_threshold: f64,
    pub down_minutes: u32,
    pub min_shards: u32,
    pub max_shards: u32,
    /// Consumers this far behind (iterator age, ms) block scaling down.
    pub max_lag_ms: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            up_threshold: 0.75,
            up_minutes: 5,
            down_threshold: 0.25,
            down_minutes: 60,
            min_shards: 1,
            max_shards: 64,
            max_lag_ms: 60_000.0,
        }
    }
}

/// What is known about the stream when deciding.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Now, epoch seconds.
    pub now: i64,
    /// Open shards now.
    pub shards: u32,
    /// Whether the stream is ACTIVE (a reshard in progress leaves it UPDATING).
    pub active: bool,
    /// When the stream was created, epoch seconds (DescribeStreamSummary): a young stream
    /// has no hour of history to call idle.
    pub created: i64,
    /// Recent complete minutes, any order.
    pub minutes: &'a [Minute],
    /// When this stream was resharded before (epoch seconds), any order.
    pub updates: &'a [i64],
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// Why nothing is done now.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The stream is being resharded or created.
    NotActive,
    /// Utilization between the thresholds, or not for long enough.
    Steady { utilization: Option<f64> },
    /// Busy enough to scale up, but already at `max_shards`.
    AtMax,
    /// Idle enough to scale down, but already at `min_shards`.
    AtMin,
    /// Idle enough to scale down, but the consumers are behind: fewer shards would mean fewer
    /// consumers working through the backlog.
    Lagging { iterator_age_ms: f64 },
    /// UpdateShardCount's 10 calls in a rolling day are used; the next is allowed then.
    DailyLimit { next_allowed: i64 },
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold(Hold),
    Scale {
        direction: Direction,
        from: u32,
        to: u32,
        /// The utilization that decided it: the lowest minute of the window going up, the
        /// highest going down.
        utilization: f64,
    },
}

/// A minute's utilization of `shards` shards: the larger of its byte and record rates against
/// a shard's write limits. `None` when the minute has no datapoint at all.
pub fn utilization(minute: &Minute, shards: u32) -> Option<f64> {
    if minute.incoming_bytes.is_none() && minute.incoming_records.is_none() {
        return None;
    }
    let shards = f64::from(shards.max(1));
    let bytes = minute.incoming_bytes.unwrap_or(0.0) / 60.0 / (SHARD_BYTES_PER_SEC * shards);
    let records = minute.incoming_records.unwrap_or(0.0) / 60.0 / (SHARD_RECORDS_PER_SEC * shards);
    Some(bytes.max(records))
}

/// Decides for one stream.
///
/// Only minutes that started after the last reshard count (earlier ones were measured
/// against another shard count, and Kinesis reports a reshard's parent and child shards
/// together while it settles), so a full window must pass after each reshard before the
/// next: 5 minutes before doubling again, an hour before halving.
pub fn decide(policy: &Policy, obs: &Observation<'_>) -> Decision {
    if !obs.active {
        return Decision::Hold(Hold::NotActive);
    }
    let last_update = obs.updates.iter().copied().max();
    let window = |minutes: u32| -> Vec<&Minute> {
        let from = obs.now - i64::from(minutes) * 60;
        obs.minutes
            .iter()
            .filter(|m| m.start >= from && m.start + 60 <= obs.now)
            .filter(|m| last_update.is_none_or(|u| m.start >= u))
            .collect()
    };

    // Up: every minute of the window present and busy (a missing minute is no evidence).
    let up_window = window(policy.up_minutes);
    let up_utils: Vec<f64> = up_window
        .iter()
        .filter_map(|m| utilization(m, obs.shards))
        .collect();
    let up_full = up_utils.len() == policy.up_minutes as usize && policy.up_minutes > 0;
    let lowest = up_utils.iter().copied().fold(f64::INFINITY, f64::min);
    if up_full && lowest >= policy.up_threshold {
        let to = obs.shards.saturating_mul(2).min(policy.max_shards);
        if to <= obs.shards {
            return Decision::Hold(Hold::AtMax);
        }
        if let Some(hold) = daily_limit(obs) {
            return Decision::Hold(hold);
        }
        return Decision::Scale {
            direction: Direction::Up,
            from: obs.shards,
            to,
            utilization: lowest,
        };
    }

    // Down: the whole window has passed since the stream was created or last resharded, and
    // no minute in it was busy (a minute without datapoints had no writes: Kinesis reports
    // nothing for an idle stream).
    let down_window = window(policy.down_minutes);
    let settled_since = last_update.unwrap_or(obs.created).max(obs.created);
    let window_elapsed = obs.now - settled_since >= i64::from(policy.down_minutes) * 60;
    let highest = down_window
        .iter()
        .map(|m| utilization(m, obs.shards).unwrap_or(0.0))
        .fold(0.0, f64::max);
    if window_elapsed && highest < policy.down_threshold {
        let to = obs.shards.div_ceil(2).max(policy.min_shards);
        if to >= obs.shards {
            return Decision::Hold(Hold::AtMin);
        }
        let lag = up_window
            .iter()
            .filter_map(|m| m.iterator_age_ms)
            .fold(0.0, f64::max);
        if lag > policy.max_lag_ms {
            return Decision::Hold(Hold::Lagging {
                iterator_age_ms: lag,
            });
        }
        if let Some(hold) = daily_limit(obs) {
            return Decision::Hold(hold);
        }
        return Decision::Scale {
            direction: Direction::Down,
            from: obs.shards,
            to,
            utilization: highest,
        };
    }

    let latest = obs
        .minutes
        .iter()
        .filter(|m| m.start + 60 <= obs.now)
        .max_by_key(|m| m.start)
        .and_then(|m| utilization(m, obs.shards));
    Decision::Hold(Hold::Steady {
        utilization: latest,
    })
}

/// The rolling-day limit of UpdateShardCount, if it is used up.
fn daily_limit(obs: &Observation<'_>) -> Option<Hold> {
    let mut recent: Vec<i64> = obs
        .updates
        .iter()
        .copied()
        .filter(|t| obs.now - t < DAY_SECS)
        .collect();
    if recent.len() < UPDATES_PER_DAY {
        return None;
    }
    recent.sort_unstable();
    // The call that frees a slot is the oldest of the last ten.
    let oldest = recent[recent.len() - UPDATES_PER_DAY];
    Some(Hold::DailyLimit {
        next_allowed: oldest + DAY_SECS,
    })
}

#[cfg(test)]
mod tests;
