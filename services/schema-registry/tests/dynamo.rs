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
use reqwest::StatusCode;
use riffle_local::Emulators;
use riffle_schema_registry::{
    CompatibilityLevel, DynamoStore, Error, Registered, Registry, SchemaStore, VersionSpec, router,
};
use serde_json::{Value, json};
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
    contracts_are_stored_with_their_versions(&client).await;
    same_schema_same_subject_concurrently(&client).await;
    same_schema_many_subjects_concurrently(&client).await;
    many_schemas_one_subject_concurrently(&client).await;
    missing_table_is_a_store_error(&client).await;
    binary_serves_from_dynamo(&emulators, &client).await;
    compatibility_config_and_deletes_over_http(&client).await;
    concurrent_deletes_of_one_version(&client).await;
    listing_items_without_counters(&client).await;
    binary_requires_a_token_when_configured(&emulators, &client).await;

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

    let found = reg
        .lookup("s1", &b, None, &Default::default(), false)
        .await
        .unwrap();
    assert_eq!((found.id, found.version), (2, 2));
    assert!(matches!(
        reg.lookup("s2", &b, None, &Default::default(), false).await,
        Err(Error::SchemaNotFound)
    ));
    assert!(matches!(
        reg.lookup("nope", &b, None, &Default::default(), false)
            .await,
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

/// The contract fields go into the schema and version items and come back from both; an
/// item without them (everything written before contracts) reads as having none.
async fn contracts_are_stored_with_their_versions(client: &Client) {
    use riffle_codec::registered::DataContract;
    let reg = registry(client, "contracts").await;
    let text = r#"{"type":"record","name":"Reading","namespace":"riffle","fields":[{"name":"v","type":"double"}]}"#;
    let rules = r#"{"subject":"riffle.Reading","schema":"events/reading.avsc",
        "fields":{"v":{"min":0,"max":100}},
        "enrich":{"agg_key":"readings","metric":{"product":["v"]},"window_secs":300}}"#;
    let contract = DataContract::from_file("reading.json", rules)
        .unwrap()
        .fields;
    let bare = reg.register("bare", text, None).await.unwrap();
    let with = reg
        .register_with("riffle.Reading", text, None, &contract)
        .await
        .unwrap();
    assert_ne!(
        bare.id, with.id,
        "the contract is part of what is registered"
    );
    assert_eq!(reg.schema_by_id(with.id).await.unwrap().contract, contract);
    assert!(reg.schema_by_id(bare.id).await.unwrap().contract.is_empty());
    let version = reg
        .version("riffle.Reading", VersionSpec::Latest, false)
        .await
        .unwrap();
    assert_eq!(version.contract, contract);
    // Registered again without it: the latest version's is carried forward.
    assert_eq!(
        reg.register("riffle.Reading", text, None).await.unwrap(),
        with
    );
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

/// The router over a DynamoDB table at the service's default level, on a loopback port.
async fn serve(client: &Client, table: &str) -> Http {
    create_table(client, table).await;
    let store = DynamoStore::new(client.clone(), table);
    let app = router(Registry::with_default_level(
        store,
        CompatibilityLevel::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Http {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        token: None,
    }
}

struct Http {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string());
        }
        let resp = request.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )
        .await
    }
}

fn code(reply: &(StatusCode, Value)) -> u64 {
    reply.1["error_code"].as_u64().unwrap_or_default()
}

fn user(fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"User","namespace":"riffle","fields":[{{"name":"id","type":"long"}}{fields}]}}"#
    )
}

/// Levels, compatibility and deletion state kept in DynamoDB, through the API.
async fn compatibility_config_and_deletes_over_http(client: &Client) {
    let s = serve(client, "lifecycle").await;
    let v1 = user("");
    let v2 = user(r#",{"name":"email","type":["null","string"],"default":null}"#);
    let breaking = user(r#",{"name":"age","type":"int"}"#);
    assert_eq!(
        s.register("u", &v1).await,
        (StatusCode::OK, json!({"id": 1}))
    );
    assert_eq!(
        s.register("u", &v2).await,
        (StatusCode::OK, json!({"id": 2}))
    );
    // BACKWARD by default; the refused schema takes no id.
    let refused = s.register("u", &breaking).await;
    assert_eq!(
        (refused.0, code(&refused)),
        (StatusCode::CONFLICT, 409),
        "{refused:?}"
    );
    assert_eq!(schema_items(client, "lifecycle").await, 2);

    // Levels: global and per subject, stored.
    assert_eq!(
        s.get("/config").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(code(&s.get("/config/u").await), 40408);
    s.put("/config", json!({"compatibility": "FULL"})).await;
    assert_eq!(
        s.get("/config/u?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    s.put("/config/u", json!({"compatibility": "NONE"})).await;
    assert_eq!(
        s.get("/config/u").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        s.register("u", &breaking).await,
        (StatusCode::OK, json!({"id": 3}))
    );
    assert_eq!(
        s.delete("/config/u").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(code(&s.delete("/config/u").await), 40408);
    assert_eq!(
        s.get("/config").await.1,
        json!({"compatibilityLevel": "FULL"})
    );

    // Soft delete: hidden from listings, readable by id, the schema free to come back.
    s.register("other", &v1).await;
    assert_eq!(
        s.delete("/subjects/u/versions/2").await,
        (StatusCode::OK, json!(2))
    );
    assert_eq!(code(&s.delete("/subjects/u/versions/2").await), 40406);
    assert_eq!(
        code(&s.delete("/subjects/u/versions/1?permanent=true").await),
        40407
    );
    assert_eq!(s.get("/subjects/u/versions").await.1, json!([1, 3]));
    assert_eq!(
        s.get("/subjects/u/versions?deleted=true").await.1,
        json!([1, 2, 3])
    );
    assert_eq!(s.get("/schemas/ids/2").await.1["schema"], v2.as_str());
    assert_eq!(s.get("/schemas/ids/2/versions").await.1, json!([]));
    assert_eq!(
        s.get("/schemas/ids/2/versions?deleted=true").await.1,
        json!([{"subject": "u", "version": 2}])
    );
    s.put("/config/u", json!({"compatibility": "NONE"})).await;
    assert_eq!(
        s.register("u", &v2).await,
        (StatusCode::OK, json!({"id": 2}))
    );
    assert_eq!(s.get("/subjects/u/versions").await.1, json!([1, 3, 4]));
    assert_eq!(s.get("/subjects/u/versions/latest").await.1["version"], 4);

    // The subject: soft, then permanent; the listing follows.
    assert_eq!(code(&s.delete("/subjects/u?permanent=true").await), 40405);
    assert_eq!(
        s.delete("/subjects/u").await,
        (StatusCode::OK, json!([1, 3, 4]))
    );
    assert_eq!(code(&s.delete("/subjects/u").await), 40404);
    assert_eq!(s.get("/subjects").await.1, json!(["other"]));
    assert_eq!(
        s.get("/subjects?deleted=true").await.1,
        json!(["other", "u"])
    );
    assert_eq!(
        s.delete("/subjects/u?permanent=true").await,
        (StatusCode::OK, json!([1, 2, 3, 4]))
    );
    assert_eq!(s.get("/subjects?deleted=true").await.1, json!(["other"]));
    assert_eq!(
        code(&s.get("/subjects/u/versions?deleted=true").await),
        40401
    );
    assert_eq!(code(&s.get("/config/u").await), 40408);
    // Gone from the subject, not from the ids.
    assert_eq!(s.get("/schemas/ids/3").await.1["schema"], breaking.as_str());
    assert_eq!(
        s.get("/schemas/ids/1/versions").await.1,
        json!([{"subject": "other", "version": 1}])
    );
    assert_eq!(
        s.register("u", &v2).await,
        (StatusCode::OK, json!({"id": 2}))
    );
    assert_eq!(s.get("/subjects").await.1, json!(["other", "u"]));
}

/// Eight callers soft delete one version at once: exactly one wins.
async fn concurrent_deletes_of_one_version(client: &Client) {
    let s = Arc::new(serve(client, "delete-race").await);
    s.register("r", &user("")).await;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.delete("/subjects/r/versions/1").await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        outcomes.push((reply.0, code(&reply)));
    }
    let won = outcomes.iter().filter(|o| o.0 == StatusCode::OK).count();
    assert_eq!(won, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| o.0 == StatusCode::OK || o.1 == 40406),
        "{outcomes:?}"
    );
    // The live counter went down once: the subject is listed as deleted, not as negative.
    assert_eq!(s.get("/subjects").await.1, json!([]));
    assert_eq!(s.get("/subjects?deleted=true").await.1, json!(["r"]));
}

/// A table written before the listing had counters still lists its subjects.
async fn listing_items_without_counters(client: &Client) {
    let s = serve(client, "legacy").await;
    let put = |pairs: Vec<(&str, AttributeValue)>| {
        client
            .put_item()
            .table_name("legacy")
            .set_item(Some(
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
    };
    let text = user("");
    put(vec![
        ("pk", AttributeValue::S("SUBJECTS".into())),
        ("sk", AttributeValue::S("old".into())),
        ("subject", AttributeValue::S("old".into())),
    ])
    .await
    .unwrap();
    put(vec![
        ("pk", AttributeValue::S("SUBJECT#old".into())),
        ("sk", AttributeValue::S("V#0000000001".into())),
        ("subject", AttributeValue::S("old".into())),
        ("version", AttributeValue::N("1".into())),
        ("id", AttributeValue::N("1".into())),
        ("schema", AttributeValue::S(text.clone())),
        ("fp", AttributeValue::S("legacy".into())),
    ])
    .await
    .unwrap();
    assert_eq!(s.get("/subjects").await.1, json!(["old"]));
    assert_eq!(
        s.get("/subjects/old/versions/latest").await.1["schema"],
        text.as_str()
    );
}

/// The binary reads its auth settings from the environment.
async fn binary_requires_a_token_when_configured(emulators: &Emulators, client: &Client) {
    create_table(client, "binary-auth").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_schema-registry"))
        .envs(emulators.env())
        .env("RIFFLE_REGISTRY_TABLE", "binary-auth")
        .env("RIFFLE_EXIT_ON_STDIN_EOF", "1")
        .env("RIFFLE_REGISTRY_AUTH", "bearer")
        .env("RIFFLE_REGISTRY_TOKENS", "writer-token")
        .env("RIFFLE_REGISTRY_OPEN_READS", "1")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("RIFFLE_REGISTRY_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("no LISTENING line in time")
        .unwrap()
        .unwrap();
    let base = line.strip_prefix("LISTENING ").unwrap().to_owned();
    let mut s = Http {
        base,
        http: reqwest::Client::new(),
        token: None,
    };
    let text = user("");
    let refused = s.register("b", &text).await;
    assert_eq!(
        (refused.0, code(&refused)),
        (StatusCode::UNAUTHORIZED, 40101)
    );
    assert_eq!(s.get("/subjects").await, (StatusCode::OK, json!([])));
    s.token = Some("writer-token".into());
    assert_eq!(
        s.register("b", &text).await,
        (StatusCode::OK, json!({"id": 1}))
    );
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the registry did not exit after stdin closed")
        .unwrap();
    assert!(status.success(), "{status}");
}
