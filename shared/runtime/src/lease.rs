//! Shard leases, so several instances of one function share a stream without reading a
//! shard twice at once.
//!
//! A lease lives in the shard's checkpoint item (`<function>#<stream>#<shard>`, laid out
//! in [`crate::shard_item`]), beside `seq`: `lease_owner` (the instance id),
//! `lease_expires_ms` (epoch milliseconds) and `lease_counter` (bumped by every take,
//! renewal and release). Every change is a conditional update: a renewal or release only
//! while this instance is the owner, a take only while the lease is free or expired *and*
//! the counter is the one the taker read, so two instances racing for one lease cannot both
//! win, and a take decided on a stale read fails. Checkpoint writes are conditional on the
//! owner too ([`crate::checkpoint::CheckpointStore::save_as`]).
//!
//! Each instance also keeps a heartbeat item `<function>#<stream>#instance#<id>` with its
//! own expiry, renewed with its leases: the live instances are those with an unexpired
//! heartbeat, which is how an instance that holds nothing yet is counted in the fair share
//! ([`plan`]). Expiry times are wall-clock milliseconds: the instances of one local run
//! share a clock.

use std::collections::{BTreeSet, HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::RuntimeError;
use crate::shard_item::{Checkpoint, INSTANCE_MARK, ItemKeys, PK, SEQ};
// Still named from here by callers that think in leases, as before the item's layout had a
// module of its own.
pub use crate::shard_item::{CONDITION_FAILED, LEASE_COUNTER, LEASE_EXPIRES_MS, LEASE_OWNER};

/// Milliseconds since the epoch, the unit of lease expiry.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One shard's item as read: its checkpoint and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    /// Where the shard stands.
    pub checkpoint: Checkpoint,
    /// Who holds the lease, if anyone.
    pub owner: Option<String>,
    /// When the lease lapses (epoch ms).
    pub expires_ms: i64,
    /// The lease's counter; `None` when no lease was ever taken.
    pub counter: Option<i64>,
}

impl ShardRow {
    /// Free or expired at `now_ms`: anyone may take it.
    pub fn takeable(&self, now_ms: i64) -> bool {
        self.owner.is_none() || self.expires_ms < now_ms
    }
}

/// The lease table of one function on one stream.
#[derive(Debug, Clone, Default)]
pub struct LeaseView {
    /// Shard items by shard id.
    pub shards: HashMap<String, ShardRow>,
    /// Instances with an unexpired heartbeat.
    pub live: HashSet<String>,
}

impl LeaseView {
    /// Whether a shard is closed and fully processed, by whichever instance.
    pub fn finished(&self, shard_id: &str) -> bool {
        self.shards
            .get(shard_id)
            .is_some_and(|r| r.checkpoint == Checkpoint::ShardEnd)
    }
}

/// What an instance should do with leases now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeasePlan {
    /// Shards to take, with the counter read (the take is conditional on it).
    pub take: Vec<(String, Option<i64>)>,
    /// Held shards to hand back: more than the fair share is held while others are alive.
    pub shed: Vec<String>,
}

/// The fair share: each live instance holds at most `ceil(workable / live)` shards. An
/// instance takes free or expired leases up to its share, and gives back what it holds
/// above it, so a newcomer gets shards without anyone stealing a live lease. `workable`
/// are the shards open for reading now (not finished, parents finished), in the order
/// they should be taken; `held` those this instance holds.
pub fn plan(
    workable: &[String],
    view: &LeaseView,
    held: &BTreeSet<String>,
    me: &str,
    now_ms: i64,
) -> LeasePlan {
    let live = view.live.iter().filter(|i| i.as_str() != me).count() + 1;
    let share = workable.len().div_ceil(live);
    let mut out = LeasePlan::default();
    if held.len() > share {
        // The last ones by id, so every instance sheds alike and shards do not bounce.
        out.shed = held
            .iter()
            .rev()
            .take(held.len() - share)
            .cloned()
            .collect();
        return out;
    }
    let mut count = held.len();
    for shard in workable {
        if count >= share {
            break;
        }
        if held.contains(shard) {
            continue;
        }
        let (takeable, counter) = match view.shards.get(shard) {
            Some(row) => (row.takeable(now_ms), row.counter),
            None => (true, None),
        };
        if takeable {
            out.take.push((shard.clone(), counter));
            count += 1;
        }
    }
    out
}

/// Reads and changes the leases of one function on one stream, as one instance.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    keys: ItemKeys,
    owner: String,
    duration_ms: i64,
}

impl LeaseStore {
    /// Leases of `function_name` on `stream_name` in `table`, held as `owner` for
    /// `duration` at a time.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        function_name: &str,
        stream_name: &str,
        owner: impl Into<String>,
        duration: std::time::Duration,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            keys: ItemKeys::new(function_name, stream_name),
            owner: owner.into(),
            duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// This instance's id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn key(&self, shard_id: &str) -> AttributeValue {
        AttributeValue::S(self.keys.shard(shard_id))
    }

    fn instance_key(&self) -> AttributeValue {
        AttributeValue::S(self.keys.instance(&self.owner))
    }

    /// Every shard item and heartbeat of this function on this stream (a scan: the
    /// table is local and small).
    pub async fn read(&self, now_ms: i64) -> Result<LeaseView, RuntimeError> {
        let mut view = LeaseView::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(
                    ":prefix",
                    AttributeValue::S(self.keys.prefix().to_owned()),
                )
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| RuntimeError::Aws(riffle_aws::AwsError::from_sdk("Scan", e)))?;
            for item in out.items() {
                let Some(rest) = item
                    .get(PK)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|pk| pk.strip_prefix(self.keys.prefix()))
                else {
                    continue;
                };
                let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                let n = |name: &str| {
                    item.get(name)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse::<i64>().ok())
                };
                let expires_ms = n(LEASE_EXPIRES_MS).unwrap_or(0);
                if let Some(instance) = rest.strip_prefix(INSTANCE_MARK) {
                    if expires_ms >= now_ms {
                        view.live.insert(instance.to_owned());
                    }
                    continue;
                }
                let checkpoint = Checkpoint::from_seq(s(SEQ).as_deref());
                view.shards.insert(
                    rest.to_owned(),
                    ShardRow {
                        checkpoint,
                        owner: s(LEASE_OWNER),
                        expires_ms,
                        counter: n(LEASE_COUNTER),
                    },
                );
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(view),
            }
        }
    }

    /// Says this instance is alive until one lease duration from `now_ms`.
    pub async fn heartbeat(&self, now_ms: i64) -> Result<(), RuntimeError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, self.instance_key())
            .item(
                LEASE_EXPIRES_MS,
                AttributeValue::N((now_ms + self.duration_ms).to_string()),
            )
            .send()
            .await
            .map_err(|e| RuntimeError::Aws(riffle_aws::AwsError::from_sdk("PutItem", e)))
            .map(|_| ())
    }

    /// Removes the heartbeat, so the others count one instance fewer at once.
    pub async fn leave(&self) -> Result<(), RuntimeError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, self.instance_key())
            .send()
            .await
            .map_err(|e| RuntimeError::Aws(riffle_aws::AwsError::from_sdk("DeleteItem", e)))
            .map(|_| ())
    }

    /// Takes a free or expired lease whose counter is still `seen`; the new counter, or
    /// `None` when another instance changed the lease first. Valid until `now_ms` plus
    /// the duration.
    pub async fn acquire(
        &self,
        shard_id: &str,
        seen: Option<i64>,
        now_ms: i64,
    ) -> Result<Option<i64>, RuntimeError> {
        let next = seen.unwrap_or(0) + 1;
        let counter_unchanged = match seen {
            Some(_) => "#counter = :seen",
            None => "attribute_not_exists(#counter)",
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, self.key(shard_id))
            .update_expression("SET #owner = :me, #expires = :expires, #counter = :next")
            .condition_expression(format!(
                "({counter_unchanged}) AND (attribute_not_exists(#owner) OR #expires < :now)"
            ))
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#expires", LEASE_EXPIRES_MS)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .expression_attribute_values(
                ":expires",
                AttributeValue::N((now_ms + self.duration_ms).to_string()),
            )
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()));
        if let Some(seen) = seen {
            request =
                request.expression_attribute_values(":seen", AttributeValue::N(seen.to_string()));
        }
        self.conditional(request.send().await, next)
    }

    /// Extends a held lease; false when it is no longer ours. Conditional on the owner
    /// only: a takeover changes the owner, and a renewal whose answer was lost (a timeout)
    /// must not make the next one fail.
    pub async fn renew(&self, shard_id: &str, now_ms: i64) -> Result<bool, RuntimeError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, self.key(shard_id))
            .update_expression("SET #expires = :expires, #counter = #counter + :one")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#expires", LEASE_EXPIRES_MS)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .expression_attribute_values(
                ":expires",
                AttributeValue::N((now_ms + self.duration_ms).to_string()),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .send()
            .await;
        self.conditional(out, 0).map(|o| o.is_some())
    }

    /// Hands a held lease back (free at once); a lease no longer ours is left alone.
    pub async fn release(&self, shard_id: &str) -> Result<(), RuntimeError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, self.key(shard_id))
            .update_expression("REMOVE #owner SET #expires = :zero, #counter = #counter + :one")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#expires", LEASE_EXPIRES_MS)
            .expression_attribute_names("#counter", LEASE_COUNTER)
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .expression_attribute_values(":zero", AttributeValue::N("0".to_owned()))
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .send()
            .await;
        self.conditional(out, 0).map(|_| ())
    }

    fn conditional<O, E, R>(
        &self,
        out: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
        next: i64,
    ) -> Result<Option<i64>, RuntimeError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug,
    {
        match out {
            Ok(_) => Ok(Some(next)),
            Err(e) => {
                let e = riffle_aws::AwsError::from_sdk("UpdateItem", e);
                if e.code() == Some(CONDITION_FAILED) {
                    Ok(None)
                } else {
                    Err(RuntimeError::Aws(e))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn row(owner: Option<&str>, expires_ms: i64, counter: i64) -> ShardRow {
        ShardRow {
            checkpoint: Checkpoint::None,
            owner: owner.map(str::to_owned),
            expires_ms,
            counter: Some(counter),
        }
    }

    fn shards(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn held(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn alone_an_instance_takes_every_free_shard() {
        let view = LeaseView {
            live: ["me".to_owned()].into(),
            ..LeaseView::default()
        };
        let p = plan(&shards(4), &view, &BTreeSet::new(), "me", 1_000);
        assert_eq!(p.take.len(), 4);
        assert!(p.take.iter().all(|(_, c)| c.is_none()));
        assert!(p.shed.is_empty());
    }

    #[test]
    fn live_leases_are_never_taken_expired_ones_are() {
        let mut view = LeaseView {
            live: ["me".to_owned()].into(),
            ..LeaseView::default()
        };
        view.shards
            .insert("s0".into(), row(Some("other"), 2_000, 7));
        view.shards.insert("s1".into(), row(Some("dead"), 500, 3));
        view.shards.insert("s2".into(), row(None, 0, 9));
        let p = plan(&shards(3), &view, &BTreeSet::new(), "me", 1_000);
        assert_eq!(
            p.take,
            vec![("s1".to_owned(), Some(3)), ("s2".to_owned(), Some(9))]
        );
    }

    #[test]
    fn a_newcomer_gets_a_fair_share_by_shedding() {
        let mut view = LeaseView {
            live: ["a".to_owned(), "b".to_owned()].into(),
            ..LeaseView::default()
        };
        for s in shards(4) {
            view.shards.insert(s, row(Some("a"), 9_000, 1));
        }
        let all = held(&["s0", "s1", "s2", "s3"]);
        let a = plan(&shards(4), &view, &all, "a", 1_000);
        assert_eq!(a.shed, ["s3", "s2"]);
        assert!(a.take.is_empty());
        // b takes nothing held live, and only up to its share once shards are free.
        assert_eq!(
            plan(&shards(4), &view, &BTreeSet::new(), "b", 1_000),
            LeasePlan::default()
        );
        view.shards.insert("s2".into(), row(None, 0, 2));
        view.shards.insert("s3".into(), row(None, 0, 2));
        let b = plan(&shards(4), &view, &BTreeSet::new(), "b", 1_000);
        assert_eq!(b.take.len(), 2);
        // Three shards over two instances: 2 and 1, stable.
        let a = plan(&shards(3), &view, &held(&["s0", "s1"]), "a", 1_000);
        assert_eq!(a, LeasePlan::default());
    }

    #[test]
    fn dead_heartbeats_do_not_count() {
        // `live` holds only unexpired heartbeats (see `read`); an instance not in it
        // does not lower the share.
        let view = LeaseView {
            live: ["me".to_owned()].into(),
            ..LeaseView::default()
        };
        let p = plan(&shards(2), &view, &held(&["s0"]), "me", 1_000);
        assert_eq!(p.take, vec![("s1".to_owned(), None)]);
    }
}
