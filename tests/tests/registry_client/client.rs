//! The client against the real registry server (in-memory store) on loopback, and against
//! servers that fail in the ways a registry can: refused, 5xx, hung, not a registry at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use riffle_codec::source::{SchemaSource, SourceError};
use riffle_registry_client::{ClientError, RegistryClient, SUBJECT_NOT_FOUND, SubjectVersion};
use riffle_schema_registry::{MemoryStore, Registry, router};

const USER: &str = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"id","type":"long"}]}"#;
const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"riffle","fields":[{"name":"total","type":"double"}]}"#;

/// Serves `app` on a free loopback port and returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn registry() -> String {
    serve(router(Registry::new(MemoryStore::new()))).await
}

#[tokio::test]
async fn register_fetch_and_latest() {
    let client = RegistryClient::new(&registry().await).unwrap();
    let id = client.register("users-value", USER).await.unwrap();
    assert_eq!(client.register("users-value", USER).await.unwrap(), id);
    assert_eq!(
        client.register("archive/users value", USER).await.unwrap(),
        id
    );
    let order = client.register("users-value", ORDER).await.unwrap();
    assert_ne!(order, id);

    assert_eq!(client.schema_by_id(id).await.unwrap(), USER);
    assert_eq!(client.fetch_schema(order).await.unwrap(), ORDER.into());
    assert_eq!(
        client.latest("users-value").await.unwrap(),
        SubjectVersion {
            subject: "users-value".into(),
            id: order,
            version: 2,
            schema: ORDER.into(),
            contract: Default::default(),
        }
    );
    assert_eq!(client.latest("archive/users value").await.unwrap().id, id);
}

#[tokio::test]
async fn registry_refusals_are_final() {
    let client = RegistryClient::new(&registry().await).unwrap();
    match client.fetch_schema(4242).await {
        Err(e @ SourceError::NotFound(4242)) => assert!(!e.retryable()),
        other => panic!("{other:?}"),
    }
    let invalid = client
        .register("s", "{\"type\":\"nope\"}")
        .await
        .unwrap_err();
    assert_eq!(invalid.error_code(), Some(42201), "{invalid}");
    assert!(!invalid.retryable());
    let unknown = client.latest("nobody").await.unwrap_err();
    assert_eq!(unknown.error_code(), Some(SUBJECT_NOT_FOUND), "{unknown}");
}

#[tokio::test]
async fn base_url_with_a_path_prefix() {
    let base =
        serve(Router::new().nest("/registry", router(Registry::new(MemoryStore::new())))).await;
    let client = RegistryClient::new(&format!("{base}/registry")).unwrap();
    let id = client.register("s", USER).await.unwrap();
    assert_eq!(client.fetch_schema(id).await.unwrap(), USER.into());
}

fn assert_unavailable(result: Result<riffle_codec::source::Fetched, SourceError>) {
    match result {
        Err(e @ SourceError::Unavailable(_)) => assert!(e.retryable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_connection_is_unavailable() {
    // A port that was just free: nothing listens on it once the listener is dropped.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = RegistryClient::new(&format!("http://{addr}")).unwrap();
    let err = client.schema_by_id(1).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
    assert!(err.retryable());
    assert_unavailable(client.fetch_schema(1).await);
}

#[tokio::test]
async fn server_errors_are_unavailable() {
    let app = Router::new().route(
        "/schemas/ids/{id}",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    );
    let client = RegistryClient::new(&serve(app).await).unwrap();
    let err = client.schema_by_id(1).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 500, .. }), "{err}");
    assert!(err.retryable());
    assert_unavailable(client.fetch_schema(1).await);
}

#[tokio::test]
async fn a_bare_404_is_not_a_missing_schema() {
    // A wrong base URL or a proxy answers 404 without the registry's error code.
    let client = RegistryClient::new(&serve(Router::new()).await).unwrap();
    assert_unavailable(client.fetch_schema(1).await);
}

#[tokio::test]
async fn garbage_success_is_unavailable() {
    let app = Router::new().route("/schemas/ids/{id}", get(|| async { "<html>hi</html>" }));
    let client = RegistryClient::new(&serve(app).await).unwrap();
    assert!(matches!(
        client.schema_by_id(1).await,
        Err(ClientError::Decode(_))
    ));
    assert_unavailable(client.fetch_schema(1).await);
}

#[tokio::test]
async fn hung_registry_times_out() {
    let app = Router::new().route(
        "/schemas/ids/{id}",
        get(std::future::pending::<&'static str>),
    );
    let client = RegistryClient::with_timeouts(
        &serve(app).await,
        Duration::from_secs(2),
        Duration::from_millis(300),
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert_unavailable(client.fetch_schema(1).await);
    assert!(started.elapsed() < Duration::from_secs(5));
}

const ORDER_PLACED: &str = include_str!("../../../schemas/events/order_placed.avsc");
const ORDER_RULES: &str = include_str!("../../../schemas/rules/com.riffle.shop.OrderPlaced.json");

/// A subject's contract travels with its schema (ADR 0020): registered as Confluent's
/// `metadata` and `ruleSet`, served back by id to the stages, carried forward when a client
/// registers the bare schema, and held to the compatibility gate.
#[tokio::test]
async fn contracts_travel_with_their_schemas() {
    use riffle_codec::CompiledSchema;
    use riffle_codec::registered::DataContract;
    use riffle_registry_client::CompatibilityLevel;

    let base = serve(router(Registry::with_default_level(
        MemoryStore::new(),
        CompatibilityLevel::Backward,
    )))
    .await;
    let client = RegistryClient::new(&base).unwrap();
    let rules = DataContract::from_file("OrderPlaced.json", ORDER_RULES).unwrap();
    let subject = rules.subject.as_str();
    let id = client
        .register_with(subject, ORDER_PLACED, &rules.fields)
        .await
        .unwrap();

    let fetched = client.fetch_schema(id).await.unwrap();
    assert_eq!(fetched.contract, rules.fields);
    let compiled = CompiledSchema::parse_registered(id, &fetched).unwrap();
    let contract = compiled
        .contract()
        .expect("the contract came with the schema");
    assert_eq!(contract.subject, subject);
    assert_eq!(contract.fields.len(), 7);
    assert_eq!(contract.enrich.as_ref().unwrap().window_secs, 60);

    // A client that knows nothing of contracts registers the bare schema: same version.
    assert_eq!(client.register(subject, ORDER_PLACED).await.unwrap(), id);
    let found = client.lookup(subject, ORDER_PLACED).await.unwrap();
    assert_eq!((found.id, found.version), (id, 1));
    assert_eq!(found.contract, rules.fields);
    assert_eq!(client.latest(subject).await.unwrap().contract, rules.fields);

    // A tighter rule would reject events version 1 accepts: refused, and says which.
    let tighter = DataContract::from_file(
        "tighter.json",
        &ORDER_RULES.replace(r#""max": 100"#, r#""max": 50"#),
    )
    .unwrap();
    let err = client
        .register_with(subject, ORDER_PLACED, &tighter.fields)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(
        err.message()
            .unwrap()
            .contains("field quantity: max lowered to 50"),
        "{err}"
    );
    let verdict = client
        .check_compatibility(
            subject,
            ORDER_PLACED,
            riffle_registry_client::VersionRef::Latest,
        )
        .await
        .unwrap();
    assert!(
        verdict.is_compatible,
        "the bare schema inherits: {verdict:?}"
    );

    // A looser one is a new version with its own id.
    let looser = DataContract::from_file(
        "looser.json",
        &ORDER_RULES.replace(r#""max": 100"#, r#""max": 500"#),
    )
    .unwrap();
    let id2 = client
        .register_with(subject, ORDER_PLACED, &looser.fields)
        .await
        .unwrap();
    assert_ne!(id2, id);
    assert_eq!(client.latest(subject).await.unwrap().version, 2);
    assert_eq!(
        client.fetch_schema(id2).await.unwrap().contract,
        looser.fields
    );
    // The first version keeps its contract: records written with id 1 are judged by it.
    assert_eq!(
        client.fetch_schema(id).await.unwrap().contract,
        rules.fields
    );

    // A bare request names the latest version holding its schema, not whatever contract is
    // latest: after a version with another schema and contract, the old schema still finds
    // version 2, and registering it bare adds nothing.
    let noted = with_optional_field(ORDER_PLACED, "note");
    let loosest = DataContract::from_file(
        "loosest.json",
        &ORDER_RULES.replace(r#""max": 100"#, r#""max": 800"#),
    )
    .unwrap();
    let id3 = client
        .register_with(subject, &noted, &loosest.fields)
        .await
        .unwrap();
    let found = client.lookup(subject, ORDER_PLACED).await.unwrap();
    assert_eq!((found.id, found.version), (id2, 2));
    assert_eq!(client.register(subject, ORDER_PLACED).await.unwrap(), id2);
    assert_eq!(client.versions(subject).await.unwrap(), vec![1, 2, 3]);
    // Fields are carried forward one by one: metadata sent alone keeps the latest rules.
    let metadata_only = DataContract {
        metadata: loosest.fields.metadata.clone(),
        rule_set: None,
    };
    let id4 = client
        .register_with(
            subject,
            &with_optional_field(&noted, "note2"),
            &metadata_only,
        )
        .await
        .unwrap();
    assert_ne!(id4, id3);
    assert_eq!(
        client.fetch_schema(id4).await.unwrap().contract,
        loosest.fields
    );

    // A contract that does not read is refused at registration, not per event later.
    let mut broken = looser.fields.clone();
    broken.rule_set.as_mut().unwrap()["domainRules"][0]["params"]["pattern"] = "(".into();
    let err = client
        .register_with(subject, ORDER_PLACED, &broken)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    assert!(err.message().unwrap().contains("bad pattern"), "{err}");
}

/// `schema` (a record) with one more optional string field.
fn with_optional_field(schema: &str, name: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(schema).unwrap();
    value["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": name, "type": ["null", "string"], "default": null}));
    value.to_string()
}

/// A schema id registered before its subject had a contract is judged by the subject's
/// latest contract: the stages fetch it with that one (ADR 0020).
#[tokio::test]
async fn an_id_registered_without_a_contract_takes_its_subjects_latest() {
    use riffle_codec::registered::DataContract;
    let client = RegistryClient::new(&registry().await).unwrap();
    let rules = DataContract::from_file("OrderPlaced.json", ORDER_RULES).unwrap();
    let subject = rules.subject.as_str();
    let bare = client.register(subject, ORDER_PLACED).await.unwrap();
    assert!(
        client
            .registered_by_id(bare)
            .await
            .unwrap()
            .contract
            .is_empty()
    );
    assert!(client.fetch_schema(bare).await.unwrap().contract.is_empty());
    let with = client
        .register_with(
            subject,
            &with_optional_field(ORDER_PLACED, "note"),
            &rules.fields,
        )
        .await
        .unwrap();
    assert_ne!(with, bare);
    assert_eq!(
        client.fetch_schema(bare).await.unwrap().contract,
        rules.fields
    );
    // Another record's schema without a subject of its own stays without one.
    let user = client.register("users-value", USER).await.unwrap();
    assert!(client.fetch_schema(user).await.unwrap().contract.is_empty());
}
