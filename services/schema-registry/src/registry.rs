//! The registry's operations over any [`SchemaStore`]: what each endpoint means, free of HTTP.
//!
//! Registration is the one operation with a race to win. It runs as:
//! 1. the subject already holds this fingerprint -> its id, nothing written;
//! 2. the fingerprint has an id (another subject registered it) -> reuse it; otherwise
//!    allocate a fresh id, store the schema under it, then claim the fingerprint
//!    conditionally; the loser of a concurrent claim deletes its schema and uses the winner's;
//! 3. append version `latest + 1` conditionally; on conflict start over from 1.
//!
//! Compatibility checks slot in before step 3, against `latest`.

use crate::error::{Error, Result};
use crate::schema::{self, ParsedSchema};
use crate::store::{Append, Claim, SchemaRecord, SchemaStore, VersionRecord};

/// Longest subject accepted, in bytes. DynamoDB sort keys hold at most 1024 bytes and the
/// store puts the subject in sort keys next to a short prefix and a 10-digit version.
pub const MAX_SUBJECT_BYTES: usize = 1000;

/// How often a registration retries after losing the race for a version number. Every
/// lost round means another writer appended, so this bounds the writers one subject can
/// absorb at the same instant.
pub const MAX_APPEND_ATTEMPTS: u32 = 64;

/// Versions are signed 32-bit in the API; the largest accepted.
const MAX_VERSION: u32 = i32::MAX as u32;

/// Which version of a subject a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The highest version.
    Latest,
    /// A version number.
    Number(u32),
}

impl VersionSpec {
    /// Parses a path segment: `latest`, `-1` (also latest) or 1..=2^31-1.
    pub fn parse(segment: &str) -> Result<Self> {
        if segment == "latest" || segment == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match segment.parse::<u32>() {
            Ok(n) if (1..=MAX_VERSION).contains(&n) => Ok(VersionSpec::Number(n)),
            _ => Err(Error::InvalidVersion(segment.to_owned())),
        }
    }
}

/// The outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The global schema id.
    pub id: u32,
    /// The subject's version that holds the schema.
    pub version: u32,
}

/// The registry: its operations over a store.
pub struct Registry<S> {
    store: S,
}

impl<S: SchemaStore> Registry<S> {
    /// A registry over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Registers `text` under `subject`, or finds it there already.
    pub async fn register(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
    ) -> Result<Registered> {
        check_subject(subject)?;
        let parsed = schema::parse(text, schema_type)?;
        let mut record: Option<SchemaRecord> = None;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            if let Some(existing) = self
                .store
                .version_by_fingerprint(subject, &parsed.fingerprint)
                .await?
            {
                return Ok(Registered {
                    id: existing.id,
                    version: existing.version,
                });
            }
            let schema = match &record {
                Some(schema) => schema.clone(),
                None => {
                    let schema = self.schema_for(&parsed).await?;
                    record = Some(schema.clone());
                    schema
                }
            };
            let version = match self.store.latest_version(subject).await? {
                None => 1,
                Some(latest) if latest < MAX_VERSION => latest + 1,
                Some(_) => {
                    return Err(Error::InvalidSubject(format!(
                        "subject {subject} has no versions left"
                    )));
                }
            };
            let candidate = VersionRecord {
                subject: subject.to_owned(),
                version,
                id: schema.id,
                schema: schema.schema,
                fingerprint: parsed.fingerprint.clone(),
            };
            match self.store.append_version(&candidate).await? {
                Append::Appended => {
                    return Ok(Registered {
                        id: candidate.id,
                        version,
                    });
                }
                Append::Conflict => {
                    tracing::debug!(subject, version, "lost the race for a version; retrying");
                }
            }
        }
        Err(Error::Contention(MAX_APPEND_ATTEMPTS))
    }

    /// The stored schema for a fingerprint, given an id first if it has none.
    async fn schema_for(&self, parsed: &ParsedSchema) -> Result<SchemaRecord> {
        if let Some(id) = self.store.id_by_fingerprint(&parsed.fingerprint).await? {
            return self.existing(id).await;
        }
        let id = self.store.allocate_id().await?;
        let record = SchemaRecord {
            id,
            schema: parsed.text.clone(),
            fingerprint: parsed.fingerprint.clone(),
            schema_type: parsed.schema_type.clone(),
        };
        // The schema is written before the fingerprint points at it, so anyone who finds
        // the fingerprint also finds the schema.
        self.store.put_schema(&record).await?;
        match self
            .store
            .claim_fingerprint(&parsed.fingerprint, id)
            .await?
        {
            Claim::Won => Ok(record),
            Claim::Taken(winner) => {
                if let Err(e) = self.store.delete_schema(id).await {
                    // Harmless: an unreachable id wastes one item, nothing points at it.
                    tracing::warn!(id, error = %e, "could not delete the schema of a lost id race");
                }
                self.existing(winner).await
            }
        }
    }

    async fn existing(&self, id: u32) -> Result<SchemaRecord> {
        self.store
            .schema_by_id(id)
            .await?
            .ok_or_else(|| Error::Store {
                op: "schema_by_id",
                message: format!("fingerprint points at schema id {id}, which is missing"),
                retryable: false,
            })
    }

    /// The version of `subject` that holds `text` (`POST /subjects/{subject}`).
    pub async fn lookup(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
    ) -> Result<VersionRecord> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let parsed = schema::parse(text, schema_type)?;
        if let Some(found) = self
            .store
            .version_by_fingerprint(subject, &parsed.fingerprint)
            .await?
        {
            return Ok(found);
        }
        if self.store.latest_version(subject).await?.is_none() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Err(Error::SchemaNotFound)
    }

    /// All subjects.
    pub async fn subjects(&self) -> Result<Vec<String>> {
        self.store.subjects().await
    }

    /// The versions of a subject; an unknown subject is an error, not an empty list.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let versions = self.store.versions(subject).await?;
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    /// One version of a subject.
    pub async fn version(&self, subject: &str, spec: VersionSpec) -> Result<VersionRecord> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let number = match spec {
            VersionSpec::Number(n) => n,
            VersionSpec::Latest => self
                .store
                .latest_version(subject)
                .await?
                .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))?,
        };
        if let Some(found) = self.store.version(subject, number).await? {
            return Ok(found);
        }
        if self.store.latest_version(subject).await?.is_none() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Err(Error::VersionNotFound {
            subject: subject.to_owned(),
            version: number,
        })
    }

    /// The schema registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<SchemaRecord> {
        self.store
            .schema_by_id(id)
            .await?
            .ok_or(Error::SchemaIdNotFound(id))
    }

    /// Every (subject, version) that uses schema `id`.
    pub async fn usages(&self, id: u32) -> Result<Vec<(String, u32)>> {
        // Distinguishes "unknown id" from "known id, no subject yet" (a registration in flight).
        self.schema_by_id(id).await?;
        self.store.usages(id).await
    }
}

/// Subjects name keys in the store and appear in logs: non-empty, bounded, printable.
fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(Error::InvalidSubject("subject is empty".into()));
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(Error::InvalidSubject(format!(
            "subject is {} bytes, more than {MAX_SUBJECT_BYTES}",
            subject.len()
        )));
    }
    if subject.chars().any(char::is_control) {
        return Err(Error::InvalidSubject(
            "subject contains control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryStore;

    const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#;
    const B: &str = r#"{"type":"record","name":"B","fields":[{"name":"y","type":"string"}]}"#;

    #[test]
    fn version_segments() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("3").unwrap(), VersionSpec::Number(3));
        for bad in ["0", "-2", "abc", "2147483648", ""] {
            assert!(
                matches!(VersionSpec::parse(bad), Err(Error::InvalidVersion(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn subject_checks() {
        assert!(check_subject("orders-value").is_ok());
        assert!(check_subject("a/b c").is_ok());
        assert!(check_subject("").is_err());
        assert!(check_subject("a\nb").is_err());
        assert!(check_subject(&"s".repeat(MAX_SUBJECT_BYTES)).is_ok());
        assert!(check_subject(&"s".repeat(MAX_SUBJECT_BYTES + 1)).is_err());
    }

    #[tokio::test]
    async fn ids_are_shared_and_versions_count_per_subject() {
        let reg = Registry::new(MemoryStore::new());
        let a1 = reg.register("s1", A, None).await.unwrap();
        assert_eq!(a1, Registered { id: 1, version: 1 });
        assert_eq!(reg.register("s1", A, None).await.unwrap(), a1);
        let b1 = reg.register("s1", B, None).await.unwrap();
        assert_eq!(b1, Registered { id: 2, version: 2 });
        let a2 = reg.register("s2", A, None).await.unwrap();
        assert_eq!(a2, Registered { id: 1, version: 1 });
        assert_eq!(
            reg.usages(1).await.unwrap(),
            vec![("s1".to_owned(), 1), ("s2".to_owned(), 1)]
        );
        assert_eq!(reg.lookup("s1", B, None).await.unwrap().version, 2);
        assert!(matches!(
            reg.lookup("s2", B, None).await,
            Err(Error::SchemaNotFound)
        ));
        assert!(matches!(
            reg.lookup("nope", B, None).await,
            Err(Error::SubjectNotFound(_))
        ));
        assert!(matches!(
            reg.version("s1", VersionSpec::Number(3)).await,
            Err(Error::VersionNotFound { version: 3, .. })
        ));
        assert_eq!(reg.version("s1", VersionSpec::Latest).await.unwrap().id, 2);
    }

    #[tokio::test]
    async fn concurrent_registrations_agree() {
        let reg = Arc::new(Registry::new(MemoryStore::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let reg = Arc::clone(&reg);
            tasks.push(tokio::spawn(async move {
                reg.register(&format!("s{}", i % 2), A, None).await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().id, 1);
        }
        assert_eq!(reg.versions("s0").await.unwrap(), vec![1]);
    }
}
