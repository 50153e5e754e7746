//! Provisioning the emulators from the same templates that deploy Riffle to AWS.
//!
//! moto's CloudFormation drops stream encryption, DynamoDB TTL and S3 lifecycle, so this
//! module reads `infra/platform.yaml` and `infra/services/*.yaml` itself ([`plan`], pure)
//! and makes the API calls with the real SDK ([`provision`]). What the emulators cannot do
//! (KMS encryption settings, bucket policies) is skipped with a debug log, never silently
//! changed into something else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::SdkConfig;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::error::LocalError;
use crate::template::{self, Attrs, LOCAL_ACCOUNT_ID, Scope, Template};

/// The local runtime keeps its shard checkpoints here (Lambda keeps its own on AWS).
pub const CHECKPOINT_TABLE: &str = "riffle-local-checkpoints";
/// The export the stages import the registry's URL from; locally it exists only once the
/// registry process listens, so the caller sets it with [`Deployment::set_export`].
pub const REGISTRY_URL_EXPORT: &str = "riffle-RegistryUrl";
/// Environment variable holding a service's [`EsmSettings`] as JSON.
pub const ESM_ENV: &str = "RIFFLE_ESM";
/// How long to wait for a new stream to become ACTIVE.
const STREAM_ACTIVE_DEADLINE: Duration = Duration::from_secs(60);
/// SQS queue attributes that need a KMS the emulators do not have.
const KMS_QUEUE_ATTRIBUTES: [&str; 2] = ["KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"];
/// SQS queue attributes carried from the template as they are.
const QUEUE_ATTRIBUTES: [&str; 8] = [
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
];

/// A service's event source mapping as the template declares it, resolved to local names.
/// Serialized as JSON into `RIFFLE_ESM` (see docs/CONTRACTS.md, "RIFFLE_ESM").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsmSettings {
    pub function_name: String,
    pub stream_name: String,
    pub batch_size: u32,
    pub maximum_batching_window_secs: u32,
    pub parallelization_factor: u32,
    /// `TRIM_HORIZON` or `LATEST`.
    pub starting_position: String,
    pub bisect_batch_on_function_error: bool,
    /// -1 = retry until the record expires (Lambda's default).
    pub maximum_retry_attempts: i32,
    /// -1 = no age limit (Lambda's default).
    pub maximum_record_age_secs: i32,
    pub report_batch_item_failures: bool,
    pub on_failure_queue_url: Option<String>,
    pub checkpoint_table: String,
}

/// The pure reading of all templates: what provisioning will create.
#[derive(Debug, Clone)]
pub struct Plan {
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
}

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

/// A created stream, table, bucket or queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResource {
    pub logical: String,
    pub name: String,
    pub arn: String,
    /// Queue URL for queues, the name otherwise (what `Ref` gives).
    pub reference: String,
    /// Streams only.
    pub shard_count: Option<i32>,
}

/// What [`provision`] created, and how services reach it.
#[derive(Debug, Clone)]
pub struct Deployment {
    streams: Vec<LocalResource>,
    tables: Vec<LocalResource>,
    buckets: Vec<LocalResource>,
    queues: Vec<LocalResource>,
    exports: BTreeMap<String, String>,
    services: BTreeMap<String, (ServiceSpec, Option<EsmSettings>)>,
}

fn find<'a>(list: &'a [LocalResource], key: &str) -> Option<&'a LocalResource> {
    list.iter().find(|r| r.logical == key || r.name == key)
}

impl Deployment {
    /// A stream's name by logical id (`RawStream`) or name (`riffle-raw`).
    pub fn stream_name(&self, key: &str) -> Option<&str> {
        find(&self.streams, key).map(|r| r.name.as_str())
    }
    pub fn stream_arn(&self, key: &str) -> Option<&str> {
        find(&self.streams, key).map(|r| r.arn.as_str())
    }
    pub fn table_name(&self, key: &str) -> Option<&str> {
        find(&self.tables, key).map(|r| r.name.as_str())
    }
    pub fn bucket_name(&self, key: &str) -> Option<&str> {
        find(&self.buckets, key).map(|r| r.name.as_str())
    }
    pub fn queue_url(&self, key: &str) -> Option<&str> {
        find(&self.queues, key).map(|r| r.reference.as_str())
    }
    pub fn queue_arn(&self, key: &str) -> Option<&str> {
        find(&self.queues, key).map(|r| r.arn.as_str())
    }
    pub fn streams(&self) -> &[LocalResource] {
        &self.streams
    }
    pub fn tables(&self) -> &[LocalResource] {
        &self.tables
    }
    pub fn buckets(&self) -> &[LocalResource] {
        &self.buckets
    }
    pub fn queues(&self) -> &[LocalResource] {
        &self.queues
    }
    /// The local checkpoint table (not in the templates: Lambda keeps checkpoints itself).
    pub fn checkpoint_table(&self) -> &str {
        CHECKPOINT_TABLE
    }

    /// An export's local value (`riffle-RawStreamName`, ...).
    pub fn export(&self, name: &str) -> Option<&str> {
        self.exports.get(name).map(String::as_str)
    }
    pub fn exports(&self) -> &BTreeMap<String, String> {
        &self.exports
    }
    /// Sets an export known only at run time, e.g. [`REGISTRY_URL_EXPORT`] once the local
    /// registry listens.
    pub fn set_export(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.exports.insert(name.into(), value.into());
    }

    /// Service names (template file stems), sorted.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// The function name of a service (`riffle-validator`).
    pub fn function_name(&self, service: &str) -> Option<&str> {
        self.services
            .get(service)
            .map(|(s, _)| s.function_name.as_str())
    }

    /// A service's event source mapping, resolved to local names.
    pub fn esm(&self, service: &str) -> Option<&EsmSettings> {
        self.services.get(service).and_then(|(_, esm)| esm.as_ref())
    }

    /// Environment for the service process: its function's `Environment.Variables` with
    /// imports resolved to local values, plus `RIFFLE_ESM` for stream-fed services. The
    /// emulator endpoints are not included: add `Emulators::env()`.
    pub fn service_env(&self, service: &str) -> Result<Vec<(String, String)>, LocalError> {
        let (spec, esm) = self
            .services
            .get(service)
            .ok_or_else(|| LocalError::UnknownService(service.to_owned()))?;
        let no_resources = BTreeMap::new();
        let scope = Scope {
            resources: &no_resources,
            exports: &self.exports,
        };
        let mut env = Vec::with_capacity(spec.env.len() + 1);
        for (name, value) in &spec.env {
            let resolved = spec.template.eval(value, scope).map_err(|message| {
                match value.get("Fn::ImportValue").and_then(Value::as_str) {
                    Some(import) => LocalError::UnresolvedImport {
                        service: service.to_owned(),
                        variable: name.clone(),
                        import: import.to_owned(),
                    },
                    None => spec
                        .template
                        .error("Function", format!("Environment {name}: {message}")),
                }
            })?;
            env.push((name.clone(), resolved));
        }
        if let Some(esm) = esm {
            env.push((ESM_ENV.to_owned(), serde_json::to_string(esm)?));
        }
        Ok(env)
    }
}

/// Reads `infra_dir/platform.yaml` and every `infra_dir/services/*.yaml` (pure).
pub fn plan(infra_dir: &Path) -> Result<Plan, LocalError> {
    let platform = Template::load(&infra_dir.join("platform.yaml"))?;
    let no_resources = BTreeMap::new();
    let no_exports = BTreeMap::new();
    let scope = Scope {
        resources: &no_resources,
        exports: &no_exports,
    };

    let mut streams = Vec::new();
    for (logical, r) in platform.resources_of("AWS::Kinesis::Stream") {
        let p = &r.properties;
        streams.push(StreamSpec {
            logical: logical.to_owned(),
            name: platform.required(logical, p, "Name", scope)?,
            shard_count: platform
                .number(logical, p, "ShardCount", scope)?
                .ok_or_else(|| platform.error(logical, "ShardCount is required locally"))?,
            retention_hours: platform.number(logical, p, "RetentionPeriodHours", scope)?,
        });
    }

    let mut tables = Vec::new();
    for (logical, r) in platform.resources_of("AWS::DynamoDB::Table") {
        let p = &r.properties;
        let pairs = |list: &str, a: &str, b: &str| -> Result<Vec<(String, String)>, LocalError> {
            let items = p.get(list).and_then(Value::as_sequence);
            let items = items.ok_or_else(|| platform.error(logical, format!("no {list}")))?;
            items
                .iter()
                .map(|item| {
                    let m = item.as_mapping().cloned().unwrap_or_default();
                    Ok((
                        platform.required(logical, &m, a, scope)?,
                        platform.required(logical, &m, b, scope)?,
                    ))
                })
                .collect()
        };
        let ttl = sub_map(p, "TimeToLiveSpecification");
        let ttl_attribute = match &ttl {
            Some(m) if platform.prop(logical, m, "Enabled", scope)?.as_deref() == Some("true") => {
                platform.prop(logical, m, "AttributeName", scope)?
            }
            _ => None,
        };
        let pitr = match sub_map(p, "PointInTimeRecoverySpecification") {
            Some(m) => {
                platform
                    .prop(logical, &m, "PointInTimeRecoveryEnabled", scope)?
                    .as_deref()
                    == Some("true")
            }
            None => false,
        };
        tables.push(TableSpec {
            logical: logical.to_owned(),
            name: platform.required(logical, p, "TableName", scope)?,
            attributes: pairs("AttributeDefinitions", "AttributeName", "AttributeType")?,
            key_schema: pairs("KeySchema", "AttributeName", "KeyType")?,
            ttl_attribute,
            point_in_time_recovery: pitr,
        });
    }

    let mut buckets = Vec::new();
    for (logical, r) in platform.resources_of("AWS::S3::Bucket") {
        buckets.push(bucket_spec(&platform, logical, &r.properties, scope)?);
    }

    let mut queues = Vec::new();
    for (logical, r) in platform.resources_of("AWS::SQS::Queue") {
        let p = &r.properties;
        let mut attributes = BTreeMap::new();
        for attr in QUEUE_ATTRIBUTES {
            if let Some(v) = platform.prop(logical, p, attr, scope)? {
                attributes.insert(attr.to_owned(), v);
            }
        }
        queues.push(QueueSpec {
            logical: logical.to_owned(),
            name: platform.required(logical, p, "QueueName", scope)?,
            attributes,
        });
    }

    let mut services = Vec::new();
    let services_dir = infra_dir.join("services");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&services_dir)
        .map_err(LocalError::io(format!(
            "listing {}",
            services_dir.display()
        )))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        services.push(service_spec(&file)?);
    }

    Ok(Plan {
        platform,
        streams,
        tables,
        buckets,
        queues,
        services,
    })
}

fn sub_map(p: &Mapping, name: &str) -> Option<Mapping> {
    p.get(name).and_then(Value::as_mapping).cloned()
}

fn bucket_spec(
    t: &Template,
    logical: &str,
    p: &Mapping,
    scope: Scope<'_>,
) -> Result<BucketSpec, LocalError> {
    let mut lifecycle = Vec::new();
    let rules = sub_map(p, "LifecycleConfiguration")
        .and_then(|m| m.get("Rules").and_then(Value::as_sequence).cloned())
        .unwrap_or_default();
    for rule in &rules {
        let m = rule.as_mapping().cloned().unwrap_or_default();
        let mut transitions = Vec::new();
        for tr in m
            .get("Transitions")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let tm = tr.as_mapping().cloned().unwrap_or_default();
            let days = t.number(logical, &tm, "TransitionInDays", scope)?;
            let days =
                days.ok_or_else(|| t.error(logical, "Transition without TransitionInDays"))?;
            transitions.push((days, t.required(logical, &tm, "StorageClass", scope)?));
        }
        let abort = sub_map(&m, "AbortIncompleteMultipartUpload");
        lifecycle.push(LifecycleRuleSpec {
            id: t.prop(logical, &m, "Id", scope)?.unwrap_or_default(),
            enabled: t.required(logical, &m, "Status", scope)? == "Enabled",
            prefix: t.prop(logical, &m, "Prefix", scope)?.unwrap_or_default(),
            transitions,
            expiration_days: t.number(logical, &m, "ExpirationInDays", scope)?,
            abort_incomplete_multipart_days: match abort {
                Some(a) => t.number(logical, &a, "DaysAfterInitiation", scope)?,
                None => None,
            },
        });
    }
    let public_access_block = match sub_map(p, "PublicAccessBlockConfiguration") {
        Some(m) => {
            let flag = |name: &str| -> Result<bool, LocalError> {
                Ok(t.prop(logical, &m, name, scope)?.as_deref() == Some("true"))
            };
            Some([
                flag("BlockPublicAcls")?,
                flag("BlockPublicPolicy")?,
                flag("IgnorePublicAcls")?,
                flag("RestrictPublicBuckets")?,
            ])
        }
        None => None,
    };
    let sse_rule = sub_map(p, "BucketEncryption")
        .and_then(|m| {
            m.get("ServerSideEncryptionConfiguration")
                .and_then(Value::as_sequence)
                .and_then(|s| s.first())
                .and_then(Value::as_mapping)
                .cloned()
        })
        .unwrap_or_default();
    let sse_kms = sub_map(&sse_rule, "ServerSideEncryptionByDefault")
        .and_then(|d| {
            d.get("SSEAlgorithm")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .is_some_and(|a| a == "aws:kms");
    Ok(BucketSpec {
        logical: logical.to_owned(),
        name: t.required(logical, p, "BucketName", scope)?,
        lifecycle,
        public_access_block,
        sse_kms,
        bucket_key_enabled: t
            .prop(logical, &sse_rule, "BucketKeyEnabled", scope)?
            .as_deref()
            == Some("true"),
    })
}

fn service_spec(file: &Path) -> Result<ServiceSpec, LocalError> {
    let template = Template::load(file)?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let no_exports = BTreeMap::new();

    let mut functions = template.resources_of("AWS::Lambda::Function");
    let Some((function_logical, function)) = functions.next() else {
        return Err(LocalError::Template {
            file: file.to_path_buf(),
            resource: None,
            message: "no AWS::Lambda::Function".into(),
        });
    };
    if let Some((extra, _)) = functions.next() {
        return Err(template.error(extra, "one function per service template"));
    }
    let empty_resources = BTreeMap::new();
    let scope = Scope {
        resources: &empty_resources,
        exports: &no_exports,
    };
    let function_name = template.required(
        function_logical,
        &function.properties,
        "FunctionName",
        scope,
    )?;
    let env = function
        .properties
        .get("Environment")
        .and_then(|e| e.get("Variables"))
        .and_then(Value::as_mapping)
        .map(|vars| {
            vars.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                .collect()
        })
        .unwrap_or_default();

    // `Ref: Function` in the mapping is the function's name.
    let function_attrs: BTreeMap<String, Attrs> = [(
        function_logical.to_owned(),
        Attrs {
            reference: function_name.clone(),
            attrs: BTreeMap::new(),
        },
    )]
    .into();
    let scope = Scope {
        resources: &function_attrs,
        exports: &no_exports,
    };
    let mut esms = template.resources_of("AWS::Lambda::EventSourceMapping");
    let esm = match esms.next() {
        None => None,
        Some((logical, r)) => Some(esm_spec(&template, logical, &r.properties, scope)?),
    };
    Ok(ServiceSpec {
        name,
        template: template.clone(),
        function_name,
        env,
        esm,
    })
}

fn esm_spec(
    t: &Template,
    logical: &str,
    p: &Mapping,
    scope: Scope<'_>,
) -> Result<EsmSpec, LocalError> {
    let flag = |name: &str| -> Result<bool, LocalError> {
        Ok(t.prop(logical, p, name, scope)?.as_deref() == Some("true"))
    };
    let batch_size = t
        .number(logical, p, "BatchSize", scope)?
        .unwrap_or(template::ESM_DEFAULT_BATCH_SIZE);
    let window = t
        .number(logical, p, "MaximumBatchingWindowInSeconds", scope)?
        .unwrap_or(0);
    let pf = t
        .number(logical, p, "ParallelizationFactor", scope)?
        .unwrap_or(1);
    let retries = t
        .number(logical, p, "MaximumRetryAttempts", scope)?
        .unwrap_or(-1);
    let age = t
        .number(logical, p, "MaximumRecordAgeInSeconds", scope)?
        .unwrap_or(-1);
    let starting_position = t.required(logical, p, "StartingPosition", scope)?;
    check_esm(batch_size, window, pf, retries, age, &starting_position)
        .map_err(|m| t.error(logical, m))?;
    let report = p
        .get("FunctionResponseTypes")
        .and_then(Value::as_sequence)
        .is_some_and(|s| {
            s.iter()
                .any(|v| v.as_str() == Some("ReportBatchItemFailures"))
        });
    Ok(EsmSpec {
        logical: logical.to_owned(),
        event_source_arn: p
            .get("EventSourceArn")
            .cloned()
            .ok_or_else(|| t.error(logical, "no EventSourceArn"))?,
        on_failure_destination: p
            .get("DestinationConfig")
            .and_then(|d| d.get("OnFailure"))
            .and_then(|o| o.get("Destination"))
            .cloned(),
        settings: EsmSettings {
            function_name: t.required(logical, p, "FunctionName", scope)?,
            stream_name: String::new(),
            batch_size,
            maximum_batching_window_secs: window,
            parallelization_factor: pf,
            starting_position,
            bisect_batch_on_function_error: flag("BisectBatchOnFunctionError")?,
            maximum_retry_attempts: retries,
            maximum_record_age_secs: age,
            report_batch_item_failures: report,
            on_failure_queue_url: None,
            checkpoint_table: CHECKPOINT_TABLE.to_owned(),
        },
    })
}

/// Lambda's bounds for a Kinesis mapping.
fn check_esm(
    batch_size: u32,
    window: u32,
    pf: u32,
    retries: i32,
    age: i32,
    starting_position: &str,
) -> Result<(), String> {
    if !(1..=template::KINESIS_ESM_MAX_BATCH_SIZE).contains(&batch_size) {
        return Err(format!(
            "BatchSize {batch_size} outside 1..={}",
            template::KINESIS_ESM_MAX_BATCH_SIZE
        ));
    }
    if window > template::ESM_MAX_BATCHING_WINDOW_SECS {
        return Err(format!(
            "MaximumBatchingWindowInSeconds {window} over {}",
            template::ESM_MAX_BATCHING_WINDOW_SECS
        ));
    }
    if !(1..=template::ESM_MAX_PARALLELIZATION_FACTOR).contains(&pf) {
        return Err(format!(
            "ParallelizationFactor {pf} outside 1..={}",
            template::ESM_MAX_PARALLELIZATION_FACTOR
        ));
    }
    if !(-1..=template::ESM_MAX_RETRY_ATTEMPTS).contains(&retries) {
        return Err(format!(
            "MaximumRetryAttempts {retries} outside -1..={}",
            template::ESM_MAX_RETRY_ATTEMPTS
        ));
    }
    if age != -1
        && !(template::ESM_MIN_RECORD_AGE_SECS..=template::ESM_MAX_RECORD_AGE_SECS).contains(&age)
    {
        return Err(format!(
            "MaximumRecordAgeInSeconds {age} is neither -1 nor in {}..={}",
            template::ESM_MIN_RECORD_AGE_SECS,
            template::ESM_MAX_RECORD_AGE_SECS
        ));
    }
    if !matches!(starting_position, "TRIM_HORIZON" | "LATEST") {
        return Err(format!(
            "StartingPosition {starting_position} is not TRIM_HORIZON or LATEST"
        ));
    }
    Ok(())
}

/// Creates everything the templates under `infra_dir` declare, on the endpoints `sdk`
/// points at, plus the local checkpoint table. Safe to run again on the same emulators.
pub async fn provision(sdk: &SdkConfig, infra_dir: &Path) -> Result<Deployment, LocalError> {
    let plan = plan(infra_dir)?;
    let kinesis = aws_sdk_kinesis::Client::new(sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(sdk);

    let mut attrs: BTreeMap<String, Attrs> = BTreeMap::new();
    // No local KMS: the key is a name for ARNs only; encryption settings are skipped.
    for (logical, _) in plan.platform.resources_of("AWS::KMS::Key") {
        attrs.insert(
            logical.to_owned(),
            Attrs {
                reference: "local-key".into(),
                attrs: [(
                    "Arn".to_owned(),
                    format!(
                        "arn:aws:kms:{}:{LOCAL_ACCOUNT_ID}:key/local-key",
                        crate::emulators::LOCAL_REGION
                    ),
                )]
                .into(),
            },
        );
    }

    let mut streams = Vec::new();
    for spec in &plan.streams {
        streams.push(create_stream(&kinesis, spec).await?);
    }
    wait_streams_active(&kinesis, &streams).await?;

    let mut tables = Vec::new();
    for spec in &plan.tables {
        tables.push(create_table(&dynamo, spec).await?);
    }
    create_table(
        &dynamo,
        &TableSpec {
            logical: "LocalCheckpoints".into(),
            name: CHECKPOINT_TABLE.into(),
            attributes: vec![("pk".into(), "S".into())],
            key_schema: vec![("pk".into(), "HASH".into())],
            ttl_attribute: None,
            point_in_time_recovery: false,
        },
    )
    .await?;

    let mut buckets = Vec::new();
    for spec in &plan.buckets {
        buckets.push(create_bucket(&s3, &plan.platform, spec).await?);
    }

    let mut queues = Vec::new();
    for spec in &plan.queues {
        queues.push(create_queue(&sqs, spec).await?);
    }

    for r in streams.iter().chain(&tables).chain(&buckets).chain(&queues) {
        let mut a = BTreeMap::from([("Arn".to_owned(), r.arn.clone())]);
        if r.reference != r.name {
            a.insert("QueueUrl".into(), r.reference.clone());
            a.insert("QueueName".into(), r.name.clone());
        }
        attrs.insert(
            r.logical.clone(),
            Attrs {
                reference: r.reference.clone(),
                attrs: a,
            },
        );
    }
    for (logical, r) in plan.platform.resources_of("AWS::S3::BucketPolicy") {
        tracing::debug!(resource = logical, kind = %r.kind, "not applied locally: the emulators do not enforce bucket policies");
    }

    let no_exports = BTreeMap::new();
    let scope = Scope {
        resources: &attrs,
        exports: &no_exports,
    };
    let mut exports = BTreeMap::new();
    for (name, output) in plan.platform.outputs() {
        let Some(export) = &output.export_name else {
            continue;
        };
        let err = |m: String| plan.platform.error(name, m);
        let export = plan.platform.eval(export, scope).map_err(err)?;
        let value = plan.platform.eval(&output.value, scope).map_err(err)?;
        exports.insert(export, value);
    }

    let mut services = BTreeMap::new();
    for spec in plan.services {
        let esm = match &spec.esm {
            None => None,
            Some(esm) => Some(resolve_esm(
                &spec.template,
                esm,
                &exports,
                &streams,
                &queues,
            )?),
        };
        services.insert(spec.name.clone(), (spec, esm));
    }

    Ok(Deployment {
        streams,
        tables,
        buckets,
        queues,
        exports,
        services,
    })
}

fn resolve_esm(
    t: &Template,
    esm: &EsmSpec,
    exports: &BTreeMap<String, String>,
    streams: &[LocalResource],
    queues: &[LocalResource],
) -> Result<EsmSettings, LocalError> {
    let no_resources = BTreeMap::new();
    let scope = Scope {
        resources: &no_resources,
        exports,
    };
    let err = |m: String| t.error(&esm.logical, m);
    let arn = t.eval(&esm.event_source_arn, scope).map_err(err)?;
    let stream = streams
        .iter()
        .find(|s| s.arn == arn)
        .ok_or_else(|| err(format!("EventSourceArn {arn} is no local stream")))?;
    let on_failure_queue_url = match &esm.on_failure_destination {
        None => None,
        Some(dest) => {
            let arn = t.eval(dest, scope).map_err(err)?;
            let queue = queues
                .iter()
                .find(|q| q.arn == arn)
                .ok_or_else(|| err(format!("OnFailure destination {arn} is no local queue")))?;
            Some(queue.reference.clone())
        }
    };
    Ok(EsmSettings {
        stream_name: stream.name.clone(),
        on_failure_queue_url,
        ..esm.settings.clone()
    })
}

async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    spec: &StreamSpec,
) -> Result<LocalResource, LocalError> {
    use aws_sdk_kinesis::operation::create_stream::CreateStreamError;
    match kinesis
        .create_stream()
        .stream_name(&spec.name)
        .shard_count(spec.shard_count)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateStreamError::ResourceInUseException(_))
            ) =>
        {
            tracing::debug!(stream = %spec.name, "stream exists already");
        }
        Err(e) => return Err(LocalError::kinesis("CreateStream")(e)),
    }
    tracing::debug!(stream = %spec.name, "stream encryption skipped: the Kinesis emulator has no KMS");
    if let Some(hours) = spec.retention_hours.filter(|h| *h > 24) {
        kinesis
            .increase_stream_retention_period()
            .stream_name(&spec.name)
            .retention_period_hours(hours)
            .send()
            .await
            .map_err(LocalError::kinesis("IncreaseStreamRetentionPeriod"))?;
    }
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(&spec.name)
        .send()
        .await
        .map_err(LocalError::kinesis("DescribeStreamSummary"))?;
    let arn = summary
        .stream_description_summary()
        .map(|d| d.stream_arn().to_owned())
        .unwrap_or_default();
    Ok(LocalResource {
        logical: spec.logical.clone(),
        name: spec.name.clone(),
        arn,
        reference: spec.name.clone(),
        shard_count: Some(spec.shard_count),
    })
}

async fn wait_streams_active(
    kinesis: &aws_sdk_kinesis::Client,
    streams: &[LocalResource],
) -> Result<(), LocalError> {
    use aws_sdk_kinesis::types::StreamStatus;
    let deadline = tokio::time::Instant::now() + STREAM_ACTIVE_DEADLINE;
    for stream in streams {
        loop {
            let summary = kinesis
                .describe_stream_summary()
                .stream_name(&stream.name)
                .send()
                .await
                .map_err(LocalError::kinesis("DescribeStreamSummary"))?;
            let status = summary
                .stream_description_summary()
                .map(|d| d.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LocalError::Timeout {
                    what: format!("stream {} to be ACTIVE (is {status:?})", stream.name),
                    waited: STREAM_ACTIVE_DEADLINE,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

async fn create_table(
    dynamo: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
) -> Result<LocalResource, LocalError> {
    use aws_sdk_dynamodb::operation::create_table::CreateTableError;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType,
        PointInTimeRecoverySpecification, ScalarAttributeType, TimeToLiveSpecification,
    };
    let build = |m: String| LocalError::Template {
        file: PathBuf::from("platform.yaml"),
        resource: Some(spec.logical.clone()),
        message: m,
    };
    let mut request = dynamo
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in &spec.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .map_err(|e| build(e.to_string()))?,
        );
    }
    for (name, kind) in &spec.key_schema {
        request = request.key_schema(
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .map_err(|e| build(e.to_string()))?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            tracing::debug!(table = %spec.name, "table exists already");
        }
        Err(e) => return Err(LocalError::dynamodb("CreateTable")(e)),
    }
    // moto's CloudFormation drops TTL; the view's expiry depends on it, so set it here.
    if let Some(attribute) = &spec.ttl_attribute {
        dynamo
            .update_time_to_live()
            .table_name(&spec.name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .map_err(|e| build(e.to_string()))?,
            )
            .send()
            .await
            .map_err(LocalError::dynamodb("UpdateTimeToLive"))?;
    }
    if spec.point_in_time_recovery {
        let pitr = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()
            .map_err(|e| build(e.to_string()))?;
        if let Err(e) = dynamo
            .update_continuous_backups()
            .table_name(&spec.name)
            .point_in_time_recovery_specification(pitr)
            .send()
            .await
        {
            tracing::debug!(table = %spec.name, error = %aws_sdk_dynamodb::Error::from(e), "PITR not set locally");
        }
    }
    let described = dynamo
        .describe_table()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(LocalError::dynamodb("DescribeTable"))?;
    let arn = described
        .table()
        .and_then(|t| t.table_arn())
        .unwrap_or_default()
        .to_owned();
    Ok(LocalResource {
        logical: spec.logical.clone(),
        name: spec.name.clone(),
        arn,
        reference: spec.name.clone(),
        shard_count: None,
    })
}

async fn create_bucket(
    s3: &aws_sdk_s3::Client,
    platform: &Template,
    spec: &BucketSpec,
) -> Result<LocalResource, LocalError> {
    use aws_sdk_s3::operation::create_bucket::CreateBucketError;
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
        LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule, Transition, TransitionStorageClass,
    };
    let build = |e: aws_sdk_s3::error::BuildError| platform.error(&spec.logical, e.to_string());
    match s3.create_bucket().bucket(&spec.name).send().await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateBucketError::BucketAlreadyOwnedByYou(_))
            ) => {}
        Err(e) => return Err(LocalError::s3("CreateBucket")(e)),
    }

    if !spec.lifecycle.is_empty() {
        let mut config = BucketLifecycleConfiguration::builder();
        for rule in &spec.lifecycle {
            let mut r = LifecycleRule::builder()
                .id(&rule.id)
                .status(if rule.enabled {
                    ExpirationStatus::Enabled
                } else {
                    ExpirationStatus::Disabled
                })
                .filter(LifecycleRuleFilter::builder().prefix(&rule.prefix).build());
            for (days, class) in &rule.transitions {
                r = r.transitions(
                    Transition::builder()
                        .days(*days)
                        .storage_class(TransitionStorageClass::from(class.as_str()))
                        .build(),
                );
            }
            if let Some(days) = rule.expiration_days {
                r = r.expiration(LifecycleExpiration::builder().days(days).build());
            }
            if let Some(days) = rule.abort_incomplete_multipart_days {
                r = r.abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(days)
                        .build(),
                );
            }
            config = config.rules(r.build().map_err(build)?);
        }
        s3.put_bucket_lifecycle_configuration()
            .bucket(&spec.name)
            .lifecycle_configuration(config.build().map_err(build)?)
            .send()
            .await
            .map_err(LocalError::s3("PutBucketLifecycleConfiguration"))?;
    }

    if spec.sse_kms {
        // No local KMS key exists; record the intent with S3-managed keys instead of a
        // KMS key id the emulator could not resolve.
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::Aes256)
                    .build()
                    .map_err(build)?,
            )
            .bucket_key_enabled(spec.bucket_key_enabled)
            .build();
        let config = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(build)?;
        if let Err(e) = s3
            .put_bucket_encryption()
            .bucket(&spec.name)
            .server_side_encryption_configuration(config)
            .send()
            .await
        {
            tracing::debug!(bucket = %spec.name, error = %aws_sdk_s3::Error::from(e), "bucket encryption not set locally");
        }
    }

    if let Some([acls, policy, ignore, restrict]) = spec.public_access_block {
        let config = PublicAccessBlockConfiguration::builder()
            .block_public_acls(acls)
            .block_public_policy(policy)
            .ignore_public_acls(ignore)
            .restrict_public_buckets(restrict)
            .build();
        if let Err(e) = s3
            .put_public_access_block()
            .bucket(&spec.name)
            .public_access_block_configuration(config)
            .send()
            .await
        {
            tracing::debug!(bucket = %spec.name, error = %aws_sdk_s3::Error::from(e), "public access block not set locally");
        }
    }

    Ok(LocalResource {
        logical: spec.logical.clone(),
        name: spec.name.clone(),
        arn: format!("arn:aws:s3:::{}", spec.name),
        reference: spec.name.clone(),
        shard_count: None,
    })
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    spec: &QueueSpec,
) -> Result<LocalResource, LocalError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut request = sqs.create_queue().queue_name(&spec.name);
    for (name, value) in &spec.attributes {
        request = request.attributes(QueueAttributeName::from(name.as_str()), value);
    }
    for attr in KMS_QUEUE_ATTRIBUTES {
        tracing::debug!(queue = %spec.name, attr, "skipped locally: no KMS");
    }
    let created = request
        .send()
        .await
        .map_err(LocalError::sqs("CreateQueue"))?;
    let url = created.queue_url().unwrap_or_default().to_owned();
    let got = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(LocalError::sqs("GetQueueAttributes"))?;
    let arn = got
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Ok(LocalResource {
        logical: spec.logical.clone(),
        name: spec.name.clone(),
        arn,
        reference: url,
        shard_count: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn infra() -> PathBuf {
        crate::project_root().unwrap().join("infra")
    }

    #[test]
    fn plan_reads_the_platform_template() {
        let plan = plan(&infra()).unwrap();
        let streams: Vec<(&str, i32)> = plan
            .streams
            .iter()
            .map(|s| (s.name.as_str(), s.shard_count))
            .collect();
        assert_eq!(
            streams,
            [
                ("riffle-enriched", 2),
                ("riffle-raw", 2),
                ("riffle-validated", 2)
            ]
        );
        let view = plan
            .tables
            .iter()
            .find(|t| t.name == "riffle-view")
            .unwrap();
        assert_eq!(
            view.key_schema,
            [
                ("agg_key".into(), "HASH".into()),
                ("window_start".into(), "RANGE".into())
            ]
        );
        assert_eq!(view.ttl_attribute.as_deref(), Some("expires_at"));
        assert!(view.point_in_time_recovery);
        let schemas = plan
            .tables
            .iter()
            .find(|t| t.name == "riffle-schemas")
            .unwrap();
        assert_eq!(schemas.key_schema.len(), 2);

        let bucket = &plan.buckets[0];
        assert_eq!(bucket.name, format!("riffle-archive-{LOCAL_ACCOUNT_ID}"));
        assert_eq!(bucket.public_access_block, Some([true; 4]));
        assert!(bucket.sse_kms && bucket.bucket_key_enabled);
        let rule = &bucket.lifecycle[0];
        assert_eq!(
            rule.transitions,
            [(30, "STANDARD_IA".into()), (90, "GLACIER_IR".into())]
        );
        assert_eq!(rule.expiration_days, Some(365));
        assert_eq!(rule.abort_incomplete_multipart_days, Some(7));

        let mut queues: Vec<&str> = plan.queues.iter().map(|q| q.name.as_str()).collect();
        queues.sort();
        assert_eq!(
            queues,
            [
                "riffle-aggregator-dlq",
                "riffle-archiver-dlq",
                "riffle-enricher-dlq",
                "riffle-rejects",
                "riffle-validator-dlq"
            ]
        );
        for q in &plan.queues {
            assert_eq!(q.attributes["MessageRetentionPeriod"], "1209600");
        }
    }

    #[test]
    fn plan_reads_every_service_template() {
        let plan = plan(&infra()).unwrap();
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "aggregator",
                "archiver",
                "enricher",
                "schema-registry",
                "validator"
            ]
        );
        let validator = plan
            .services
            .iter()
            .find(|s| s.name == "validator")
            .unwrap();
        assert_eq!(validator.function_name, "riffle-validator");
        let esm = validator.esm.as_ref().unwrap();
        assert_eq!(esm.settings.function_name, "riffle-validator");
        assert_eq!(esm.settings.batch_size, 500);
        assert!(esm.settings.bisect_batch_on_function_error);
        assert!(esm.settings.report_batch_item_failures);
        assert_eq!(esm.settings.starting_position, "TRIM_HORIZON");
        let archiver = plan.services.iter().find(|s| s.name == "archiver").unwrap();
        assert_eq!(archiver.esm.as_ref().unwrap().settings.batch_size, 5000);
        let registry = plan
            .services
            .iter()
            .find(|s| s.name == "schema-registry")
            .unwrap();
        assert!(registry.esm.is_none());
        assert_eq!(registry.env[0].0, "RIFFLE_REGISTRY_TABLE");
    }

    #[test]
    fn esm_limits_are_lambdas() {
        assert!(check_esm(500, 1, 2, 3, 3600, "TRIM_HORIZON").is_ok());
        assert!(check_esm(100, 0, 1, -1, -1, "LATEST").is_ok());
        assert!(check_esm(0, 0, 1, -1, -1, "LATEST").is_err());
        assert!(check_esm(10_001, 0, 1, -1, -1, "LATEST").is_err());
        assert!(check_esm(100, 301, 1, -1, -1, "LATEST").is_err());
        assert!(check_esm(100, 0, 11, -1, -1, "LATEST").is_err());
        assert!(check_esm(100, 0, 1, -2, -1, "LATEST").is_err());
        assert!(check_esm(100, 0, 1, -1, 59, "LATEST").is_err());
        assert!(check_esm(100, 0, 1, -1, -1, "AT_TIMESTAMP").is_err());
    }

    #[test]
    fn esm_settings_json_is_the_documented_contract() {
        let esm = EsmSettings {
            function_name: "riffle-validator".into(),
            stream_name: "riffle-raw".into(),
            batch_size: 500,
            maximum_batching_window_secs: 1,
            parallelization_factor: 2,
            starting_position: "TRIM_HORIZON".into(),
            bisect_batch_on_function_error: true,
            maximum_retry_attempts: 3,
            maximum_record_age_secs: 3600,
            report_batch_item_failures: true,
            on_failure_queue_url: Some("http://q".into()),
            checkpoint_table: CHECKPOINT_TABLE.into(),
        };
        let json: serde_json::Value = serde_json::to_value(&esm).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "batch_size",
                "bisect_batch_on_function_error",
                "checkpoint_table",
                "function_name",
                "maximum_batching_window_secs",
                "maximum_record_age_secs",
                "maximum_retry_attempts",
                "on_failure_queue_url",
                "parallelization_factor",
                "report_batch_item_failures",
                "starting_position",
                "stream_name"
            ]
        );
        let back: EsmSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, esm);
    }

    #[test]
    fn a_bad_esm_names_file_and_resource() {
        let dir = std::env::temp_dir().join(format!("riffle-plan-{}", std::process::id()));
        let services = dir.join("services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::copy(infra().join("platform.yaml"), dir.join("platform.yaml")).unwrap();
        let text = std::fs::read_to_string(infra().join("services/validator.yaml"))
            .unwrap()
            .replace("BatchSize: 500", "BatchSize: 20000");
        std::fs::write(services.join("validator.yaml"), text).unwrap();
        let err = plan(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("validator.yaml"), "{err}");
        assert!(
            err.contains("EventSourceMapping") && err.contains("BatchSize 20000"),
            "{err}"
        );
    }
}
