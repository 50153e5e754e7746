//! The storage port of the registry, and its implementations.
//!
//! The port offers small conditional primitives rather than "register a schema": the
//! registration algorithm (dedupe, id allocation, version allocation, retries) lives once in
//! [`crate::registry`] and every store only has to make each primitive atomic.
//!
//! Layout: `memory` (a process-local store for API tests and demos), `dynamo` (the real one).
//!
//! Deletion is in two steps, as the API has it: a soft delete marks a version deleted (it
//! stays readable by id and keeps its number), a permanent delete then removes it. A soft
//! deleted version no longer holds its schema's place in the subject, so registering that
//! schema again appends a new version.

use riffle_codec::registered::DataContract;
use std::future::Future;

use riffle_codec::compatibility::CompatibilityLevel;

use crate::error::Result;

#[cfg(feature = "dynamo")]
pub mod dynamo;
pub mod memory;

#[cfg(feature = "dynamo")]
pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

/// A schema as stored under its global id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRecord {
    /// The global id, shared by every subject that registered this schema.
    pub id: u32,
    /// The schema text as first registered.
    pub schema: String,
    /// The fingerprint the id was claimed under.
    pub fingerprint: String,
    /// The schema type (`AVRO`).
    pub schema_type: String,
    /// The data-contract fields registered with it.
    pub contract: DataContract,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// The subject.
    pub subject: String,
    /// The version, from 1 upwards without gaps.
    pub version: u32,
    /// The global schema id.
    pub id: u32,
    /// The schema text of `id`, copied so a version read is one lookup.
    pub schema: String,
    /// The fingerprint of the schema.
    pub fingerprint: String,
    /// Soft deleted: hidden from listings, still readable by id.
    pub deleted: bool,
    /// The data-contract fields of `id`, copied like the text.
    pub contract: DataContract,
}

/// The outcome of claiming a fingerprint for a freshly allocated id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The fingerprint now maps to the offered id.
    Won,
    /// Another writer got there first; the fingerprint maps to this id.
    Taken(u32),
}

/// The outcome of appending a version to a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// The version and its fingerprint entry were written together.
    Appended,
    /// The version number or the schema was written to the subject by someone else meanwhile.
    Conflict,
}

/// Where subjects, versions and schemas are kept. Each method is one atomic step.
pub trait SchemaStore: Send + Sync + 'static {
    /// The schema registered under `id`.
    fn schema_by_id(&self, id: u32) -> impl Future<Output = Result<Option<SchemaRecord>>> + Send;

    /// The id a fingerprint was claimed for, if any.
    fn id_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Option<u32>>> + Send;

    /// A fresh id, never handed out before (ids may have gaps).
    fn allocate_id(&self) -> impl Future<Output = Result<u32>> + Send;

    /// Stores the schema under its (freshly allocated) id.
    fn put_schema(&self, record: &SchemaRecord) -> impl Future<Output = Result<()>> + Send;

    /// Removes a schema whose id lost the race for its fingerprint, so no orphan stays.
    fn delete_schema(&self, id: u32) -> impl Future<Output = Result<()>> + Send;

    /// Maps `fingerprint` to `id` unless it already maps to some id.
    fn claim_fingerprint(
        &self,
        fingerprint: &str,
        id: u32,
    ) -> impl Future<Output = Result<Claim>> + Send;

    /// The live (not soft deleted) version of `subject` that holds the schema with this
    /// fingerprint, if any.
    fn version_by_fingerprint(
        &self,
        subject: &str,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Option<VersionRecord>>> + Send;

    /// The highest-numbered version of `subject`, soft deleted or not, if it has any.
    fn latest(&self, subject: &str) -> impl Future<Output = Result<Option<VersionRecord>>> + Send;

    /// Writes `record` as a new version, unless that version number is taken or a live
    /// version of the subject holds that fingerprint; both checks and the write are one
    /// atomic step.
    fn append_version(&self, record: &VersionRecord)
    -> impl Future<Output = Result<Append>> + Send;

    /// One version of a subject, soft deleted or not.
    fn version(
        &self,
        subject: &str,
        version: u32,
    ) -> impl Future<Output = Result<Option<VersionRecord>>> + Send;

    /// Every version of a subject, soft deleted ones included, ascending (empty if unknown).
    fn versions(&self, subject: &str) -> impl Future<Output = Result<Vec<VersionRecord>>> + Send;

    /// Subjects with at least one live version (or, with `include_deleted`, any version),
    /// sorted.
    fn subjects(&self, include_deleted: bool) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Every (subject, version) that uses schema `id`, sorted; soft deleted versions only
    /// with `include_deleted`.
    fn usages(
        &self,
        id: u32,
        include_deleted: bool,
    ) -> impl Future<Output = Result<Vec<(String, u32)>>> + Send;

    /// Marks a live version deleted and frees its schema's place in the subject, in one
    /// atomic step. False if the version is gone or already soft deleted.
    fn soft_delete_version(
        &self,
        record: &VersionRecord,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Removes a soft-deleted version for good. False if it is gone or not soft deleted.
    fn hard_delete_version(
        &self,
        record: &VersionRecord,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The compatibility level set for `subject`, or the global one for `None`.
    fn config(
        &self,
        subject: Option<&str>,
    ) -> impl Future<Output = Result<Option<CompatibilityLevel>>> + Send;

    /// Sets the compatibility level of `subject`, or the global one for `None`.
    fn set_config(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes the subject's own level; returns it, if it had one.
    fn delete_config(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Option<CompatibilityLevel>>> + Send;
}
