//! What the templates declare, read into plain data: the plan that local provisioning
//! carries out and that operator tools consult (which queue a stage writes, which stream
//! feeds it).

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use crate::template::Template;

/// The local runtime keeps its shard checkpoints here (Lambda keeps its own on AWS).
pub const CHECKPOINT_TABLE: &str = "riffle-local-checkpoints";

/// A service's event source mapping as the template declares it, resolved to local names:
/// the one definition of the settings (`riffle_aws::esm`), serialized as JSON into
/// `RIFFLE_ESM` (see docs/CONTRACTS.md, "RIFFLE_ESM").
pub type EsmSettings = riffle_aws::esm::EsmConfig;
pub use riffle_aws::esm::StartingPosition;

/// The pure reading of all templates: what provisioning will create.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The environment the templates were evaluated for (their `Env` parameter).
    pub env: String,
    pub platform: Template,
    pub streams: Vec<StreamSpec>,
    pub tables: Vec<TableSpec>,
    pub buckets: Vec<BucketSpec>,
    pub queues: Vec<QueueSpec>,
    pub services: Vec<ServiceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub logical: String,
    pub name: String,
    pub shard_count: i32,
    pub retention_hours: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical: String,
    pub name: String,
    /// (attribute, S|N|B)
    pub attributes: Vec<(String, String)>,
    /// (attribute, HASH|RANGE)
    pub key_schema: Vec<(String, String)>,
    pub ttl_attribute: Option<String>,
    pub point_in_time_recovery: bool,
    pub global_indexes: Vec<IndexSpec>,
}

impl TableSpec {
    /// Its shape, for [`riffle_aws::table::create_table`].
    pub fn shape(&self) -> riffle_aws::table::TableShape<'_> {
        riffle_aws::table::TableShape {
            attributes: &self.attributes,
            key_schema: &self.key_schema,
            global_indexes: &self.global_indexes,
        }
    }
}

pub use riffle_aws::table::IndexSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub logical: String,
    pub name: String,
    pub lifecycle: Vec<LifecycleRuleSpec>,
    /// BlockPublicAcls, BlockPublicPolicy, IgnorePublicAcls, RestrictPublicBuckets.
    pub public_access_block: Option<[bool; 4]>,
    pub sse_kms: bool,
    pub bucket_key_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRuleSpec {
    pub id: String,
    pub enabled: bool,
    pub prefix: String,
    /// (days, storage class)
    pub transitions: Vec<(i32, String)>,
    pub expiration_days: Option<i32>,
    pub abort_incomplete_multipart_days: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical: String,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

/// One service template: its function's environment and its event source mapping.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The file stem: `validator`, `schema-registry`, ...
    pub name: String,
    pub template: Template,
    pub function_name: String,
    /// The function's `MemorySize` in MB (Lambda's default, 128, when unset).
    pub memory_mb: u32,
    /// The function's `Timeout` in seconds (Lambda's default, 3, when unset).
    pub timeout_s: u32,
    /// Variable name and its unevaluated value (imports resolve at [`Deployment::service_env`]).
    pub env: Vec<(String, Value)>,
    pub esm: Option<EsmSpec>,
}

/// An event source mapping with its numbers checked; the ARNs are still expressions.
#[derive(Debug, Clone)]
pub struct EsmSpec {
    pub logical: String,
    pub event_source_arn: Value,
    pub on_failure_destination: Option<Value>,
    /// `EsmSettings` without stream and queue, which need the platform's exports.
    pub settings: EsmSettings,
}
