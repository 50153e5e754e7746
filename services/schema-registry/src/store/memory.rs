//! A process-local [`SchemaStore`]: the same atomic primitives under one mutex.
//!
//! For API tests and demos; everything is lost when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{Append, Claim, SchemaRecord, SchemaStore, VersionRecord};
use crate::error::{Error, Result};

#[derive(Default)]
struct Inner {
    last_id: u32,
    schemas: HashMap<u32, SchemaRecord>,
    fingerprints: HashMap<String, u32>,
    /// subject -> version -> record; BTreeMaps keep listings sorted.
    subjects: BTreeMap<String, BTreeMap<u32, VersionRecord>>,
}

/// Subjects and schemas in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        // A poisoned lock means a panic mid-update; refuse rather than serve half a write.
        self.inner.lock().map_err(|_| Error::Store {
            op: "lock",
            message: "memory store poisoned".into(),
            retryable: false,
        })
    }
}

impl SchemaStore for MemoryStore {
    async fn schema_by_id(&self, id: u32) -> Result<Option<SchemaRecord>> {
        Ok(self.lock()?.schemas.get(&id).cloned())
    }

    async fn id_by_fingerprint(&self, fingerprint: &str) -> Result<Option<u32>> {
        Ok(self.lock()?.fingerprints.get(fingerprint).copied())
    }

    async fn allocate_id(&self) -> Result<u32> {
        let mut inner = self.lock()?;
        inner.last_id = inner.last_id.checked_add(1).ok_or_else(|| Error::Store {
            op: "allocate_id",
            message: "schema ids exhausted".into(),
            retryable: false,
        })?;
        Ok(inner.last_id)
    }

    async fn put_schema(&self, record: &SchemaRecord) -> Result<()> {
        self.lock()?.schemas.insert(record.id, record.clone());
        Ok(())
    }

    async fn delete_schema(&self, id: u32) -> Result<()> {
        self.lock()?.schemas.remove(&id);
        Ok(())
    }

    async fn claim_fingerprint(&self, fingerprint: &str, id: u32) -> Result<Claim> {
        let mut inner = self.lock()?;
        if let Some(existing) = inner.fingerprints.get(fingerprint) {
            return Ok(Claim::Taken(*existing));
        }
        inner.fingerprints.insert(fingerprint.to_owned(), id);
        Ok(Claim::Won)
    }

    async fn version_by_fingerprint(
        &self,
        subject: &str,
        fingerprint: &str,
    ) -> Result<Option<VersionRecord>> {
        Ok(self.lock()?.subjects.get(subject).and_then(|versions| {
            versions
                .values()
                .find(|v| v.fingerprint == fingerprint)
                .cloned()
        }))
    }

    async fn latest_version(&self, subject: &str) -> Result<Option<u32>> {
        Ok(self
            .lock()?
            .subjects
            .get(subject)
            .and_then(|versions| versions.keys().next_back().copied()))
    }

    async fn append_version(&self, record: &VersionRecord) -> Result<Append> {
        let mut inner = self.lock()?;
        let versions = inner.subjects.entry(record.subject.clone()).or_default();
        if versions.contains_key(&record.version)
            || versions
                .values()
                .any(|v| v.fingerprint == record.fingerprint)
        {
            return Ok(Append::Conflict);
        }
        versions.insert(record.version, record.clone());
        Ok(Append::Appended)
    }

    async fn version(&self, subject: &str, version: u32) -> Result<Option<VersionRecord>> {
        Ok(self
            .lock()?
            .subjects
            .get(subject)
            .and_then(|versions| versions.get(&version).cloned()))
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        Ok(self
            .lock()?
            .subjects
            .get(subject)
            .map(|versions| versions.keys().copied().collect())
            .unwrap_or_default())
    }

    async fn subjects(&self) -> Result<Vec<String>> {
        Ok(self
            .lock()?
            .subjects
            .iter()
            .filter(|(_, versions)| !versions.is_empty())
            .map(|(subject, _)| subject.clone())
            .collect())
    }

    async fn usages(&self, id: u32) -> Result<Vec<(String, u32)>> {
        let inner = self.lock()?;
        Ok(inner
            .subjects
            .values()
            .flat_map(|versions| versions.values())
            .filter(|v| v.id == id)
            .map(|v| (v.subject.clone(), v.version))
            .collect())
    }
}
