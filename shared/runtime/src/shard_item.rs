//! The DynamoDB item of one (function, stream, shard): its checkpoint and its lease live in
//! one item, so a checkpoint write can be conditional on the lease it was made under.
//!
//! Both [`crate::checkpoint`] and [`crate::lease`] read and write this item; its layout is
//! here so neither has to reach into the other. Heartbeat items share the key scheme, the
//! table and the expiry attribute.

/// Partition key attribute.
pub const PK: &str = "pk";
/// Last processed sequence number.
pub const SEQ: &str = "seq";
/// When the checkpoint was written (RFC 3339).
pub const UPDATED_AT: &str = "updated_at";
/// Written as `seq` once a closed shard is read to its end; sequence numbers are digits.
pub const SHARD_END: &str = "SHARD_END";
/// The instance holding the lease; absent when the lease is free.
pub const LEASE_OWNER: &str = "lease_owner";
/// When the lease lapses unless renewed (epoch milliseconds).
pub const LEASE_EXPIRES_MS: &str = "lease_expires_ms";
/// Bumped by every change of the lease, so a taker can tell it read the latest state.
pub const LEASE_COUNTER: &str = "lease_counter";
/// The error code of a failed condition.
pub const CONDITION_FAILED: &str = "ConditionalCheckFailedException";
/// Heartbeat items: after the stream prefix, before the instance id.
pub(crate) const INSTANCE_MARK: &str = "instance#";

/// Where a shard stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Never processed.
    None,
    /// Records up to this sequence number are done.
    After(String),
    /// The shard is closed and fully processed.
    ShardEnd,
}

impl Checkpoint {
    /// The checkpoint an item's `seq` attribute (absent for a shard never processed) stands
    /// for.
    pub(crate) fn from_seq(seq: Option<&str>) -> Self {
        match seq {
            None => Checkpoint::None,
            Some(s) if s == SHARD_END => Checkpoint::ShardEnd,
            Some(s) => Checkpoint::After(s.to_owned()),
        }
    }
}

/// The keys of one function's items on one stream: `<function>#<stream>#<shard>` for a
/// shard, `<function>#<stream>#instance#<id>` for an instance's heartbeat. One prefix, so a
/// single scan finds every item of the function on the stream.
#[derive(Debug, Clone)]
pub struct ItemKeys {
    prefix: String,
}

impl ItemKeys {
    /// The keys of `function_name` reading `stream_name`.
    pub fn new(function_name: &str, stream_name: &str) -> Self {
        Self {
            prefix: format!("{function_name}#{stream_name}#"),
        }
    }

    /// What every key of this function on this stream starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of a shard's item.
    pub fn shard(&self, shard_id: &str) -> String {
        format!("{}{shard_id}", self.prefix)
    }

    /// The key of an instance's heartbeat item.
    pub fn instance(&self, owner: &str) -> String {
        format!("{}{INSTANCE_MARK}{owner}", self.prefix)
    }
}
