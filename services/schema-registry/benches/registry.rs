//! How many registrations and lookups per second the registry serves over HTTP, with the
//! DynamoDB store on the local emulator (moto): the service as the stages meet it, loopback
//! and all, so the figures are bounded by moto, which serializes its backend calls. Writes
//! are bounded hardest: moto deep-copies every table a TransactWriteItems touches (to roll
//! back on failure), so each new version costs time in proportion to the table's size. The
//! write figures say how the local twin behaves, not what DynamoDB would do.
//!
//! `cargo bench -p riffle-schema-registry --bench registry`. Measured, each after a short
//! warm-up:
//! - registrations of new schemas under new subjects (id allocation, schema, fingerprint,
//!   version: the full write path);
//! - registrations of new versions of one subject at BACKWARD (the compatibility check
//!   against the latest version included);
//! - `GET /schemas/ids/{id}` (how stages resolve a writer schema) and
//!   `POST /subjects/{subject}` (lookup), from one caller and from [`CALLERS`] at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use riffle_local::Emulators;
use riffle_schema_registry::{CompatibilityLevel, DynamoStore, Registry, router};
use serde_json::json;

/// Registrations timed per kind.
const REGISTRATIONS: usize = 200;
/// Lookups timed per kind and concurrency.
const LOOKUPS: usize = 1_000;
/// Concurrent callers in the concurrent lookup runs.
const CALLERS: usize = 8;
/// Untimed requests before each figure.
const WARM_UP: usize = 20;
const CT: &str = "application/vnd.schemaregistry.v1+json";
const TABLE: &str = "bench-schemas";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn schema(name: &str, extra_fields: usize) -> String {
    let mut fields = vec![json!({"name": "id", "type": "long"})];
    for i in 0..extra_fields {
        fields.push(json!({"name": format!("f{i}"), "type": ["null", "string"], "default": null}));
    }
    json!({"type": "record", "name": name, "namespace": "bench", "fields": fields}).to_string()
}

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    async fn register(&self, subject: &str, text: &str) -> u64 {
        let reply: serde_json::Value = self
            .http
            .post(format!("{}/subjects/{subject}/versions", self.base))
            .header("content-type", CT)
            .body(json!({ "schema": text }).to_string())
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["id"].as_u64().unwrap()
    }

    async fn by_id(&self, id: u64) {
        self.http
            .get(format!("{}/schemas/ids/{id}", self.base))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }

    async fn lookup(&self, subject: &str, text: &str) {
        self.http
            .post(format!("{}/subjects/{subject}", self.base))
            .header("content-type", CT)
            .body(json!({ "schema": text }).to_string())
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
}

fn report(what: &str, count: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what:<58} {count:>5} in {secs:>6.2} s = {:>7.1}/s ({:.2} ms each)",
        count as f64 / secs,
        secs * 1e3 / count as f64
    );
}

/// Runs `count` calls of `f(i)` spread over `callers` tasks and returns the wall time.
async fn concurrently<F, Fut>(callers: usize, count: usize, f: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                for i in (caller..count).step_by(callers) {
                    f(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

async fn run() {
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-bench");
    let emulators = Emulators::start(&state).await.unwrap();
    let client = Client::new(&emulators.sdk_config().await);
    create_table(&client).await;
    let app = router(Registry::with_default_level(
        DynamoStore::new(client.clone(), TABLE),
        CompatibilityLevel::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = Arc::new(Http {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    });
    println!(
        "registry bench: HTTP on {addr}, DynamoDB on moto ({}), {} cores, load average {}",
        emulators.moto_endpoint(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    // New subjects, new schemas: the whole write path.
    for i in 0..WARM_UP {
        http.register(&format!("warm-{i}"), &schema(&format!("Warm{i}"), 0))
            .await;
    }
    let start = Instant::now();
    let mut ids = Vec::with_capacity(REGISTRATIONS);
    for i in 0..REGISTRATIONS {
        ids.push(
            http.register(&format!("subject-{i}"), &schema(&format!("S{i}"), 0))
                .await,
        );
    }
    report(
        "register: new schema, new subject",
        REGISTRATIONS,
        start.elapsed(),
    );

    // One subject evolving at BACKWARD: each version adds an optional field.
    let start = Instant::now();
    for v in 0..REGISTRATIONS {
        http.register("evolving", &schema("Evolving", v)).await;
    }
    report(
        "register: new version of one subject (BACKWARD check)",
        REGISTRATIONS,
        start.elapsed(),
    );

    // Re-registering what is there: the idempotent start-up call of every stage.
    let start = Instant::now();
    for i in 0..REGISTRATIONS {
        http.register(&format!("subject-{i}"), &schema(&format!("S{i}"), 0))
            .await;
    }
    report(
        "register: schema already in the subject",
        REGISTRATIONS,
        start.elapsed(),
    );

    let ids = Arc::new(ids);
    for callers in [1, CALLERS] {
        let (h, i) = (Arc::clone(&http), Arc::clone(&ids));
        concurrently(callers, WARM_UP, move |n| {
            let (h, i) = (Arc::clone(&h), Arc::clone(&i));
            async move { h.by_id(i[n % i.len()]).await }
        })
        .await;
        let (h, i) = (Arc::clone(&http), Arc::clone(&ids));
        let elapsed = concurrently(callers, LOOKUPS, move |n| {
            let (h, i) = (Arc::clone(&h), Arc::clone(&i));
            async move { h.by_id(i[n % i.len()]).await }
        })
        .await;
        report(
            &format!("GET /schemas/ids/{{id}}, {callers} caller(s)"),
            LOOKUPS,
            elapsed,
        );

        let h = Arc::clone(&http);
        let elapsed = concurrently(callers, LOOKUPS, move |n| {
            let h = Arc::clone(&h);
            async move {
                let i = n % REGISTRATIONS;
                h.lookup(&format!("subject-{i}"), &schema(&format!("S{i}"), 0))
                    .await
            }
        })
        .await;
        report(
            &format!("POST /subjects/{{subject}} (lookup), {callers} caller(s)"),
            LOOKUPS,
            elapsed,
        );
    }
    emulators.shutdown().await;
}

/// The 1-minute load average: the machine is shared, and figures taken under load say so.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

async fn create_table(client: &Client) {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .unwrap();
}
