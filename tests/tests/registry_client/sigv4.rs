//! SigV4 on the wire: a loopback server records what the client sends with
//! `RIFFLE_REGISTRY_SIGV4=1` (signed, the body hash matching the body that arrived) and
//! without it (no `Authorization` at all), and the real registry with auth `none` accepts
//! signed requests, which is what local runs of the stages send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use riffle_registry_client::{Credentials, RegistryClient, SIGV4_ENV};
use riffle_schema_registry::{MemoryStore, Registry, router};
use sha2::{Digest, Sha256};

const LONG: &str = r#""long""#;

/// Method, path with query, headers and body of one request.
type Seen = (Method, String, HeaderMap, Bytes);

/// A server answering every request with a registration reply, keeping what it was sent.
async fn recorder() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let keep = Arc::clone(&seen);
    let app = Router::new().fallback(
        move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock()
                    .unwrap()
                    .push((method, uri.to_string(), headers, body));
                (
                    [("content-type", "application/vnd.schemaregistry.v1+json")],
                    r#"{"id":7,"schema":"\"long\""}"#,
                )
            }
        },
    );
    (serve(app).await, seen)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A fixed identity and region, so the test never reads this machine's AWS configuration.
fn sdk(token: Option<&str>) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                token.map(str::to_owned),
                None,
                "test",
            ),
        ))
        .build()
}

fn credentials(env: &[(&str, &str)]) -> Option<Credentials> {
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    Credentials::from_lookup(|name| env.get(name).map(|v| (*v).to_owned())).unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn signs_when_configured_and_only_then() {
    let (url, seen) = recorder().await;
    let signing = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(credentials(&[(SIGV4_ENV, "1")]))
        .with_sdk_config(sdk(Some("session-token")));
    assert_eq!(signing.credentials(), Some(&Credentials::Iam));
    assert_eq!(signing.register("a/b value", LONG).await.unwrap(), 7);
    assert_eq!(signing.schema_by_id(7).await.unwrap(), LONG);

    let plain = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(credentials(&[]))
        .with_sdk_config(sdk(None));
    assert_eq!(plain.register("a/b value", LONG).await.unwrap(), 7);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (method, path, headers, body) in &seen[..2] {
        let auth = header(headers, "authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/lambda/aws4_request, "), "{auth}");
        let signed = auth
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap();
        let signed: Vec<&str> = signed.split(';').collect();
        for name in [
            "host",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token",
            "accept",
        ] {
            assert!(signed.contains(&name), "{method} {path}: {signed:?}");
        }
        if *method == Method::POST {
            assert!(signed.contains(&"content-type"), "{signed:?}");
        }
        // The hash covers the bytes that arrived, so the body was not changed after signing.
        assert_eq!(
            header(headers, "x-amz-content-sha256"),
            format!("{:x}", Sha256::digest(body))
        );
        assert_eq!(header(headers, "x-amz-security-token"), "session-token");
        assert_eq!(
            header(headers, "x-amz-date").len(),
            "20261128T120000Z".len()
        );
    }
    assert_eq!(seen[0].1, "/subjects/a%2Fb%20value/versions");
    let (_, _, headers, _) = &seen[2];
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256"] {
        assert!(headers.get(name).is_none(), "{name} sent without SigV4");
    }
}

#[tokio::test]
async fn a_registry_without_auth_accepts_signed_requests() {
    let url = serve(router(Registry::new(MemoryStore::new()))).await;
    let client = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(Some(Credentials::Iam))
        .with_sdk_config(sdk(None));
    let id = client.register("users-value", LONG).await.unwrap();
    assert_eq!(client.schema_by_id(id).await.unwrap(), LONG);
}

#[tokio::test]
async fn signing_without_a_region_is_a_configuration_error() {
    let (url, seen) = recorder().await;
    let no_region = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new("AKID", "secret", None, None, "test"),
        ))
        .build();
    let client = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(Some(Credentials::Iam))
        .with_sdk_config(no_region);
    let err = client.schema_by_id(7).await.unwrap_err();
    assert!(
        matches!(err, riffle_registry_client::ClientError::Config(_)),
        "{err}"
    );
    assert!(!err.retryable());
    assert!(seen.lock().unwrap().is_empty(), "nothing unsigned is sent");
}
