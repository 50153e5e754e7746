//! The credential check through real HTTP on a loopback port: every mode, every refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use riffle_schema_registry::{Auth, MemoryStore, Registry, router_with_auth};
use serde_json::{Value, json};

const CT: &str = "application/vnd.schemaregistry.v1+json";
const USER: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"}]}"#;
const PASSWORD: &str = "s3cret-pw";
const TOKEN: &str = "tok-writer-0123456789";
const READ_TOKEN: &str = "tok-reader-9876543210";

async fn start(auth: Auth) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router_with_auth(Registry::new(MemoryStore::new()), auth);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A request's reply: status, `WWW-Authenticate`, body text.
struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// A refusal in the API's shape, that gives nothing of the request back.
    fn refused(&self, status: StatusCode, code: u64) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.json()["error_code"], code, "{}", self.body);
        for secret in [PASSWORD, TOKEN, READ_TOKEN, "wrong"] {
            assert!(!self.body.contains(secret), "{}", self.body);
        }
    }
}

enum Credential<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    credential: Credential<'_>,
    body: Option<Value>,
) -> Reply {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    request = match credential {
        Credential::None => request,
        Credential::Basic(user, password) => request.basic_auth(user, Some(password)),
        Credential::Bearer(token) => request.bearer_auth(token),
    };
    if let Some(body) = body {
        request = request.header("content-type", CT).body(body.to_string());
    }
    let resp = request.send().await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    if status.is_client_error() {
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            CT,
            "refusals are API errors"
        );
    }
    Reply {
        status,
        challenge,
        body: resp.text().await.unwrap(),
    }
}

fn schema() -> Option<Value> {
    Some(json!({ "schema": USER }))
}

#[tokio::test]
async fn basic_auth() {
    use Credential::Basic;
    use reqwest::Method;
    let base = start(
        Auth::basic(vec![
            ("alice".into(), PASSWORD.into()),
            ("reader".into(), "read-pw".into()),
        ])
        .with_readers(vec!["reader".into()]),
    )
    .await;
    let alice = || Basic("alice", PASSWORD);

    // No credential: 401 with a challenge, on reads, writes and unknown routes alike.
    for (method, path) in [
        (Method::GET, "/subjects"),
        (Method::POST, "/subjects/s/versions"),
        (Method::GET, "/nowhere"),
        (Method::PUT, "/config"),
    ] {
        let reply = call(&base, method, path, Credential::None, schema()).await;
        reply.refused(StatusCode::UNAUTHORIZED, 40101);
        assert_eq!(
            reply.challenge.as_deref(),
            Some("Basic realm=\"riffle-schema-registry\"")
        );
    }
    // Wrong password, unknown user, wrong scheme, garbage.
    for credential in [
        Basic("alice", "wrong"),
        Basic("mallory", PASSWORD),
        Basic("alice", ""),
        Credential::Bearer(PASSWORD),
    ] {
        let reply = call(&base, Method::GET, "/subjects", credential, None).await;
        reply.refused(StatusCode::UNAUTHORIZED, 40101);
        assert!(reply.challenge.is_some());
    }

    // A writer writes and reads.
    let reply = call(
        &base,
        Method::POST,
        "/subjects/s/versions",
        alice(),
        schema(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()),
        (StatusCode::OK, json!({"id": 1}))
    );
    let reply = call(&base, Method::GET, "/subjects", alice(), None).await;
    assert_eq!((reply.status, reply.json()), (StatusCode::OK, json!(["s"])));

    // A reader reads, looks up and checks compatibility, but may not write.
    let reader = || Basic("reader", "read-pw");
    let reply = call(&base, Method::GET, "/schemas/ids/1", reader(), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = call(&base, Method::POST, "/subjects/s", reader(), schema()).await;
    assert_eq!(reply.json()["version"], 1, "{}", reply.body);
    let reply = call(
        &base,
        Method::POST,
        "/compatibility/subjects/s/versions/latest",
        reader(),
        schema(),
    )
    .await;
    assert_eq!(reply.json(), json!({"is_compatible": true}));
    for (method, path) in [
        (Method::POST, "/subjects/s/versions"),
        (Method::DELETE, "/subjects/s"),
        (Method::DELETE, "/subjects/s/versions/1"),
        (Method::PUT, "/config"),
        (Method::PUT, "/config/s"),
        (Method::DELETE, "/config/s"),
    ] {
        let body = Some(json!({"schema": USER, "compatibility": "NONE"}));
        let reply = call(&base, method, path, reader(), body).await;
        reply.refused(StatusCode::FORBIDDEN, 40301);
        assert!(reply.challenge.is_none());
    }
    // Nothing the reader tried took effect.
    let reply = call(&base, Method::GET, "/subjects/s/versions", alice(), None).await;
    assert_eq!(reply.json(), json!([1]));
}

#[tokio::test]
async fn bearer_auth() {
    use Credential::Bearer;
    use reqwest::Method;
    let base = start(
        Auth::bearer(vec![TOKEN.into(), READ_TOKEN.into()]).with_readers(vec![READ_TOKEN.into()]),
    )
    .await;
    let reply = call(&base, Method::GET, "/subjects", Credential::None, None).await;
    reply.refused(StatusCode::UNAUTHORIZED, 40101);
    assert_eq!(
        reply.challenge.as_deref(),
        Some("Bearer realm=\"riffle-schema-registry\"")
    );
    for wrong in [
        Bearer("wrong"),
        Bearer(&TOKEN[..TOKEN.len() - 1]),
        Credential::Basic("x", TOKEN),
    ] {
        call(&base, Method::GET, "/subjects", wrong, None)
            .await
            .refused(StatusCode::UNAUTHORIZED, 40101);
    }
    let reply = call(
        &base,
        Method::POST,
        "/subjects/s/versions",
        Bearer(TOKEN),
        schema(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = call(&base, Method::GET, "/subjects", Bearer(READ_TOKEN), None).await;
    assert_eq!(reply.json(), json!(["s"]));
    call(
        &base,
        Method::DELETE,
        "/subjects/s",
        Bearer(READ_TOKEN),
        None,
    )
    .await
    .refused(StatusCode::FORBIDDEN, 40301);
    let reply = call(&base, Method::DELETE, "/subjects/s", Bearer(TOKEN), None).await;
    assert_eq!((reply.status, reply.json()), (StatusCode::OK, json!([1])));
}

#[tokio::test]
async fn open_reads() {
    use reqwest::Method;
    let base = start(Auth::bearer(vec![TOKEN.into()]).with_open_reads(true)).await;
    let reply = call(
        &base,
        Method::POST,
        "/subjects/s/versions",
        Credential::Bearer(TOKEN),
        schema(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // GETs need no credential...
    let reply = call(&base, Method::GET, "/schemas/ids/1", Credential::None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // ...but a wrong one is still refused, and writes still need one.
    call(
        &base,
        Method::GET,
        "/schemas/ids/1",
        Credential::Bearer("wrong"),
        None,
    )
    .await
    .refused(StatusCode::UNAUTHORIZED, 40101);
    for (method, path) in [
        (Method::POST, "/subjects/s/versions"),
        (Method::POST, "/subjects/s"),
        (Method::DELETE, "/subjects/s"),
    ] {
        call(&base, method, path, Credential::None, schema())
            .await
            .refused(StatusCode::UNAUTHORIZED, 40101);
    }
}

#[tokio::test]
async fn no_auth_lets_everyone_in() {
    use reqwest::Method;
    let base = start(Auth::none()).await;
    let reply = call(
        &base,
        Method::POST,
        "/subjects/s/versions",
        Credential::None,
        schema(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // A credential nobody asked for changes nothing.
    let reply = call(
        &base,
        Method::GET,
        "/subjects",
        Credential::Bearer("anything"),
        None,
    )
    .await;
    assert_eq!(reply.json(), json!(["s"]));
}
