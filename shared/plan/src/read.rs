//! Reading the templates into a [`Plan`] (pure: files in, data out).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::error::PlanError;
use crate::model::*;
use riffle_aws::esm::{self, StartingPosition};

use crate::template::{Attrs, Scope, Template};

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

/// Reads `infra_dir/platform.yaml` and every `infra_dir/services/*.yaml` (pure), each
/// evaluated with its `Env` parameter set to `env` (the local twin passes
/// [`crate::LOCAL_ENV`]).
///
/// # Errors
/// A template that is unreadable, uses what the reader does not support, or declares no
/// `Env` parameter (its names would then collide across environments).
pub fn plan(infra_dir: &Path, env: &str) -> Result<Plan, PlanError> {
    let platform = load(&infra_dir.join("platform.yaml"), env)?;
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
        let pairs_in = |p: &Mapping,
                        list: &str,
                        a: &str,
                        b: &str|
         -> Result<Vec<(String, String)>, PlanError> {
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
        let pairs = |list: &str, a: &str, b: &str| pairs_in(p, list, a, b);
        let mut global_indexes = Vec::new();
        for index in p
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let m = index.as_mapping().cloned().unwrap_or_default();
            let projection = sub_map(&m, "Projection").unwrap_or_default();
            let non_key_attributes = projection
                .get("NonKeyAttributes")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        platform.error(logical, "NonKeyAttributes must be plain names")
                    })
                })
                .collect::<Result<_, _>>()?;
            global_indexes.push(IndexSpec {
                name: platform.required(logical, &m, "IndexName", scope)?,
                key_schema: pairs_in(&m, "KeySchema", "AttributeName", "KeyType")?,
                projection_type: platform
                    .prop(logical, &projection, "ProjectionType", scope)?
                    .unwrap_or_else(|| "KEYS_ONLY".to_owned()),
                non_key_attributes,
            });
        }
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
            global_indexes,
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
        .map_err(PlanError::io(format!("listing {}", services_dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        services.push(service_spec(&file, env)?);
    }

    Ok(Plan {
        env: env.to_owned(),
        platform,
        streams,
        tables,
        buckets,
        queues,
        services,
    })
}

/// A template with its `Env` set.
fn load(file: &Path, env: &str) -> Result<Template, PlanError> {
    let mut template = Template::load(file)?;
    template.set_parameter(crate::ENV_PARAMETER, env)?;
    Ok(template)
}

fn sub_map(p: &Mapping, name: &str) -> Option<Mapping> {
    p.get(name).and_then(Value::as_mapping).cloned()
}

fn bucket_spec(
    t: &Template,
    logical: &str,
    p: &Mapping,
    scope: Scope<'_>,
) -> Result<BucketSpec, PlanError> {
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
            let flag = |name: &str| -> Result<bool, PlanError> {
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

fn service_spec(file: &Path, env: &str) -> Result<ServiceSpec, PlanError> {
    let template = load(file, env)?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let no_exports = BTreeMap::new();

    let mut functions = template.resources_of("AWS::Lambda::Function");
    let Some((function_logical, function)) = functions.next() else {
        return Err(PlanError::Template {
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
    // The local Lambda Runtime API runs the function with the memory and timeout it has on
    // AWS (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, the invocation deadline).
    let memory_mb = template
        .number(function_logical, &function.properties, "MemorySize", scope)?
        .unwrap_or(128);
    let timeout_s = template
        .number(function_logical, &function.properties, "Timeout", scope)?
        .unwrap_or(3);
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
        memory_mb,
        timeout_s,
        env,
        esm,
    })
}

fn esm_spec(
    t: &Template,
    logical: &str,
    p: &Mapping,
    scope: Scope<'_>,
) -> Result<EsmSpec, PlanError> {
    let flag = |name: &str| -> Result<bool, PlanError> {
        Ok(t.prop(logical, p, name, scope)?.as_deref() == Some("true"))
    };
    let batch_size = t
        .number(logical, p, "BatchSize", scope)?
        .unwrap_or(esm::BATCH_SIZE_DEFAULT);
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
    let starting_position = StartingPosition::parse(&starting_position)
        .ok_or_else(|| t.error(logical, format!("StartingPosition {starting_position}")))?;
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
            batch_size,
            maximum_batching_window_secs: window,
            parallelization_factor: pf,
            starting_position,
            bisect_batch_on_function_error: flag("BisectBatchOnFunctionError")?,
            maximum_retry_attempts: retries,
            maximum_record_age_secs: age,
            report_batch_item_failures: report,
            ..EsmSettings::new(
                String::new(),
                t.required(logical, p, "FunctionName", scope)?,
                CHECKPOINT_TABLE,
            )
        },
    })
}

/// Lambda's bounds for a Kinesis mapping.
pub(crate) fn check_esm(
    batch_size: u32,
    window: u32,
    pf: u32,
    retries: i32,
    age: i32,
    starting_position: &str,
) -> Result<(), String> {
    if !(esm::BATCH_SIZE_MIN..=esm::BATCH_SIZE_MAX).contains(&batch_size) {
        return Err(format!(
            "BatchSize {batch_size} outside {}..={}",
            esm::BATCH_SIZE_MIN,
            esm::BATCH_SIZE_MAX
        ));
    }
    if window > esm::BATCHING_WINDOW_MAX_SECS {
        return Err(format!(
            "MaximumBatchingWindowInSeconds {window} over {}",
            esm::BATCHING_WINDOW_MAX_SECS
        ));
    }
    if !(1..=esm::PARALLELIZATION_FACTOR_MAX).contains(&pf) {
        return Err(format!(
            "ParallelizationFactor {pf} outside 1..={}",
            esm::PARALLELIZATION_FACTOR_MAX
        ));
    }
    if !(-1..=esm::RETRY_ATTEMPTS_MAX).contains(&retries) {
        return Err(format!(
            "MaximumRetryAttempts {retries} outside -1..={}",
            esm::RETRY_ATTEMPTS_MAX
        ));
    }
    if age != -1 && !(esm::RECORD_AGE_MIN_SECS..=esm::RECORD_AGE_MAX_SECS).contains(&age) {
        return Err(format!(
            "MaximumRecordAgeInSeconds {age} is neither -1 nor in {}..={}",
            esm::RECORD_AGE_MIN_SECS,
            esm::RECORD_AGE_MAX_SECS
        ));
    }
    if !matches!(starting_position, "TRIM_HORIZON" | "LATEST") {
        return Err(format!(
            "StartingPosition {starting_position} is not TRIM_HORIZON or LATEST"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::LOCAL_ENV;
    use crate::template::LOCAL_ACCOUNT_ID;

    fn infra() -> PathBuf {
        crate::project_root().unwrap().join("infra")
    }

    #[test]
    fn plan_reads_the_platform_template() {
        let plan = plan(&infra(), LOCAL_ENV).unwrap();
        let streams: Vec<(&str, i32)> = plan
            .streams
            .iter()
            .map(|s| (s.name.as_str(), s.shard_count))
            .collect();
        assert_eq!(
            streams,
            [
                ("riffle-local-enriched", 2),
                ("riffle-local-raw", 2),
                ("riffle-local-validated", 2)
            ]
        );
        let view = plan
            .tables
            .iter()
            .find(|t| t.name == "riffle-local-view")
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
            .find(|t| t.name == "riffle-local-schemas")
            .unwrap();
        assert_eq!(schemas.key_schema.len(), 2);

        let bucket = plan
            .buckets
            .iter()
            .find(|b| b.logical == "ArchiveBucket")
            .unwrap();
        assert_eq!(
            bucket.name,
            format!("riffle-archive-local-{LOCAL_ACCOUNT_ID}")
        );
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
                "riffle-local-aggregator-dlq",
                "riffle-local-archiver-dlq",
                "riffle-local-enricher-dlq",
                "riffle-local-rejects",
                "riffle-local-validator-dlq"
            ]
        );
        for q in &plan.queues {
            assert_eq!(q.attributes["MessageRetentionPeriod"], "1209600");
        }
    }

    #[test]
    fn plan_reads_every_service_template() {
        let plan = plan(&infra(), LOCAL_ENV).unwrap();
        let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "aggregator",
                "archiver",
                "autoscaler",
                "enricher",
                "schema-registry",
                "validator",
                "view-query"
            ]
        );
        let validator = plan
            .services
            .iter()
            .find(|s| s.name == "validator")
            .unwrap();
        assert_eq!(validator.function_name, "riffle-local-validator");
        assert_eq!((validator.memory_mb, validator.timeout_s), (512, 60));
        let esm = validator.esm.as_ref().unwrap();
        assert_eq!(esm.settings.function_name, "riffle-local-validator");
        assert_eq!(esm.settings.batch_size, 500);
        assert!(esm.settings.bisect_batch_on_function_error);
        assert!(esm.settings.report_batch_item_failures);
        assert_eq!(
            esm.settings.starting_position,
            StartingPosition::TrimHorizon
        );
        let archiver = plan.services.iter().find(|s| s.name == "archiver").unwrap();
        assert_eq!(archiver.esm.as_ref().unwrap().settings.batch_size, 5000);
        let registry = plan
            .services
            .iter()
            .find(|s| s.name == "schema-registry")
            .unwrap();
        assert!(registry.esm.is_none());
        assert!(
            registry
                .env
                .iter()
                .any(|(k, _)| k == "RIFFLE_REGISTRY_TABLE")
        );
        // Every function learns its environment (its metrics' Env dimension) from `Env`.
        let (no_resources, no_exports) = (BTreeMap::new(), BTreeMap::new());
        let scope = Scope {
            resources: &no_resources,
            exports: &no_exports,
        };
        for s in &plan.services {
            let (_, env) = s.env.iter().find(|(k, _)| k == "RIFFLE_ENV").unwrap();
            assert_eq!(
                s.template.eval(env, scope).unwrap(),
                LOCAL_ENV,
                "{}",
                s.name
            );
        }
    }

    /// Two environments' plans share no physical name: what lets them live side by side in
    /// one account (ADR 0016).
    #[test]
    fn two_environments_name_nothing_alike() {
        let names = |env: &str| -> BTreeMap<String, String> {
            let p = plan(&infra(), env).unwrap();
            let mut out = BTreeMap::new();
            let all = p.streams.iter().map(|s| (&s.logical, &s.name));
            let all = all.chain(p.tables.iter().map(|t| (&t.logical, &t.name)));
            let all = all.chain(p.buckets.iter().map(|b| (&b.logical, &b.name)));
            let all = all.chain(p.queues.iter().map(|q| (&q.logical, &q.name)));
            let all = all.chain(p.services.iter().map(|s| (&s.name, &s.function_name)));
            for (logical, name) in all {
                assert!(name.contains(env), "{logical}: {name} does not carry {env}");
                out.insert(name.clone(), logical.clone());
            }
            out
        };
        let (dev, staging) = (names("dev"), names("staging"));
        assert_eq!(dev.len(), staging.len());
        let shared: Vec<&String> = dev.keys().filter(|n| staging.contains_key(*n)).collect();
        assert!(shared.is_empty(), "both environments name {shared:?}");
    }

    #[test]
    fn a_template_without_env_is_refused() {
        let dir = std::env::temp_dir().join(format!("riffle-plan-env-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("services")).unwrap();
        let text = std::fs::read_to_string(infra().join("platform.yaml"))
            .unwrap()
            .replacen("  Env:\n", "  Environment:\n", 1);
        std::fs::write(dir.join("platform.yaml"), text).unwrap();
        let err = plan(&dir, LOCAL_ENV).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            err.contains("platform.yaml") && err.contains("no parameter Env"),
            "{err}"
        );
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
            batch_size: 500,
            maximum_batching_window_secs: 1,
            parallelization_factor: 2,
            starting_position: StartingPosition::TrimHorizon,
            bisect_batch_on_function_error: true,
            maximum_retry_attempts: 3,
            maximum_record_age_secs: 3600,
            report_batch_item_failures: true,
            on_failure_queue_url: Some("http://q".into()),
            ..EsmSettings::new("riffle-raw", "riffle-validator", CHECKPOINT_TABLE)
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
        let err = plan(&dir, LOCAL_ENV).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("validator.yaml"), "{err}");
        assert!(
            err.contains("EventSourceMapping") && err.contains("BatchSize 20000"),
            "{err}"
        );
    }
}
