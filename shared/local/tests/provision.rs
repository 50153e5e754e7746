//! Provisioning the emulators from infra/ and checking, through the real SDK, that what
//! exists is what the templates say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::TimeToLiveStatus;
use aws_sdk_sqs::types::QueueAttributeName;
use riffle_local::provision::ESM_ENV;
use riffle_local::{
    CHECKPOINT_TABLE, Emulators, EsmSettings, LocalError, REGISTRY_URL_EXPORT, plan, provision,
};

#[tokio::test]
async fn provisioning_creates_what_the_templates_declare() {
    let root = riffle_local::project_root().unwrap();
    let dir = root
        .join(".riffle/test-state")
        .join(format!("provision-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let emulators = Emulators::start(&dir).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let infra = root.join("infra");
    let expected = plan(&infra, riffle_plan::LOCAL_ENV).unwrap();

    let mut deployment = provision(&sdk, &infra).await.unwrap();
    // A second run on the same emulators changes nothing and does not fail.
    let again = provision(&sdk, &infra).await.unwrap();
    assert_eq!(again.exports(), deployment.exports());

    // Streams, with the template's shard count.
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    for spec in &expected.streams {
        assert_eq!(
            deployment.stream_name(&spec.logical),
            Some(spec.name.as_str())
        );
        let shards = kinesis
            .list_shards()
            .stream_name(&spec.name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            shards.shards().len() as i32,
            spec.shard_count,
            "{}",
            spec.name
        );
        assert_eq!(spec.shard_count, 2, "platform default ShardCount");
    }
    assert_eq!(
        deployment.export("riffle-local-RawStreamArn"),
        deployment.stream_arn("RawStream")
    );

    // Tables, keys and TTL (which moto's CloudFormation would have dropped).
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    for spec in &expected.tables {
        let table = dynamo
            .describe_table()
            .table_name(&spec.name)
            .send()
            .await
            .unwrap();
        let keys: Vec<(String, String)> = table
            .table()
            .unwrap()
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(keys, spec.key_schema, "{}", spec.name);
    }
    let ttl = dynamo
        .describe_time_to_live()
        .table_name("riffle-local-view")
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    dynamo
        .describe_table()
        .table_name(CHECKPOINT_TABLE)
        .send()
        .await
        .unwrap();

    // The archive bucket and its lifecycle rule.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let bucket = deployment.bucket_name("ArchiveBucket").unwrap().to_owned();
    assert_eq!(
        Some(bucket.as_str()),
        deployment.export("riffle-local-ArchiveBucketName")
    );
    let lifecycle = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let rule = &lifecycle.rules()[0];
    let transitions: Vec<(i32, String)> = rule
        .transitions()
        .iter()
        .map(|t| {
            (
                t.days().unwrap(),
                t.storage_class().unwrap().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            (30, "STANDARD_IA".to_owned()),
            (90, "GLACIER_IR".to_owned())
        ]
    );
    assert_eq!(rule.expiration().and_then(|e| e.days()), Some(365));
    assert_eq!(
        rule.abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        Some(7)
    );
    // Objects can still be written with the encryption settings applied.
    s3.put_object()
        .bucket(&bucket)
        .key("events/probe")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();

    // Queues, with the template's retention.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for spec in &expected.queues {
        let url = deployment.queue_url(&spec.name).unwrap();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod)
            .send()
            .await
            .unwrap();
        assert_eq!(
            attrs
                .attributes()
                .unwrap()
                .get(&QueueAttributeName::MessageRetentionPeriod)
                .map(String::as_str),
            Some("1209600"),
            "{}",
            spec.name
        );
    }

    // Service environments: the registry URL exists only once the registry runs.
    let err = deployment.service_env("validator").unwrap_err();
    assert!(
        matches!(&err, LocalError::UnresolvedImport { import, .. } if import == REGISTRY_URL_EXPORT),
        "{err}"
    );
    assert!(matches!(
        deployment.service_env("nope"),
        Err(LocalError::UnknownService(_))
    ));
    deployment.set_export(REGISTRY_URL_EXPORT, "http://127.0.0.1:9/");

    let expected_vars: BTreeMap<&str, Vec<&str>> = [
        (
            "validator",
            vec![
                "MIMALLOC_ARENA_EAGER_COMMIT",
                "RIFFLE_CLAIMS_TABLE",
                "RIFFLE_ENV",
                "RIFFLE_OUTPUT_STREAM",
                "RIFFLE_REGISTRY_SIGV4",
                "RIFFLE_REGISTRY_URL",
                "RIFFLE_REJECTS_QUEUE_URL",
            ],
        ),
        (
            "enricher",
            vec![
                "MIMALLOC_ARENA_EAGER_COMMIT",
                "RIFFLE_CLAIMS_TABLE",
                "RIFFLE_DLQ_URL",
                "RIFFLE_ENV",
                "RIFFLE_OUTPUT_STREAM",
                "RIFFLE_REFERENCE_CACHE_TTL_SECS",
                "RIFFLE_REFERENCE_TABLE",
                "RIFFLE_REGISTRY_SIGV4",
                "RIFFLE_REGISTRY_URL",
            ],
        ),
        (
            "aggregator",
            vec![
                "MIMALLOC_ARENA_EAGER_COMMIT",
                "RIFFLE_CLAIMS_TABLE",
                "RIFFLE_DEDUP_WINDOW_HOURS",
                "RIFFLE_DLQ_URL",
                "RIFFLE_ENV",
                "RIFFLE_REGISTRY_SIGV4",
                "RIFFLE_REGISTRY_URL",
                "RIFFLE_VIEW_TABLE",
                "RIFFLE_VIEW_TTL_DAYS",
            ],
        ),
        (
            "archiver",
            vec![
                "MIMALLOC_ARENA_EAGER_COMMIT",
                "RIFFLE_ARCHIVE_BUCKET",
                "RIFFLE_ARCHIVE_PREFIX",
                "RIFFLE_CLAIMS_TABLE",
                "RIFFLE_DEDUP_WINDOW_HOURS",
                "RIFFLE_DLQ_URL",
                "RIFFLE_ENV",
                "RIFFLE_REGISTRY_SIGV4",
                "RIFFLE_REGISTRY_URL",
            ],
        ),
    ]
    .into();
    let sources = [
        (
            "validator",
            "riffle-local-raw",
            "riffle-local-validator-dlq",
        ),
        (
            "enricher",
            "riffle-local-validated",
            "riffle-local-enricher-dlq",
        ),
        (
            "aggregator",
            "riffle-local-enriched",
            "riffle-local-aggregator-dlq",
        ),
        (
            "archiver",
            "riffle-local-enriched",
            "riffle-local-archiver-dlq",
        ),
    ];
    for (service, stream, dlq) in sources {
        let env: BTreeMap<String, String> = deployment
            .service_env(service)
            .unwrap()
            .into_iter()
            .collect();
        let mut names: Vec<&str> = env
            .keys()
            .map(String::as_str)
            .filter(|k| *k != ESM_ENV)
            .collect();
        names.sort();
        assert_eq!(names, expected_vars[service], "{service}");
        assert!(env.values().all(|v| !v.is_empty()), "{service}: {env:?}");

        let esm: EsmSettings = serde_json::from_str(&env[ESM_ENV]).unwrap();
        assert_eq!(&esm, deployment.esm(service).unwrap());
        assert_eq!(esm.stream_name, stream);
        // The local event source mapping's checkpoints are keyed by this name: the local
        // environment's, never a deployed one's.
        assert_eq!(
            esm.function_name,
            format!("riffle-{}-{service}", riffle_plan::LOCAL_ENV)
        );
        assert_eq!(
            deployment.function_name(service),
            Some(esm.function_name.as_str())
        );
        assert_eq!(
            esm.on_failure_queue_url.as_deref(),
            deployment.queue_url(dlq)
        );
        assert_eq!(esm.checkpoint_table, CHECKPOINT_TABLE);
        assert_eq!(
            esm.starting_position,
            riffle_plan::model::StartingPosition::TrimHorizon
        );
        assert!(esm.report_batch_item_failures && esm.bisect_batch_on_function_error);
    }
    let validator: BTreeMap<String, String> = deployment
        .service_env("validator")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(validator["RIFFLE_OUTPUT_STREAM"], "riffle-local-validated");
    assert_eq!(
        Some(validator["RIFFLE_REJECTS_QUEUE_URL"].as_str()),
        deployment.queue_url("riffle-local-rejects")
    );
    assert_eq!(validator["RIFFLE_REGISTRY_URL"], "http://127.0.0.1:9/");
    // Passed through as on AWS: a local stage signing with the emulators' static credentials
    // is harmless, the local registry runs with auth `none` and ignores Authorization.
    assert_eq!(validator["RIFFLE_REGISTRY_SIGV4"], "1");
    let archiver: BTreeMap<String, String> = deployment
        .service_env("archiver")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(archiver["RIFFLE_ARCHIVE_BUCKET"], bucket);
    assert_eq!(archiver["RIFFLE_ARCHIVE_PREFIX"], "events");

    // The template's settings are IAM authorization (ADR 0015); the twin runs the registry
    // open instead, since no function URL authenticates anyone locally.
    let registry: BTreeMap<String, String> = deployment
        .service_env("schema-registry")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(registry["RIFFLE_REGISTRY_AUTH"], "iam");
    assert!(registry["RIFFLE_REGISTRY_SUBJECT_WRITERS"].contains("riffle-local-validator-Role-*"));
    let local =
        riffle_local::local_registry_env(deployment.service_env("schema-registry").unwrap());
    assert_eq!(
        local,
        [
            ("RIFFLE_ENV".to_owned(), riffle_plan::LOCAL_ENV.to_owned()),
            (
                "RIFFLE_REGISTRY_TABLE".to_owned(),
                "riffle-local-schemas".to_owned()
            ),
            ("RIFFLE_REGISTRY_AUTH".to_owned(), "none".to_owned())
        ]
    );
    assert!(deployment.esm("schema-registry").is_none());

    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
