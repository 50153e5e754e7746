//! A process-local [`SchemaStore`]: the same atomic primitives under one mutex.
//!
//! For API tests and demos; everything is lost when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use riffle_codec::compatibility::CompatibilityLevel;

use super::{Append, Claim, SchemaRecord, SchemaStore, VersionRecord};
use crate::error::{Error, Result};

#[derive(Default)]
struct Inner {
    last_id: u32,
    schemas: HashMap<u32, SchemaRecord>,
    fingerprints: HashMap<String, u32>,
    /// subject -> version -> record; BTreeMaps keep listings sorted.
    subjects: BTreeMap<String, BTreeMap<u32, VersionRecord>>,
    global_level: Option<CompatibilityLevel>,
    subject_levels: HashMap<String, CompatibilityLevel>,
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
                .find(|v| !v.deleted && v.fingerprint == fingerprint)
                .cloned()
        }))
    }

    async fn latest(&self, subject: &str) -> Result<Option<VersionRecord>> {
        Ok(self
            .lock()?
            .subjects
            .get(subject)
            .and_then(|versions| versions.values().next_back().cloned()))
    }

    async fn append_version(&self, record: &VersionRecord) -> Result<Append> {
        let mut inner = self.lock()?;
        let versions = inner.subjects.entry(record.subject.clone()).or_default();
        if versions.contains_key(&record.version)
            || versions
                .values()
                .any(|v| !v.deleted && v.fingerprint == record.fingerprint)
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

    async fn versions(&self, subject: &str) -> Result<Vec<VersionRecord>> {
        Ok(self
            .lock()?
            .subjects
            .get(subject)
            .map(|versions| versions.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        Ok(self
            .lock()?
            .subjects
            .iter()
            .filter(|(_, versions)| versions.values().any(|v| include_deleted || !v.deleted))
            .map(|(subject, _)| subject.clone())
            .collect())
    }

    async fn usages(&self, id: u32, include_deleted: bool) -> Result<Vec<(String, u32)>> {
        let inner = self.lock()?;
        Ok(inner
            .subjects
            .values()
            .flat_map(|versions| versions.values())
            .filter(|v| v.id == id && (include_deleted || !v.deleted))
            .map(|v| (v.subject.clone(), v.version))
            .collect())
    }

    async fn soft_delete_version(&self, record: &VersionRecord) -> Result<bool> {
        let mut inner = self.lock()?;
        match inner
            .subjects
            .get_mut(&record.subject)
            .and_then(|versions| versions.get_mut(&record.version))
        {
            Some(stored) if !stored.deleted => {
                stored.deleted = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn hard_delete_version(&self, record: &VersionRecord) -> Result<bool> {
        let mut inner = self.lock()?;
        let Some(versions) = inner.subjects.get_mut(&record.subject) else {
            return Ok(false);
        };
        if !versions.get(&record.version).is_some_and(|v| v.deleted) {
            return Ok(false);
        }
        versions.remove(&record.version);
        if versions.is_empty() {
            inner.subjects.remove(&record.subject);
        }
        Ok(true)
    }

    async fn config(&self, subject: Option<&str>) -> Result<Option<CompatibilityLevel>> {
        let inner = self.lock()?;
        Ok(match subject {
            Some(subject) => inner.subject_levels.get(subject).copied(),
            None => inner.global_level,
        })
    }

    async fn set_config(&self, subject: Option<&str>, level: CompatibilityLevel) -> Result<()> {
        let mut inner = self.lock()?;
        match subject {
            Some(subject) => {
                inner.subject_levels.insert(subject.to_owned(), level);
            }
            None => inner.global_level = Some(level),
        }
        Ok(())
    }

    async fn delete_config(&self, subject: &str) -> Result<Option<CompatibilityLevel>> {
        Ok(self.lock()?.subject_levels.remove(subject))
    }
}
