//! The administrative calls (subjects, versions, compatibility, levels) and credentials,
//! against the real registry server on loopback: the in-memory store, open or behind basic
//! or bearer auth as the server configures it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use riffle_registry_client::{
    ClientError, CompatibilityLevel, Credentials, INCOMPATIBLE_SCHEMA, RegistryClient,
    SUBJECT_NOT_FOUND, VERSION_NOT_FOUND, VersionRef,
};
use riffle_schema_registry::auth::Auth;
use riffle_schema_registry::{MemoryStore, Registry, router, router_with_auth};

const SUBJECT: &str = "com.riffle.test.User";
const V1: &str = r#"{"type":"record","name":"User","namespace":"com.riffle.test","fields":[{"name":"id","type":"long"}]}"#;
/// V1 plus an optional field with a default: backward compatible.
const V2: &str = r#"{"type":"record","name":"User","namespace":"com.riffle.test","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"],"default":null}]}"#;
/// V1 plus a field without a default: new readers cannot read old data.
const REQUIRED_FIELD: &str = r#"{"type":"record","name":"User","namespace":"com.riffle.test","fields":[{"name":"id","type":"long"},{"name":"tier","type":"string"}]}"#;

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An open registry held to BACKWARD, the service's default (embedded registries start at
/// NONE), set through the client's own call.
async fn open_registry() -> RegistryClient {
    let client =
        RegistryClient::new(&serve(router(Registry::new(MemoryStore::new()))).await).unwrap();
    assert_eq!(
        client
            .set_config(None, CompatibilityLevel::Backward)
            .await
            .unwrap(),
        CompatibilityLevel::Backward
    );
    client
}

#[tokio::test]
async fn subjects_versions_and_lookup() {
    let client = open_registry().await;
    assert_eq!(client.subjects().await.unwrap(), Vec::<String>::new());
    let id1 = client.register(SUBJECT, V1).await.unwrap();
    let id2 = client.register(SUBJECT, V2).await.unwrap();
    client.register("com.riffle.test.Other", V1).await.unwrap();

    let mut subjects = client.subjects().await.unwrap();
    subjects.sort();
    assert_eq!(subjects, ["com.riffle.test.Other", SUBJECT]);
    assert_eq!(client.versions(SUBJECT).await.unwrap(), [1, 2]);
    let v1 = client
        .version(SUBJECT, VersionRef::Number(1))
        .await
        .unwrap();
    assert_eq!((v1.version, v1.id, v1.schema.as_str()), (1, id1, V1));
    assert_eq!(
        client
            .version(SUBJECT, VersionRef::Latest)
            .await
            .unwrap()
            .id,
        id2
    );
    let found = client.lookup(SUBJECT, V2).await.unwrap();
    assert_eq!((found.version, found.id), (2, id2));

    let missing = client.versions("com.riffle.test.Nobody").await.unwrap_err();
    assert_eq!(missing.error_code(), Some(SUBJECT_NOT_FOUND));
    let missing = client
        .version(SUBJECT, VersionRef::Number(9))
        .await
        .unwrap_err();
    assert_eq!(missing.error_code(), Some(VERSION_NOT_FOUND));
}

#[tokio::test]
async fn compatibility_checks_give_reasons() {
    let client = open_registry().await;
    client.register(SUBJECT, V1).await.unwrap();

    let ok = client
        .check_compatibility(SUBJECT, V2, VersionRef::Latest)
        .await
        .unwrap();
    assert!(ok.is_compatible, "{ok:?}");
    assert!(ok.messages.is_empty(), "{ok:?}");

    let bad = client
        .check_compatibility(SUBJECT, REQUIRED_FIELD, VersionRef::Number(1))
        .await
        .unwrap();
    assert!(!bad.is_compatible);
    assert!(
        bad.messages.iter().any(|m| m.contains("tier")),
        "the reason names the field: {bad:?}"
    );

    // Registering it anyway is refused with the API's 409.
    let refused = client.register(SUBJECT, REQUIRED_FIELD).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(INCOMPATIBLE_SCHEMA));
    assert_eq!(refused.status(), Some(409));
    assert!(!refused.retryable());

    let none = client
        .check_compatibility("com.riffle.test.Nobody", V1, VersionRef::Latest)
        .await
        .unwrap_err();
    assert_eq!(none.error_code(), Some(SUBJECT_NOT_FOUND));
}

#[tokio::test]
async fn levels_per_subject_fall_back_to_global() {
    let client = open_registry().await;
    client.register(SUBJECT, V1).await.unwrap();
    client.register("com.riffle.test.Other", V1).await.unwrap();
    assert_eq!(
        client.config(None).await.unwrap(),
        CompatibilityLevel::Backward
    );
    assert_eq!(
        client
            .set_config(Some(SUBJECT), CompatibilityLevel::FullTransitive)
            .await
            .unwrap(),
        CompatibilityLevel::FullTransitive
    );
    assert_eq!(
        client.config(Some(SUBJECT)).await.unwrap(),
        CompatibilityLevel::FullTransitive
    );
    // No level of its own: the global one.
    assert_eq!(
        client.config(Some("com.riffle.test.Other")).await.unwrap(),
        CompatibilityLevel::Backward
    );
    client
        .set_config(None, CompatibilityLevel::None)
        .await
        .unwrap();
    assert_eq!(
        client.config(Some("com.riffle.test.Other")).await.unwrap(),
        CompatibilityLevel::None
    );
    // Under NONE the change the default level refused goes in.
    client
        .register("com.riffle.test.Other", REQUIRED_FIELD)
        .await
        .unwrap();
}

#[tokio::test]
async fn basic_credentials_are_sent_and_refusals_are_typed() {
    let auth = Auth::basic(vec![
        ("ci".into(), "pw".into()),
        ("reader".into(), "rpw".into()),
    ])
    .with_readers(vec!["reader".into()]);
    let url = serve(router_with_auth(Registry::new(MemoryStore::new()), auth)).await;
    let basic = |user: &str, password: &str| {
        RegistryClient::new(&url)
            .unwrap()
            .with_credentials(Some(Credentials::Basic {
                user: user.into(),
                password: password.into(),
            }))
    };

    let anonymous = RegistryClient::new(&url).unwrap();
    let e = anonymous.subjects().await.unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
    assert_eq!(e.status(), Some(401));
    let e = basic("ci", "wrong").subjects().await.unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
    assert!(!e.retryable());

    let writer = basic("ci", "pw");
    writer.register(SUBJECT, V1).await.unwrap();
    assert_eq!(writer.subjects().await.unwrap(), [SUBJECT]);

    let reader = basic("reader", "rpw");
    assert_eq!(reader.versions(SUBJECT).await.unwrap(), [1]);
    // Checks change nothing: a reader may ask them.
    assert!(
        reader
            .check_compatibility(SUBJECT, V2, VersionRef::Latest)
            .await
            .unwrap()
            .is_compatible
    );
    let e = reader.register(SUBJECT, V2).await.unwrap_err();
    assert!(matches!(e, ClientError::Forbidden { .. }), "{e:?}");
    assert_eq!(e.status(), Some(403));
}

#[tokio::test]
async fn bearer_tokens_are_sent() {
    let auth = Auth::bearer(vec!["t0ken".into()]);
    let url = serve(router_with_auth(Registry::new(MemoryStore::new()), auth)).await;
    let client = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(Some(Credentials::Bearer("t0ken".into())));
    client.register(SUBJECT, V1).await.unwrap();
    assert_eq!(client.versions(SUBJECT).await.unwrap(), [1]);
    let wrong = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(Some(Credentials::Bearer("guess".into())));
    assert!(matches!(
        wrong.versions(SUBJECT).await.unwrap_err(),
        ClientError::Unauthorized { .. }
    ));
}

#[tokio::test]
async fn unreachable_registry_says_where() {
    // Bind then drop: a loopback port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = RegistryClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = client.subjects().await.unwrap_err();
    assert!(matches!(e, ClientError::Transport(_)), "{e:?}");
    assert!(e.retryable());
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}
