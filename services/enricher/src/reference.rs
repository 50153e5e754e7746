//! Reference data (product and device metadata) behind an in-memory cache with a TTL.
//!
//! Enrichment joins every event with a reference item; asking DynamoDB per event would cost a
//! round trip per record. The cache keeps hits and misses (a missing item is a fact worth
//! remembering too) for `ttl`, and a batch asks only for the keys it lacks, in BatchGetItem
//! calls within DynamoDB's limits (`riffle_aws::dynamo_batch`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_aws::AwsError;
use riffle_aws::dynamo_batch::{self, Read};

/// One reference item's attributes.
pub type Attributes = Arc<HashMap<String, String>>;

/// Where reference items come from.
pub trait ReferenceSource: Send + Sync {
    /// The items found among `keys` (absent keys are simply not in the map).
    fn fetch(
        &self,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<HashMap<String, Attributes>, AwsError>> + Send;
}

/// Reference items in a DynamoDB table keyed by `pk` (S); every other string or number
/// attribute becomes an attribute.
#[derive(Debug, Clone)]
pub struct DynamoReference {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoReference {
    /// Reads `table` through `client`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoReference {
            client,
            table: table.into(),
        }
    }
}

fn item_attributes(item: &HashMap<String, AttributeValue>) -> Option<(String, Attributes)> {
    let pk = item.get("pk")?.as_s().ok()?.clone();
    let attrs = item
        .iter()
        .filter(|(k, _)| k.as_str() != "pk")
        .filter_map(|(k, v)| match v {
            AttributeValue::S(s) => Some((k.clone(), s.clone())),
            AttributeValue::N(n) => Some((k.clone(), n.clone())),
            AttributeValue::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect();
    Some((pk, Arc::new(attrs)))
}

impl ReferenceSource for DynamoReference {
    async fn fetch(&self, keys: Vec<String>) -> Result<HashMap<String, Attributes>, AwsError> {
        let keys = keys
            .into_iter()
            .map(|k| HashMap::from([("pk".to_string(), AttributeValue::S(k))]))
            .collect();
        // Keys DynamoDB leaves unprocessed are asked again; if they stay so, the batch fails
        // (and is retried) rather than enriching their events as if the items were missing.
        let items =
            dynamo_batch::batch_get(&self.client, &self.table, keys, Read::Eventual).await?;
        Ok(items.iter().filter_map(item_attributes).collect())
    }
}

/// A TTL cache in front of a [`ReferenceSource`].
pub struct ReferenceCache<R> {
    source: R,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Option<Attributes>)>>,
}

impl<R> std::fmt::Debug for ReferenceCache<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<R: ReferenceSource> ReferenceCache<R> {
    /// Caches answers of `source` for `ttl`.
    pub fn new(source: R, ttl: Duration) -> Self {
        ReferenceCache {
            source,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The attributes of each key (`None` = no such reference item), fetching only keys that
    /// are not cached or whose entry expired.
    ///
    /// # Errors
    /// When the source fails; nothing is cached then.
    pub async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Option<Attributes>>, AwsError> {
        let now = Instant::now();
        let mut answer = HashMap::with_capacity(keys.len());
        let mut missing = Vec::new();
        {
            // A panic elsewhere cannot leave the map half-written, so a poisoned lock is safe.
            let entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for key in keys {
                match entries.get(key) {
                    Some((at, value)) if now.duration_since(*at) < self.ttl => {
                        answer.insert(key.clone(), value.clone());
                    }
                    _ => missing.push(key.clone()),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(answer);
        }
        let mut fetched = self.source.fetch(missing.clone()).await?;
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in missing {
            let value = fetched.remove(&key);
            entries.insert(key.clone(), (now, value.clone()));
            answer.insert(key, value);
        }
        Ok(answer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        asked: Mutex<Vec<String>>,
    }

    impl ReferenceSource for &Counting {
        async fn fetch(&self, keys: Vec<String>) -> Result<HashMap<String, Attributes>, AwsError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.asked.lock().unwrap().extend(keys.iter().cloned());
            Ok(keys
                .into_iter()
                .filter(|k| k.starts_with("product#"))
                .map(|k| {
                    (
                        k,
                        Arc::new(HashMap::from([(
                            "category".to_string(),
                            "books".to_string(),
                        )])),
                    )
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn caches_hits_and_misses_until_ttl() {
        let source = Counting {
            calls: AtomicUsize::new(0),
            asked: Mutex::new(Vec::new()),
        };
        let cache = ReferenceCache::new(&source, Duration::from_secs(60));
        let keys = vec![
            "product#1".to_string(),
            "device#9".to_string(),
            "product#1".to_string(),
        ];
        let first = cache.get_many(&keys).await.unwrap();
        assert!(first["product#1"].is_some());
        assert!(first["device#9"].is_none());
        assert_eq!(
            source.asked.lock().unwrap().len(),
            2,
            "duplicates asked once"
        );
        cache.get_many(&keys).await.unwrap();
        assert_eq!(
            source.calls.load(Ordering::SeqCst),
            1,
            "second batch served from cache"
        );

        let expired = ReferenceCache::new(&source, Duration::ZERO);
        expired.get_many(&keys).await.unwrap();
        expired.get_many(&keys).await.unwrap();
        assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    }
}
