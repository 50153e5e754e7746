//! The DynamoDB store and the binary against the local emulators (moto), through the real SDK.
//!
//! One emulator process serves every scenario (moto takes seconds to start); each scenario
//! gets its own table, so they cannot see each other's items.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use riffle_local::Emulators;
use riffle_schema_registry::{DynamoStore, Error, Registered, Registry, SchemaStore, VersionSpec};
use tokio::io::{AsyncBufReadExt, BufReader};

const CONCURRENCY: usize = 8;

fn schema(name: &str) -> String {
    format!(
        r#"{{"type":"record","name":"{name}","namespace":"riffle","fields":[{{"name":"id","type":"long"}}]}}"#
    )
}

async fn create_table(client: &Client, name: &str) {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// How many `ID#<id>/SCHEMA` items the table holds: ids that lost a race must not linger.
async fn schema_items(client: &Client, table: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .filter_expression("sk = :sk")
            .expression_attribute_values(":sk", AttributeValue::S("SCHEMA".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        count += out.items().len();
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return count,
        }
    }
}

async fn registry(client: &Client, table: &str) -> Arc<Registry<DynamoStore>> {
    create_table(client, table).await;
    Arc::new(Registry::new(DynamoStore::new(client.clone(), table)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_store_against_moto() {
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-dynamo");
    let emulators = Emulators::start(&state).await.unwrap();
    let client = Client::new(&emulators.sdk_config().await);

    operations(&client).await;
    same_schema_same_subject_concurrently(&client).await;
    same_schema_many_subjects_concurrently(&client).await;
    many_schemas_one_subject_concurrently(&client).await;
    missing_table_is_a_store_error(&client).await;
    binary_serves_from_dynamo(&emulators, &client).await;

    emulators.shutdown().await;
}

async fn operations(client: &Client) {
    let reg = registry(client, "ops").await;
    let (a, b) = (schema("A"), schema("B"));
    assert!(reg.subjects(false).await.unwrap().is_empty());
    assert_eq!(
        reg.register("s1", &a, None).await.unwrap(),
        Registered { id: 1, version: 1 }
    );
    assert_eq!(
        reg.register("s1", &a, Some("AVRO")).await.unwrap(),
        Registered { id: 1, version: 1 }
    );
    assert_eq!(
        reg.register("s1", &b, None).await.unwrap(),
        Registered { id: 2, version: 2 }
    );
    assert_eq!(
        reg.register("s2", &a, None).await.unwrap(),
        Registered { id: 1, version: 1 }
    );
    // Subject names with the key separator in them stay apart from their neighbours.
    assert_eq!(
        reg.register("s1#V#0000000001", &b, None).await.unwrap(),
        Registered { id: 2, version: 1 }
    );

    assert_eq!(
        reg.subjects(false).await.unwrap(),
        vec!["s1", "s1#V#0000000001", "s2"]
    );
    assert_eq!(reg.versions("s1", false).await.unwrap(), vec![1, 2]);
    assert!(matches!(
        reg.versions("nope", false).await,
        Err(Error::SubjectNotFound(_))
    ));
    let latest = reg.version("s1", VersionSpec::Latest, false).await.unwrap();
    assert_eq!(
        (latest.id, latest.version, latest.schema.as_str()),
        (2, 2, b.as_str())
    );
    let first = reg
        .version("s1", VersionSpec::Number(1), false)
        .await
        .unwrap();
    assert_eq!((first.id, first.schema.as_str()), (1, a.as_str()));
    assert!(matches!(
        reg.version("s1", VersionSpec::Number(3), false).await,
        Err(Error::VersionNotFound { version: 3, .. })
    ));
    assert!(matches!(
        reg.version("nope", VersionSpec::Latest, false).await,
        Err(Error::SubjectNotFound(_))
    ));

    let found = reg.lookup("s1", &b, None, false).await.unwrap();
    assert_eq!((found.id, found.version), (2, 2));
    assert!(matches!(
        reg.lookup("s2", &b, None, false).await,
        Err(Error::SchemaNotFound)
    ));
    assert!(matches!(
        reg.lookup("nope", &b, None, false).await,
        Err(Error::SubjectNotFound(_))
    ));

    assert_eq!(reg.schema_by_id(2).await.unwrap().schema, b);
    assert!(matches!(
        reg.schema_by_id(99).await,
        Err(Error::SchemaIdNotFound(99))
    ));
    assert_eq!(
        reg.usages(1, false).await.unwrap(),
        vec![("s1".to_owned(), 1), ("s2".to_owned(), 1)]
    );
    assert_eq!(
        reg.usages(2, false).await.unwrap(),
        vec![("s1".to_owned(), 2), ("s1#V#0000000001".to_owned(), 1)]
    );
    assert_eq!(schema_items(client, "ops").await, 2);
}

async fn race<F, Fut>(f: F) -> Vec<Registered>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Registered, Error>> + Send + 'static,
{
    let tasks: Vec<_> = (0..CONCURRENCY).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap().unwrap());
    }
    out
}

async fn same_schema_same_subject_concurrently(client: &Client) {
    let reg = registry(client, "race-one").await;
    let text = schema("Raced");
    let results = race(|_| {
        let (reg, text) = (Arc::clone(&reg), text.clone());
        async move { reg.register("raced", &text, None).await }
    })
    .await;
    let ids: BTreeSet<u32> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.version == 1), "{results:?}");
    assert_eq!(reg.versions("raced", false).await.unwrap(), vec![1]);
    assert_eq!(schema_items(client, "race-one").await, 1);
}

async fn same_schema_many_subjects_concurrently(client: &Client) {
    let reg = registry(client, "race-subjects").await;
    let text = schema("Shared");
    let results = race(|i| {
        let (reg, text) = (Arc::clone(&reg), text.clone());
        async move { reg.register(&format!("subject-{i}"), &text, None).await }
    })
    .await;
    let ids: BTreeSet<u32> = results.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    let id = results[0].id;
    assert_eq!(reg.usages(id, false).await.unwrap().len(), CONCURRENCY);
    assert_eq!(schema_items(client, "race-subjects").await, 1);
    assert_eq!(
        reg.store().id_by_fingerprint("unknown").await.unwrap(),
        None
    );
}

async fn many_schemas_one_subject_concurrently(client: &Client) {
    let reg = registry(client, "race-versions").await;
    let results = race(|i| {
        let reg = Arc::clone(&reg);
        async move { reg.register("busy", &schema(&format!("S{i}")), None).await }
    })
    .await;
    let versions: BTreeSet<u32> = results.iter().map(|r| r.version).collect();
    let ids: BTreeSet<u32> = results.iter().map(|r| r.id).collect();
    let expected: BTreeSet<u32> = (1..=CONCURRENCY as u32).collect();
    assert_eq!(versions, expected, "{results:?}");
    assert_eq!(ids.len(), CONCURRENCY, "{results:?}");
    assert_eq!(
        reg.versions("busy", false).await.unwrap(),
        expected.into_iter().collect::<Vec<_>>()
    );
    for r in &results {
        let v = reg
            .version("busy", VersionSpec::Number(r.version), false)
            .await
            .unwrap();
        assert_eq!(v.id, r.id);
    }
}

async fn missing_table_is_a_store_error(client: &Client) {
    let reg = Registry::new(DynamoStore::new(client.clone(), "no-such-table"));
    match reg.schema_by_id(1).await {
        Err(e @ Error::Store { .. }) => assert!(!e.retryable(), "{e}"),
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// The binary as the local orchestrator runs it: LISTENING line, serving, exit on stdin EOF.
async fn binary_serves_from_dynamo(emulators: &Emulators, client: &Client) {
    create_table(client, "binary").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_schema-registry"))
        .envs(emulators.env())
        .env("RIFFLE_REGISTRY_TABLE", "binary")
        .env("RIFFLE_EXIT_ON_STDIN_EOF", "1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("RIFFLE_REGISTRY_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("no LISTENING line in time")
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let http = reqwest::Client::new();
    let text = schema("FromBinary");
    let reply: serde_json::Value = http
        .post(format!("{base}/subjects/bin-value/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": text }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = reply["id"].as_u64().unwrap();
    let fetched: serde_json::Value = http
        .get(format!("{base}/schemas/ids/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["schema"], text);

    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the registry did not exit after stdin closed")
        .unwrap();
    assert!(status.success(), "{status}");
}
