//! Write intents: which archive objects an attempt was about to write, recorded before the
//! write so that a redelivery after a crash can finish what the crashed attempt began
//! (ADR 0009, "Amendment: the archive").
//!
//! The origin marks (`riffle_stage::marks`) say which records' rows are durable, and they
//! are written once per batch, after its objects. A crash in between leaves rows in the
//! archive that the marks do not cover; a redelivery cut differently would name its objects
//! differently and write those rows again. An [`Intent`] closes that window: the handler adds
//! the intents of its objects to its shard's intent item before any of them is written, and
//! removes each once the marks cover all its rows. Any intent found at the start of a batch
//! is an object whose rows the marks may not cover; the handler looks for it in the bucket
//! and skips the records it finds in it (see [`crate::handler`]; the search is `recover.rs`).
//!
//! One item per input shard, in the marks table: `pk = "archiver-intents#<shard id>"`, a
//! string set `pending` of encoded intents, and `expires_at` (the table's TTL attribute, so an
//! abandoned shard's item goes away). Adding and removing are single
//! `UpdateItem`s with `ADD`/`DELETE` on the set: atomic, so even concurrent batches of one
//! shard cannot lose each other's entries.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_aws::AwsError;

use crate::ArchiverError;
use riffle_archive::key::cmp_sequence;

/// The prefix of intent item keys; marks items start with `marks#`, so they never share a
/// key.
pub const INTENT_STAGE: &str = "archiver-intents";
/// The partition key of `shard`'s intent item (shard ids are short: no hashing needed).
pub fn intent_key(shard: &str) -> String {
    format!("{INTENT_STAGE}#{shard}")
}

/// Intents one batch adds to its shard's item at a time. DynamoDB items hold at most
/// 400 KB and an intent is a key (~250 bytes) plus two sequence numbers, so a batch with more
/// groups than this writes them in waves, each removed before the next is added.
pub const MAX_INTENTS_PER_WAVE: usize = 256;

const PK: &str = "pk";
const PENDING: &str = "pending";
const EXPIRES_AT: &str = "expires_at";

/// One object an attempt was about to write: its key and the first and last sequence
/// numbers of its rows' input records (all of one shard).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Intent {
    /// First sequence number among the object's rows.
    pub first_sequence: String,
    /// Last sequence number among the object's rows.
    pub last_sequence: String,
    /// The object key.
    pub key: String,
}

impl Intent {
    /// `<first>|<last>|<key>`: sequence numbers are digits, so the first two `|` split.
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}",
            self.first_sequence, self.last_sequence, self.key
        )
    }

    /// Reads [`Intent::encode`]'s form; `None` for anything else.
    pub fn decode(text: &str) -> Option<Intent> {
        let mut parts = text.splitn(3, '|');
        let first = parts.next()?;
        let last = parts.next()?;
        let key = parts.next()?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) || key.is_empty() {
            return None;
        }
        Some(Intent {
            first_sequence: first.to_owned(),
            last_sequence: last.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Whether no record at or after `sequence` on its shard can be one of this object's rows:
    /// once a batch starts past an intent's last record, that record is checkpointed and no
    /// redelivery will ever present it again.
    pub fn is_behind(&self, sequence: &str) -> bool {
        cmp_sequence(&self.last_sequence, sequence).is_lt()
    }

    /// Whether `sequence` lies within the object's range.
    pub fn covers(&self, sequence: &str) -> bool {
        cmp_sequence(&self.first_sequence, sequence).is_le()
            && cmp_sequence(sequence, &self.last_sequence).is_le()
    }
}

/// Where intents are kept, per input shard.
pub trait Intents: Send + Sync + 'static {
    /// The intents recorded for `shard` (strongly consistent).
    ///
    /// # Errors
    /// The store could not be read.
    fn pending(
        &self,
        shard: &str,
    ) -> impl Future<Output = Result<Vec<Intent>, ArchiverError>> + Send;

    /// Records `intents` for `shard`; they hold until removed or, untouched, for the window.
    ///
    /// # Errors
    /// The store could not be written; nothing may be written to the bucket then.
    fn add(
        &self,
        shard: &str,
        intents: &[Intent],
        now_secs: i64,
    ) -> impl Future<Output = Result<(), ArchiverError>> + Send;

    /// Drops `intents` of `shard` (absent ones are no error).
    ///
    /// # Errors
    /// The store could not be written.
    fn remove(
        &self,
        shard: &str,
        intents: &[Intent],
    ) -> impl Future<Output = Result<(), ArchiverError>> + Send;
}

/// [`Intents`] in process memory, for benches and tests. Clones share the intents.
#[derive(Debug, Clone, Default)]
pub struct MemoryIntents {
    items: Arc<Mutex<HashMap<String, BTreeSet<Intent>>>>,
}

impl MemoryIntents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<Intent>>> {
        // A poisoned lock only means another thread panicked mid-update of a plain map.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Intents held over all shards.
    pub fn len(&self) -> usize {
        self.lock().values().map(BTreeSet::len).sum()
    }

    /// True when no intent is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Intents for MemoryIntents {
    async fn pending(&self, shard: &str) -> Result<Vec<Intent>, ArchiverError> {
        Ok(self
            .lock()
            .get(shard)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn add(
        &self,
        shard: &str,
        intents: &[Intent],
        _now_secs: i64,
    ) -> Result<(), ArchiverError> {
        self.lock()
            .entry(shard.to_owned())
            .or_default()
            .extend(intents.iter().cloned());
        Ok(())
    }

    async fn remove(&self, shard: &str, intents: &[Intent]) -> Result<(), ArchiverError> {
        let mut items = self.lock();
        if let Some(set) = items.get_mut(shard) {
            for intent in intents {
                set.remove(intent);
            }
            if set.is_empty() {
                items.remove(shard);
            }
        }
        Ok(())
    }
}

/// [`Intents`] in the claims table (hash key `pk` S, TTL `expires_at`).
#[derive(Debug, Clone)]
pub struct DynamoIntents {
    client: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    window_secs: i64,
}

impl DynamoIntents {
    /// Intents in `table`, kept for `window` after the last addition.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        window: Duration,
    ) -> Self {
        DynamoIntents {
            client,
            table: Arc::from(table.into()),
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

impl Intents for DynamoIntents {
    async fn pending(&self, shard: &str) -> Result<Vec<Intent>, ArchiverError> {
        let got = self
            .client
            .get_item()
            .table_name(&*self.table)
            .key(PK, AttributeValue::S(intent_key(shard)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ArchiverError::Intents(AwsError::from_sdk("GetItem", e)))?;
        Ok(got
            .item()
            .and_then(|item| item.get(PENDING))
            .and_then(|p| p.as_ss().ok())
            .map(|set| set.iter().filter_map(|s| Intent::decode(s)).collect())
            .unwrap_or_default())
    }

    async fn add(
        &self,
        shard: &str,
        intents: &[Intent],
        now_secs: i64,
    ) -> Result<(), ArchiverError> {
        if intents.is_empty() {
            return Ok(());
        }
        let expires_at = now_secs.saturating_add(self.window_secs);
        self.client
            .update_item()
            .table_name(&*self.table)
            .key(PK, AttributeValue::S(intent_key(shard)))
            .update_expression("ADD #p :entries SET #e = :expires")
            .expression_attribute_names("#p", PENDING)
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(
                ":entries",
                AttributeValue::Ss(intents.iter().map(Intent::encode).collect()),
            )
            .expression_attribute_values(":expires", AttributeValue::N(expires_at.to_string()))
            .send()
            .await
            .map_err(|e| ArchiverError::Intents(AwsError::from_sdk("UpdateItem", e)))?;
        Ok(())
    }

    async fn remove(&self, shard: &str, intents: &[Intent]) -> Result<(), ArchiverError> {
        if intents.is_empty() {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&*self.table)
            .key(PK, AttributeValue::S(intent_key(shard)))
            .update_expression("DELETE #p :entries")
            .expression_attribute_names("#p", PENDING)
            .expression_attribute_values(
                ":entries",
                AttributeValue::Ss(intents.iter().map(Intent::encode).collect()),
            )
            .send()
            .await
            .map_err(|e| ArchiverError::Intents(AwsError::from_sdk("UpdateItem", e)))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn intent(first: &str, last: &str, key: &str) -> Intent {
        Intent {
            first_sequence: first.into(),
            last_sequence: last.into(),
            key: key.into(),
        }
    }

    #[test]
    fn intents_round_trip_and_keys_may_hold_bars() {
        let i = intent(
            "10",
            "99",
            "events/subject=a%7Cb/dt=x/hour=01/s-10-99.parquet",
        );
        assert_eq!(Intent::decode(&i.encode()), Some(i.clone()));
        let odd = intent("1", "2", "a|b|c");
        assert_eq!(Intent::decode(&odd.encode()), Some(odd));
        for bad in ["", "1|2", "x|2|k", "1||k", "1|2|"] {
            assert_eq!(Intent::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges_compare_sequence_numbers_by_value() {
        let i = intent("98", "120", "k");
        assert!(i.covers("98") && i.covers("99") && i.covers("120"));
        assert!(!i.covers("97") && !i.covers("121") && !i.covers("1000"));
        assert!(i.is_behind("121") && i.is_behind("1000"));
        assert!(!i.is_behind("120") && !i.is_behind("99"));
    }

    #[tokio::test]
    async fn memory_intents_add_and_remove_per_shard() {
        let m = MemoryIntents::default();
        let (a, b) = (intent("1", "2", "a"), intent("3", "4", "b"));
        m.add("s1", &[a.clone(), b.clone()], 0).await.unwrap();
        m.add("s2", std::slice::from_ref(&a), 0).await.unwrap();
        assert_eq!(m.pending("s1").await.unwrap(), vec![a.clone(), b.clone()]);
        m.remove("s1", &[a.clone(), intent("9", "9", "never")])
            .await
            .unwrap();
        assert_eq!(m.pending("s1").await.unwrap(), vec![b.clone()]);
        m.remove("s1", &[b]).await.unwrap();
        assert!(m.pending("s1").await.unwrap().is_empty());
        assert_eq!(m.len(), 1);
    }
}
