//! Sample archive rows for tests of the archive's readers and writers (feature `testing`).

use std::collections::HashMap;

use crate::table::{ArchivedRow, attributes_json};

/// Row `i` of a sample partition: every column set, some optional ones empty by `i`, text
/// that needs escaping in the attributes.
pub fn sample_row(i: i64) -> ArchivedRow {
    ArchivedRow {
        event_id: format!("0190a3c2-7d2e-7000-8000-{i:012}"),
        source: "shop-web".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: 3,
        event_time: 1_764_000_000_000 + i,
        ingest_time: 1_764_000_000_100 + i,
        validated_at: (i % 2 == 0).then_some(1_764_000_000_200 + i),
        enriched_at: Some(1_764_000_000_300 + i),
        archived_at: 1_764_000_001_000,
        trace_header: (i % 3 == 0).then(|| format!("Root=1-5759e988-{i:024};Sampled=1")),
        agg_key: "orders:category=books".into(),
        metric: 12.5 * i as f64,
        window_start: 1_764_000_000_000,
        reference_found: i % 2 == 1,
        attributes_json: attributes_json(&HashMap::from([
            ("category".to_owned(), "books".to_owned()),
            ("brand".to_owned(), "ünïcode \"quoted\"".to_owned()),
        ])),
        payload_json: format!("{{\"quantity\":{i}}}"),
        payload: vec![0, 1, 2, 255, i as u8],
        kinesis_partition_key: format!("pk-{i}"),
        kinesis_sequence_number: format!("4959{i:04}"),
        kinesis_shard_id: "shardId-000000000000".into(),
        late: false,
    }
}

/// The archive bucket in process memory, for tests and benches: every object's bytes by
/// key. Clones share the objects. With `down`, writes fail as in an S3 outage (reads of
/// what is there still work, so a test can look at the bucket).
#[derive(Debug, Clone, Default)]
pub struct MemoryBucket {
    /// The objects, by key.
    pub objects: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    /// Whether S3 refuses writes.
    pub down: bool,
}

impl MemoryBucket {
    /// A bucket whose writes fail as in an S3 outage.
    pub fn down() -> Self {
        MemoryBucket {
            down: true,
            ..MemoryBucket::default()
        }
    }

    /// A copy of every object.
    pub fn objects(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Vec<u8>>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refuse_writes(&self, operation: &'static str) -> Result<(), crate::ArchiveError> {
        if self.down {
            return Err(crate::ArchiveError::Store(riffle_aws::AwsError::Call {
                operation,
                code: "SlowDown".into(),
                message: String::new(),
                retryable: true,
            }));
        }
        Ok(())
    }

    /// Archived rows per event id, over the live objects (those no compacted object
    /// replaces).
    pub fn rows_per_event(&self) -> std::collections::BTreeMap<String, usize> {
        use crate::scan::{REPLACES_KEY, is_compacted};
        use crate::table::{Footer, footer_key_values, read_rows};
        let objects = self.lock();
        let mut replaced = std::collections::HashSet::new();
        for (key, bytes) in objects.iter().filter(|(k, _)| is_compacted(k)) {
            let Ok(Footer::KeyValues(kv)) = footer_key_values(bytes) else {
                continue;
            };
            let dir = &key[..key.rfind('/').map_or(0, |i| i + 1)];
            for (_, names) in kv.iter().filter(|(k, _)| k == REPLACES_KEY) {
                replaced.extend(names.lines().map(|n| format!("{dir}{n}")));
            }
        }
        let mut out = std::collections::BTreeMap::new();
        for (key, bytes) in objects.iter() {
            if replaced.contains(key) {
                continue;
            }
            for row in read_rows(bytes).unwrap_or_default() {
                *out.entry(row.event_id).or_default() += 1;
            }
        }
        out
    }
}

impl crate::ObjectStore for MemoryBucket {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), crate::ArchiveError> {
        self.refuse_writes("PutObject")?;
        self.lock().insert(key.to_owned(), body);
        Ok(())
    }
}

impl crate::ArchiveBucket for MemoryBucket {
    async fn list(&self, prefix: &str) -> Result<Vec<crate::ObjectInfo>, crate::ArchiveError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| crate::ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, crate::ArchiveError> {
        self.lock().get(key).cloned().ok_or_else(|| {
            crate::ArchiveError::Store(riffle_aws::AwsError::Call {
                operation: "GetObject",
                code: "NoSuchKey".into(),
                message: format!("no object {key}"),
                retryable: false,
            })
        })
    }

    async fn get_tail(&self, key: &str, bytes: usize) -> Result<Vec<u8>, crate::ArchiveError> {
        let all = self.get(key).await?;
        Ok(all[all.len().saturating_sub(bytes)..].to_vec())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), crate::ArchiveError> {
        let mut objects = self.lock();
        for k in keys {
            objects.remove(k);
        }
        Ok(())
    }
}
