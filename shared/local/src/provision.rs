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

use crate::error::LocalError;
use riffle_plan::model::{BucketSpec, EsmSpec, QueueSpec, StreamSpec, TableSpec};
use riffle_plan::template::{Attrs, LOCAL_ACCOUNT_ID, Scope, Template};
use riffle_plan::{CHECKPOINT_TABLE, EsmSettings, ServiceSpec, plan};

/// The export the stages import the registry's URL from (`riffle-${Env}-RegistryUrl` with
/// `Env` = [`riffle_plan::LOCAL_ENV`]; tests/provision.rs holds the two together); locally it
/// exists only once the registry process listens, so the caller sets it with
/// [`Deployment::set_export`].
pub const REGISTRY_URL_EXPORT: &str = "riffle-local-RegistryUrl";
/// Environment variable holding a service's [`EsmSettings`] as JSON.
pub const ESM_ENV: &str = "RIFFLE_ESM";
/// How long to wait for a new stream to become ACTIVE.
const STREAM_ACTIVE_DEADLINE: Duration = Duration::from_secs(60);
/// SQS queue attributes that need a KMS the emulators do not have.
const KMS_QUEUE_ATTRIBUTES: [&str; 2] = ["KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"];

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

/// The registry's environment for the local twin: its template's, with the IAM
/// authorization settings (`RIFFLE_REGISTRY_AUTH=iam` and the role lists) replaced by an
/// open registry. Locally no function URL authenticates callers, so `iam` would have no
/// principal to check (the registry refuses to start in that mode outside Lambda); the twin
/// listens on loopback only (ADR 0015).
pub fn local_registry_env(env: Vec<(String, String)>) -> Vec<(String, String)> {
    const IAM_ONLY: [&str; 4] = [
        "RIFFLE_REGISTRY_ADMINS",
        "RIFFLE_REGISTRY_WRITERS",
        "RIFFLE_REGISTRY_READERS",
        "RIFFLE_REGISTRY_SUBJECT_WRITERS",
    ];
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k != "RIFFLE_REGISTRY_AUTH" && !IAM_ONLY.contains(&k.as_str()))
        .collect();
    env.push(("RIFFLE_REGISTRY_AUTH".to_owned(), "none".to_owned()));
    env
}

/// The export the local query API's URL is known by once it announced it, as on AWS the
/// view-query stack exports it.
pub const QUERY_URL_EXPORT: &str = "riffle-local-ViewQueryUrl";

/// The query API's environment for the local twin: its template's, with IAM auth (which
/// needs a function URL to authenticate callers) replaced by bearer auth with `token`.
pub fn local_query_env(env: Vec<(String, String)>, token: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k != "RIFFLE_QUERY_AUTH" && k != "RIFFLE_QUERY_TOKENS")
        .collect();
    env.push(("RIFFLE_QUERY_AUTH".to_owned(), "bearer".to_owned()));
    env.push(("RIFFLE_QUERY_TOKENS".to_owned(), token.to_owned()));
    env
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
    /// A stream's name by logical id (`RawStream`) or name (`riffle-local-raw`).
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

    /// The function name of a service (`riffle-local-validator`).
    pub fn function_name(&self, service: &str) -> Option<&str> {
        self.services
            .get(service)
            .map(|(s, _)| s.function_name.as_str())
    }

    /// A service's function `MemorySize` (MB) and `Timeout` (seconds), as deployed.
    pub fn function_limits(&self, service: &str) -> Option<(u32, u32)> {
        self.services
            .get(service)
            .map(|(s, _)| (s.memory_mb, s.timeout_s))
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
                // The import's name as CloudFormation resolves it (`riffle-${Env}-RegistryUrl`
                // is `riffle-local-RegistryUrl` here).
                let import = value
                    .get("Fn::ImportValue")
                    .and_then(|name| spec.template.eval(name, scope).ok());
                match import {
                    Some(import) => LocalError::UnresolvedImport {
                        service: service.to_owned(),
                        variable: name.clone(),
                        import,
                    },
                    None => spec
                        .template
                        .error("Function", format!("Environment {name}: {message}"))
                        .into(),
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

/// Creates everything the templates under `infra_dir` declare, on the endpoints `sdk`
/// points at, plus the local checkpoint table. Safe to run again on the same emulators.
pub async fn provision(sdk: &SdkConfig, infra_dir: &Path) -> Result<Deployment, LocalError> {
    let plan = plan(infra_dir, riffle_plan::LOCAL_ENV)?;
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
            global_indexes: Vec::new(),
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
    use aws_sdk_dynamodb::types::{PointInTimeRecoverySpecification, TimeToLiveSpecification};
    let build = |m: String| {
        LocalError::from(riffle_plan::PlanError::Template {
            file: PathBuf::from("platform.yaml"),
            resource: Some(spec.logical.clone()),
            message: m,
        })
    };
    let request =
        riffle_aws::table::create_table(dynamo, &spec.name, spec.shape()).map_err(build)?;
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
