//! The registry's operations over any [`SchemaStore`]: what each endpoint means, free of HTTP.
//!
//! Registration is the one operation with a race to win. It runs as:
//! 1. the subject already holds this fingerprint -> its id, nothing written;
//! 2. the fingerprint has an id (another subject registered it) -> reuse it; otherwise
//!    allocate a fresh id, store the schema under it, then claim the fingerprint
//!    conditionally; the loser of a concurrent claim deletes its schema and uses the winner's;
//! 3. append version `latest + 1` conditionally; on conflict start over from 1.
//!
//! Before step 2 the schema is checked against the subject's live versions at the subject's
//! compatibility level (its own, else the global one, else the registry's default), so an
//! incompatible schema takes no id. A lost race re-checks against the new latest.
//!
//! Soft-deleted versions keep their numbers (numbers are never reused while a version is
//! stored) but are invisible to listings, `latest`, lookups and compatibility checks,
//! unless a caller asks for deleted ones.

use std::collections::HashMap;
use std::sync::Mutex;

use riffle_codec::compatibility::CompatibilityLevel;
use riffle_codec::registered::DataContract;

use crate::compat;
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

/// Schemas kept in memory by id. A schema's id names the same text and contract for as long
/// as it exists (ids are never reused, and the one schema ever deleted by id, the loser of a
/// registration race, was never handed out), so what was read once is served from memory:
/// every stage fetches its schemas by id when it starts, and each fetch was a store read.
/// When full the cache starts over, which costs reads, never correctness.
const CACHED_SCHEMAS: usize = 4096;

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
    default_level: CompatibilityLevel,
    by_id: Mutex<HashMap<u32, SchemaRecord>>,
}

impl<S: SchemaStore> Registry<S> {
    /// A registry over `store` that checks no compatibility until a level is configured
    /// (`PUT /config`): registration as it was before levels existed, which embedders
    /// (tests of other crates, tools) rely on. The service itself runs
    /// [`Registry::with_default_level`] at [`CompatibilityLevel::default`] (`BACKWARD`).
    pub fn new(store: S) -> Self {
        Self::with_default_level(store, CompatibilityLevel::None)
    }

    /// A registry over `store` whose level, where neither the subject nor the global
    /// configuration sets one, is `default_level`.
    pub fn with_default_level(store: S, default_level: CompatibilityLevel) -> Self {
        Self {
            store,
            default_level,
            by_id: Mutex::new(HashMap::new()),
        }
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
        self.register_with(subject, text, schema_type, &DataContract::default())
            .await
    }

    /// [`Registry::register`] with data-contract fields (`metadata`, `ruleSet`). What a
    /// request without them (or with one) means is `parse_for`'s: the version
    /// holding the same schema, else the latest version's fields carried forward.
    pub async fn register_with(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        contract: &DataContract,
    ) -> Result<Registered> {
        check_subject(subject)?;
        let (mut parsed, mut read) = self
            .parse_reading(subject, text, schema_type, contract, false)
            .await?;
        // What a request without all contract fields means depends on the subject's versions,
        // which a rival may change between attempts.
        let carries = {
            let sent = contract.normalized();
            sent.metadata.is_some() && sent.rule_set.is_some()
        };
        // Read once, and only when there is something to be compatible with: a subject's
        // first version needs no level.
        let mut level: Option<CompatibilityLevel> = None;
        let mut record: Option<SchemaRecord> = None;
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            if attempt > 0 && !carries {
                let again = self
                    .parse_for(subject, text, schema_type, contract, false)
                    .await?;
                if again.fingerprint != parsed.fingerprint {
                    record = None;
                    parsed = again;
                }
            }
            // The versions the first parse read answer whether the schema is there already
            // (every stage registers its envelope at start, so this is the common case: one
            // read of the registry's table instead of three); later attempts read afresh.
            let existing = match read.take() {
                Some(versions) => versions
                    .into_iter()
                    .find(|v| !v.deleted && v.fingerprint == parsed.fingerprint),
                None => {
                    self.store
                        .version_by_fingerprint(subject, &parsed.fingerprint)
                        .await?
                }
            };
            if let Some(existing) = existing {
                return Ok(Registered {
                    id: existing.id,
                    version: existing.version,
                });
            }
            let latest = self.store.latest(subject).await?;
            if latest.is_some() {
                let level = match level {
                    Some(level) => level,
                    None => *level.insert(self.effective_level(subject).await?),
                };
                let messages = self
                    .incompatibilities(subject, level, &parsed, latest.as_ref())
                    .await?;
                if !messages.is_empty() {
                    return Err(Error::Incompatible {
                        subject: subject.to_owned(),
                        messages,
                    });
                }
            }
            let schema = match &record {
                Some(schema) => schema.clone(),
                None => {
                    let schema = self.schema_for(&parsed).await?;
                    record = Some(schema.clone());
                    schema
                }
            };
            let version = match latest.map(|l| l.version) {
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
                deleted: false,
                contract: schema.contract,
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
            contract: parsed.contract.clone(),
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

    /// `text` parsed with the contract fields a request means (ADR 0020):
    /// - fields it sends are kept as sent;
    /// - a request with none names the version that holds the same schema (the latest such;
    ///   deleted ones too with `include_deleted`), contract and all, so a client that knows
    ///   nothing of contracts finds the version it registered or was given;
    /// - otherwise each field it leaves out is the subject's latest live version's, carried
    ///   forward one by one as Confluent's registry does.
    async fn parse_for(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        contract: &DataContract,
        include_deleted: bool,
    ) -> Result<ParsedSchema> {
        self.parse_reading(subject, text, schema_type, contract, include_deleted)
            .await
            .map(|(parsed, _)| parsed)
    }

    /// [`Registry::parse_for`], with the subject's versions if it read them.
    async fn parse_reading(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        contract: &DataContract,
        include_deleted: bool,
    ) -> Result<(ParsedSchema, Option<Vec<VersionRecord>>)> {
        let contract = contract.normalized();
        if (contract.metadata.is_some() && contract.rule_set.is_some())
            || check_subject(subject).is_err()
        {
            return Ok((schema::parse_with(text, schema_type, &contract)?, None));
        }
        let versions = self.store.versions(subject).await?;
        let parsed = parse_against(text, schema_type, contract, include_deleted, &versions)?;
        Ok((parsed, Some(versions)))
    }
}

/// [`Registry::parse_for`] once the subject's versions are read.
fn parse_against(
    text: &str,
    schema_type: Option<&str>,
    contract: DataContract,
    include_deleted: bool,
    versions: &[VersionRecord],
) -> Result<ParsedSchema> {
    if contract.metadata.is_some() && contract.rule_set.is_some() {
        return schema::parse_with(text, schema_type, &contract);
    }
    let bare = schema::parse(text, schema_type)?;
    if contract.is_empty()
        && let Some(same) = versions.iter().rev().find(|v| {
            (include_deleted || !v.deleted)
                && schema::fingerprint(&bare.normalized, &v.contract) == v.fingerprint
        })
    {
        return schema::parse_with(text, schema_type, &same.contract);
    }
    let latest = versions.iter().rev().find(|v| !v.deleted);
    let carried = DataContract {
        metadata: contract
            .metadata
            .or_else(|| latest.and_then(|v| v.contract.metadata.clone())),
        rule_set: contract
            .rule_set
            .or_else(|| latest.and_then(|v| v.contract.rule_set.clone())),
    };
    schema::parse_with(text, schema_type, &carried)
}

impl<S: SchemaStore> Registry<S> {
    /// Why `parsed` may not follow the subject's live versions at `level`. `latest` is the
    /// subject's highest stored version, which spares a read in the usual case (latest live,
    /// level not transitive).
    ///
    /// The contract is checked against the latest live version's at every level but `NONE`:
    /// a rule that refuses what the latest accepted would reject a producer's events from
    /// one deploy to the next (ADR 0020).
    async fn incompatibilities(
        &self,
        subject: &str,
        level: CompatibilityLevel,
        parsed: &ParsedSchema,
        latest: Option<&VersionRecord>,
    ) -> Result<Vec<String>> {
        if level == CompatibilityLevel::None {
            return Ok(Vec::new());
        }
        let mut messages = self
            .schema_incompatibilities(subject, level, &parsed.text, latest)
            .await?;
        let live = match latest {
            Some(latest) if !latest.deleted => Some(latest.clone()),
            Some(_) => self
                .store
                .versions(subject)
                .await?
                .into_iter()
                .rev()
                .find(|v| !v.deleted),
            None => None,
        };
        if let Some(live) = live {
            messages.extend(contract_tightenings(subject, &live, parsed)?);
        }
        Ok(messages)
    }

    async fn schema_incompatibilities(
        &self,
        subject: &str,
        level: CompatibilityLevel,
        text: &str,
        latest: Option<&VersionRecord>,
    ) -> Result<Vec<String>> {
        let texts: Vec<String> = match latest {
            None => return Ok(Vec::new()),
            Some(latest) if !latest.deleted && !level.is_transitive() => {
                vec![latest.schema.clone()]
            }
            Some(_) => self
                .store
                .versions(subject)
                .await?
                .into_iter()
                .filter(|v| !v.deleted)
                .map(|v| v.schema)
                .collect(),
        };
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        compat::check(level, text, &texts).map_err(|e| compat_error(subject, e))
    }

    /// The level `subject` is checked at: its own, else the global one, else the default.
    pub async fn effective_level(&self, subject: &str) -> Result<CompatibilityLevel> {
        if let Some(level) = self.store.config(Some(subject)).await? {
            return Ok(level);
        }
        self.global_level().await
    }

    /// The global level, or the registry's default when none is set.
    pub async fn global_level(&self) -> Result<CompatibilityLevel> {
        Ok(self.store.config(None).await?.unwrap_or(self.default_level))
    }

    /// The level set for `subject` (`GET /config/{subject}`); without one, the global level
    /// if `default_to_global`, else an error.
    pub async fn subject_level(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<CompatibilityLevel> {
        if let Some(level) = self.store.config(Some(subject)).await? {
            return Ok(level);
        }
        if default_to_global {
            return self.global_level().await;
        }
        Err(Error::SubjectConfigNotFound(subject.to_owned()))
    }

    /// Sets the level of `subject`, or the global one for `None`.
    pub async fn set_level(&self, subject: Option<&str>, level: CompatibilityLevel) -> Result<()> {
        if let Some(subject) = subject {
            check_subject(subject)?;
        }
        self.store.set_config(subject, level).await
    }

    /// Removes the subject's own level, returning it; the subject then follows the global.
    pub async fn delete_level(&self, subject: &str) -> Result<CompatibilityLevel> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectConfigNotFound(subject.to_owned()));
        }
        self.store
            .delete_config(subject)
            .await?
            .ok_or_else(|| Error::SubjectConfigNotFound(subject.to_owned()))
    }

    /// Why `text` may not be registered under `subject` (empty: it may), checked against
    /// one version, or with `None` against the live versions the level looks at. A subject
    /// without versions accepts anything.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        contract: &DataContract,
        against: Option<VersionSpec>,
    ) -> Result<Vec<String>> {
        let parsed = self
            .parse_for(subject, text, schema_type, contract, false)
            .await?;
        let level = if check_subject(subject).is_ok() {
            self.effective_level(subject).await?
        } else {
            return match against {
                Some(_) => Err(Error::SubjectNotFound(subject.to_owned())),
                None => Ok(Vec::new()),
            };
        };
        match against {
            Some(spec) => {
                let old = self.version(subject, spec, false).await?;
                let mut messages = compat::check(level, &parsed.text, &[&old.schema])
                    .map_err(|e| compat_error(subject, e))?;
                if level != CompatibilityLevel::None {
                    messages.extend(contract_tightenings(subject, &old, &parsed)?);
                }
                Ok(messages)
            }
            None => {
                let latest = self.store.latest(subject).await?;
                self.incompatibilities(subject, level, &parsed, latest.as_ref())
                    .await
            }
        }
    }

    /// The version of `subject` that holds `text` (`POST /subjects/{subject}`); soft-deleted
    /// versions count with `include_deleted` (the latest such wins).
    pub async fn lookup(
        &self,
        subject: &str,
        text: &str,
        schema_type: Option<&str>,
        contract: &DataContract,
        include_deleted: bool,
    ) -> Result<VersionRecord> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        // The parse and the match by fingerprint share one read of the subject's versions (a
        // lookup is what every stage asks at start).
        let versions = self.store.versions(subject).await?;
        let parsed = parse_against(
            text,
            schema_type,
            contract.normalized(),
            include_deleted,
            &versions,
        )?;
        // The store's order is ascending: the first live holder, as a fingerprint read gives.
        if let Some(found) = versions
            .iter()
            .find(|v| !v.deleted && v.fingerprint == parsed.fingerprint)
        {
            return Ok(found.clone());
        }
        if include_deleted
            && let Some(found) = versions
                .iter()
                .rev()
                .find(|v| v.fingerprint == parsed.fingerprint)
        {
            return Ok(found.clone());
        }
        if !versions.iter().any(|v| include_deleted || !v.deleted) {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Err(Error::SchemaNotFound)
    }

    /// Subjects with live versions (any versions, with `include_deleted`).
    pub async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        self.store.subjects(include_deleted).await
    }

    /// The versions of a subject; an unknown subject is an error, not an empty list.
    pub async fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let versions: Vec<u32> = self
            .store
            .versions(subject)
            .await?
            .into_iter()
            .filter(|v| include_deleted || !v.deleted)
            .map(|v| v.version)
            .collect();
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    /// One version of a subject; `latest` is the highest live one (the highest of all, with
    /// `include_deleted`).
    pub async fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<VersionRecord> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let visible = |v: &VersionRecord| include_deleted || !v.deleted;
        match spec {
            VersionSpec::Number(number) => {
                if let Some(found) = self.store.version(subject, number).await?
                    && visible(&found)
                {
                    return Ok(found);
                }
                if !self.has_visible(subject, include_deleted).await? {
                    return Err(Error::SubjectNotFound(subject.to_owned()));
                }
                Err(Error::VersionNotFound {
                    subject: subject.to_owned(),
                    version: number,
                })
            }
            VersionSpec::Latest => {
                // The highest stored version is live in the usual case: one read.
                match self.store.latest(subject).await? {
                    Some(latest) if visible(&latest) => return Ok(latest),
                    None => return Err(Error::SubjectNotFound(subject.to_owned())),
                    Some(_) => {}
                }
                self.store
                    .versions(subject)
                    .await?
                    .into_iter()
                    .rev()
                    .find(visible)
                    .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))
            }
        }
    }

    async fn has_visible(&self, subject: &str, include_deleted: bool) -> Result<bool> {
        Ok(self
            .store
            .versions(subject)
            .await?
            .iter()
            .any(|v| include_deleted || !v.deleted))
    }

    /// The schema registered under `id`, whether or not the versions using it are deleted.
    /// Served from memory once read (ids never change what they name); an unknown id is asked
    /// of the store every time, since a registration may create it any moment.
    pub async fn schema_by_id(&self, id: u32) -> Result<SchemaRecord> {
        if let Some(record) = self.cached(id) {
            return Ok(record);
        }
        let record = self
            .store
            .schema_by_id(id)
            .await?
            .ok_or(Error::SchemaIdNotFound(id))?;
        // A poisoned lock only loses the cache: the answer is the store's.
        if let Ok(mut cache) = self.by_id.lock() {
            if cache.len() >= CACHED_SCHEMAS {
                cache.clear();
            }
            cache.insert(id, record.clone());
        }
        Ok(record)
    }

    fn cached(&self, id: u32) -> Option<SchemaRecord> {
        self.by_id.lock().ok()?.get(&id).cloned()
    }

    /// Every (subject, version) that uses schema `id`.
    pub async fn usages(&self, id: u32, include_deleted: bool) -> Result<Vec<(String, u32)>> {
        // Distinguishes "unknown id" from "known id, no subject yet" (a registration in flight).
        self.schema_by_id(id).await?;
        self.store.usages(id, include_deleted).await
    }

    /// Deletes every version of `subject`: soft deletes the live ones, or with `permanent`
    /// removes them all, which must have been soft deleted first. Returns the versions
    /// deleted. A permanent delete also drops the subject's own level.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let versions = self.store.versions(subject).await?;
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let mut deleted = Vec::new();
        if permanent {
            if versions.iter().any(|v| !v.deleted) {
                return Err(Error::SubjectNotSoftDeleted(subject.to_owned()));
            }
            for version in &versions {
                if self.store.hard_delete_version(version).await? {
                    deleted.push(version.version);
                }
            }
            self.store.delete_config(subject).await?;
        } else {
            let live: Vec<&VersionRecord> = versions.iter().filter(|v| !v.deleted).collect();
            if live.is_empty() {
                return Err(Error::SubjectSoftDeleted(subject.to_owned()));
            }
            for version in live {
                // False means a concurrent delete got there first: not ours to report.
                if self.store.soft_delete_version(version).await? {
                    deleted.push(version.version);
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes one version: soft, or with `permanent` for good (soft deleted first).
    /// `latest` names the highest live version for a soft delete, the highest stored one
    /// for a permanent delete.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32> {
        if check_subject(subject).is_err() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let versions = self.store.versions(subject).await?;
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let record = match spec {
            VersionSpec::Latest if permanent => versions.last(),
            VersionSpec::Latest => versions.iter().rev().find(|v| !v.deleted),
            VersionSpec::Number(n) => versions.iter().find(|v| v.version == n),
        };
        let Some(record) = record else {
            return Err(match spec {
                VersionSpec::Number(version) => Error::VersionNotFound {
                    subject: subject.to_owned(),
                    version,
                },
                VersionSpec::Latest => Error::SubjectNotFound(subject.to_owned()),
            });
        };
        let version = record.version;
        let subject = subject.to_owned();
        match (permanent, record.deleted) {
            (true, false) => Err(Error::VersionNotSoftDeleted { subject, version }),
            (false, true) => Err(Error::VersionSoftDeleted { subject, version }),
            (true, true) => match self.store.hard_delete_version(record).await? {
                true => Ok(version),
                // A concurrent permanent delete removed it meanwhile.
                false => Err(Error::VersionNotFound { subject, version }),
            },
            (false, false) => match self.store.soft_delete_version(record).await? {
                true => Ok(version),
                false => Err(Error::VersionSoftDeleted { subject, version }),
            },
        }
    }
}

/// How the contract of `parsed` refuses what `old`'s accepted, as compatibility messages.
/// A subject's first contract tightens nothing (without one every event was rejected);
/// dropping the contract rejects every event from then on.
fn contract_tightenings(
    subject: &str,
    old: &VersionRecord,
    parsed: &ParsedSchema,
) -> Result<Vec<String>> {
    let read = |fields: &DataContract| {
        fields
            .contract(subject)
            .map_err(|e| Error::InvalidSchema(format!("contract: {e}")))
    };
    let Ok(Some(was)) = read(&old.contract) else {
        return Ok(Vec::new());
    };
    Ok(match read(&parsed.contract)? {
        None => vec![format!(
            "contract: version {} has a contract and this schema has none, so every event \
             would be rejected",
            old.version
        )],
        Some(new) => riffle_codec::registered::tightenings(&was, &new)
            .into_iter()
            .map(|t| format!("contract: {t} (version {} accepts it)", old.version))
            .collect(),
    })
}

/// A text the checks cannot read: the caller's schema is invalid; a stored one means the
/// store holds what it should not.
fn compat_error(subject: &str, error: compat::CompatError) -> Error {
    match error {
        compat::CompatError::New(e) => Error::InvalidSchema(e),
        compat::CompatError::Existing(e) => Error::Store {
            op: "compatibility",
            message: format!("a stored schema of {subject} cannot be checked: {e}"),
            retryable: false,
        },
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
            reg.usages(1, false).await.unwrap(),
            vec![("s1".to_owned(), 1), ("s2".to_owned(), 1)]
        );
        assert_eq!(
            reg.lookup("s1", B, None, &DataContract::default(), false)
                .await
                .unwrap()
                .version,
            2
        );
        assert!(matches!(
            reg.lookup("s2", B, None, &DataContract::default(), false)
                .await,
            Err(Error::SchemaNotFound)
        ));
        assert!(matches!(
            reg.lookup("nope", B, None, &DataContract::default(), false)
                .await,
            Err(Error::SubjectNotFound(_))
        ));
        assert!(matches!(
            reg.version("s1", VersionSpec::Number(3), false).await,
            Err(Error::VersionNotFound { version: 3, .. })
        ));
        assert_eq!(
            reg.version("s1", VersionSpec::Latest, false)
                .await
                .unwrap()
                .id,
            2
        );
    }

    #[tokio::test]
    async fn schemas_by_id_are_served_from_memory_once_read() {
        let reg = Registry::new(MemoryStore::new());
        let a = reg.register("s1", A, None).await.unwrap();
        assert!(reg.cached(a.id).is_none());
        let read = reg.schema_by_id(a.id).await.unwrap();
        assert_eq!(reg.cached(a.id), Some(read.clone()));
        assert_eq!(reg.schema_by_id(a.id).await.unwrap(), read);
        // Unknown ids are not remembered: the next registration may create them.
        assert!(matches!(
            reg.schema_by_id(a.id + 1).await,
            Err(Error::SchemaIdNotFound(_))
        ));
        assert!(reg.cached(a.id + 1).is_none());
        let b = reg.register("s1", B, None).await.unwrap();
        assert_eq!(b.id, a.id + 1);
        assert_eq!(reg.schema_by_id(b.id).await.unwrap().id, b.id);
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
        assert_eq!(reg.versions("s0", false).await.unwrap(), vec![1]);
    }
}
