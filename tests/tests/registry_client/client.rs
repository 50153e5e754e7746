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
    assert_eq!(client.fetch_schema(order).await.unwrap(), ORDER);
    assert_eq!(
        client.latest("users-value").await.unwrap(),
        SubjectVersion {
            subject: "users-value".into(),
            id: order,
            version: 2,
            schema: ORDER.into(),
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
    assert_eq!(client.fetch_schema(id).await.unwrap(), USER);
}

fn assert_unavailable(result: Result<String, SourceError>) {
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
