//! The validator wired as its binary wires it: schemas registered with a real registry server
//! (in-memory store) on loopback, the envelope id learned by registering, payload schemas
//! fetched through the registry client; and the same client pointed at a closed port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use riffle_codec::SchemaCache;
use riffle_loadtest::{Expected, Generator, GeneratorConfig, SchemaIds, Source};
use riffle_registry_client::RegistryClient;
use riffle_schema_registry::{MemoryStore, Registry, router};
use riffle_validator::Validator;
use riffle_validator::verdict::now_ms;

/// Serves a fresh registry on a free loopback port; returns its base URL.
async fn registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(Registry::new(MemoryStore::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A base URL nothing listens on: bound once to get a free port, then released.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn validates_against_a_real_registry() {
    let client = RegistryClient::new(&registry().await).unwrap();
    let envelopes = client.envelope_codec(Duration::from_secs(5)).await.unwrap();
    let register = async |source: Source, schema: &str| {
        let contract = riffle_stage::testing::bundled_contract_of(schema);
        client
            .register_with(source.subject(), schema, &contract)
            .await
            .unwrap()
    };
    let ids = SchemaIds {
        envelope: envelopes.id(),
        order: register(Source::ShopWeb, ORDER_SCHEMA).await,
        page_view: register(Source::Web, PAGE_VIEW_SCHEMA).await,
        sensor: register(Source::IotGateway, SENSOR_SCHEMA).await,
    };
    let events = Generator::new(GeneratorConfig::default(), ids)
        .unwrap()
        .batch(1_000)
        .unwrap();
    let reader = client.envelope_codec(Duration::from_secs(5)).await.unwrap();

    let (output, rejects) = (Sink::new(), Sink::new());
    let validator = Validator::new(
        envelopes,
        SchemaCache::new(client.clone()),
        output.clone(),
        rejects.clone(),
        riffle_stage::marks::Marks::new(
            riffle_stage::marks::MemoryMarks::default(),
            riffle_stage::marks::DEFAULT_MARK_WINDOW,
        ),
    );
    let started = now_ms();
    let response = validator.handle(kinesis_event(&events)).await.unwrap();
    let handled = (started, now_ms());
    assert!(response.batch_item_failures.is_empty());
    let rejected = reject_messages(&rejects.take());
    assert_outcomes(&events, &reader, &output.take(), &rejected, handled);
}

#[tokio::test]
async fn an_unreachable_registry_means_retry() {
    let envelopes = RegistryClient::new(&registry().await)
        .unwrap()
        .envelope_codec(Duration::from_secs(5))
        .await
        .unwrap();
    let ids = SchemaIds {
        envelope: envelopes.id(),
        ..IDS
    };
    let events = Generator::new(GeneratorConfig::default(), ids)
        .unwrap()
        .batch(500)
        .unwrap();
    let down = RegistryClient::with_timeouts(
        &closed_port().await,
        Duration::from_secs(1),
        Duration::from_secs(2),
    )
    .unwrap();
    let (output, rejects) = (Sink::new(), Sink::new());
    let validator = Validator::new(
        envelopes,
        SchemaCache::new(down),
        output.clone(),
        rejects.clone(),
        riffle_stage::marks::Marks::new(
            riffle_stage::marks::MemoryMarks::default(),
            riffle_stage::marks::DEFAULT_MARK_WINDOW,
        ),
    );
    let response = validator.handle(kinesis_event(&events)).await.unwrap();
    let retried: HashSet<String> = failed(&response).into_iter().collect();
    assert!(output.take().is_empty());
    for (i, event) in events.iter().enumerate() {
        if matches!(event.expected, Expected::Valid { .. }) {
            assert!(retried.contains(&sequence_number(i)), "valid event {i}");
        }
    }
    let rejected = reject_messages(&rejects.take());
    assert!(
        rejected
            .iter()
            .all(|m| !["unknown_schema", "registry_unavailable"].contains(&m.code.as_str())),
        "{rejected:?}"
    );
    assert_eq!(retried.len() + rejected.len(), events.len());
}
