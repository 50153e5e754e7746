//! `iam` mode through the router: each request is a function URL event (AuthType `AWS_IAM`,
//! `tests/fixtures/function-url-iam-request.json`) turned into a request by lambda_http's own
//! conversion, the one `lambda_http::run` applies on AWS, so the caller reaches the
//! middleware exactly as it does there. Who may do what, and how refusals read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::http::StatusCode;
use lambda_http::tower::ServiceExt;
use riffle_codec::envelope::{ENVELOPE_SCHEMA, ENVELOPE_SUBJECT};
use riffle_plan::template::{LOCAL_ACCOUNT_ID, Scope};
use riffle_schema_registry::{Auth, Config, MemoryStore, Registry, router_with_auth};
use serde_json::{Value, json};

/// A stage's registration as Lambda hands it over (the validator's role, its own session).
const EVENT: &str = include_str!("fixtures/function-url-iam-request.json");
const ACCOUNT: &str = "123456789012";
const CT: &str = "application/vnd.schemaregistry.v1+json";
const USER: &str = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"id","type":"long"}]}"#;

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// How a role calls: an STS session of it (for a Lambda function, named after it).
fn session(role: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/some-session")
}

const ADMIN: &str = "RiffleAdmin";
const WRITER: &str = "riffle-ci";
const READER: &str = "riffle-dashboard";

/// The registry with the template's kind of settings: an admin listed by its IAM role ARN
/// with a path, a writer, a reader listed in the STS form, and the stage roles (a
/// CloudFormation name prefix) granted the envelope's subject.
fn app() -> Router {
    let env = [
        ("RIFFLE_REGISTRY_AUTH", "iam".to_owned()),
        ("RIFFLE_REGISTRY_ADMINS", role_arn(&format!("ops/{ADMIN}"))),
        ("RIFFLE_REGISTRY_WRITERS", role_arn(WRITER)),
        (
            "RIFFLE_REGISTRY_READERS",
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/{READER}"),
        ),
        (
            "RIFFLE_REGISTRY_SUBJECT_WRITERS",
            format!("{}={ENVELOPE_SUBJECT}", role_arn("riffle-validator-Role-*")),
        ),
    ];
    let auth =
        Auth::from_lookup(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .unwrap();
    router_with_auth(Registry::new(MemoryStore::new()), auth)
}

/// Who the event says called.
#[derive(Clone, Copy)]
enum Caller<'a> {
    /// The fixture's own caller: the validator's role.
    AsRecorded,
    /// `requestContext.authorizer.iam.userArn` set to this.
    Arn(&'a str),
    /// No authorizer: a function URL with AuthType `NONE`.
    NoAuthorizer,
}

/// The fixture made into `method path` from `caller` with `body`, then into a request by
/// lambda_http.
fn event(
    method: &str,
    path: &str,
    caller: Caller<'_>,
    body: Option<Value>,
) -> lambda_http::Request {
    let mut event: Value = serde_json::from_str(EVENT).unwrap();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    match caller {
        Caller::AsRecorded => {}
        Caller::Arn(arn) => event["requestContext"]["authorizer"]["iam"]["userArn"] = json!(arn),
        Caller::NoAuthorizer => {
            event["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("authorizer");
        }
    }
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
    }
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
}

impl Reply {
    /// A refusal in the API's shape whose message holds `says`.
    fn refused(&self, status: StatusCode, code: u64, says: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error_code"], code, "{}", self.body);
        let message = self.body["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} lacks {says:?}");
    }
}

async fn send(app: &Router, request: lambda_http::Request) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    if status.is_client_error() {
        assert_eq!(
            response.headers()["content-type"],
            CT,
            "refusals are API errors"
        );
    }
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Reply {
        status,
        challenge,
        body,
    }
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    caller: Caller<'_>,
    body: Option<Value>,
) -> Reply {
    send(app, event(method, path, caller, body)).await
}

fn schema(text: &str) -> Option<Value> {
    Some(json!({ "schema": text }))
}

fn level(name: &str) -> Option<Value> {
    Some(json!({ "compatibility": name }))
}

/// The writes only an admin may make, on subject `orders` (version 1 registered).
const ADMIN_WRITES: [(&str, &str); 5] = [
    ("PUT", "/config"),
    ("PUT", "/config/orders"),
    ("DELETE", "/config/orders"),
    ("DELETE", "/subjects/orders/versions/1"),
    // Every version is soft deleted by now: the subject goes for good.
    ("DELETE", "/subjects/orders?permanent=true"),
];

#[tokio::test]
async fn admin_may_do_everything() {
    let app = app();
    let admin = session(ADMIN);
    let admin = Caller::Arn(&admin);
    let reply = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        admin,
        schema(USER),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!({"id": 1}))
    );
    for (method, path) in ADMIN_WRITES {
        let reply = call(&app, method, path, admin, level("FULL")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{method} {path}: {}",
            reply.body
        );
    }
    let reply = call(&app, "GET", "/config", admin, None).await;
    assert_eq!(reply.body, json!({"compatibilityLevel": "FULL"}));
}

#[tokio::test]
async fn writer_registers_but_neither_deletes_nor_sets_levels() {
    let app = app();
    let writer = session(WRITER);
    let writer = Caller::Arn(&writer);
    let reply = call(
        &app,
        "POST",
        "/subjects/orders/versions",
        writer,
        schema(USER),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!({"id": 1}))
    );
    let path = format!("/subjects/{ENVELOPE_SUBJECT}/versions");
    let reply = call(&app, "POST", &path, writer, schema(ENVELOPE_SCHEMA)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for (method, path) in ADMIN_WRITES {
        call(&app, method, path, writer, level("NONE"))
            .await
            .refused(
                StatusCode::FORBIDDEN,
                40301,
                &format!("principal {} is a writer", role_arn(WRITER)),
            );
    }
    // Nothing it tried took effect.
    let reply = call(&app, "GET", "/subjects/orders/versions", writer, None).await;
    assert_eq!(reply.body, json!([1]));
    let reply = call(&app, "GET", "/config", writer, None).await;
    assert_eq!(reply.body, json!({"compatibilityLevel": "NONE"}));
}

#[tokio::test]
async fn reader_reads_and_checks_but_does_not_register() {
    let app = app();
    let admin = session(ADMIN);
    call(
        &app,
        "POST",
        "/subjects/orders/versions",
        Caller::Arn(&admin),
        schema(USER),
    )
    .await;
    let reader = session(READER);
    let reader = Caller::Arn(&reader);
    let reply = call(&app, "GET", "/subjects", reader, None).await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!(["orders"]))
    );
    let reply = call(&app, "GET", "/schemas/ids/1", reader, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = call(&app, "POST", "/subjects/orders", reader, schema(USER)).await;
    assert_eq!(reply.body["version"], 1, "{}", reply.body);
    let reply = call(
        &app,
        "POST",
        "/compatibility/subjects/orders/versions/latest",
        reader,
        schema(USER),
    )
    .await;
    assert_eq!(reply.body, json!({"is_compatible": true}));
    call(
        &app,
        "POST",
        "/subjects/orders/versions",
        reader,
        schema(USER),
    )
    .await
    .refused(
        StatusCode::FORBIDDEN,
        40301,
        "may not register schemas under subject 'orders'",
    );
    for (method, path) in ADMIN_WRITES {
        call(&app, method, path, reader, level("NONE"))
            .await
            .refused(StatusCode::FORBIDDEN, 40301, "is a reader");
    }
}

#[tokio::test]
async fn stage_registers_its_own_subject_only() {
    let app = app();
    // The fixture as recorded: the validator registering under the envelope's subject.
    let reply = send(
        &app,
        event(
            "POST",
            &format!("/subjects/{ENVELOPE_SUBJECT}/versions"),
            Caller::AsRecorded,
            schema(ENVELOPE_SCHEMA),
        ),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!({"id": 1}))
    );
    // The grant is held against the subject as the handler decodes it from the path.
    let encoded = ENVELOPE_SUBJECT.replace('.', "%2E");
    let reply = call(
        &app,
        "POST",
        &format!("/subjects/{encoded}/versions"),
        Caller::AsRecorded,
        schema(ENVELOPE_SCHEMA),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!({"id": 1}))
    );
    // Another role of the same stack prefix (a redeployed stack) holds the same grant.
    let redeployed = session("riffle-validator-Role-0ZZ9Y8X7W6V5");
    let path = format!("/subjects/{ENVELOPE_SUBJECT}/versions");
    let reply = call(
        &app,
        "POST",
        &path,
        Caller::Arn(&redeployed),
        schema(ENVELOPE_SCHEMA),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // It reads everything...
    let reply = call(&app, "GET", "/schemas/ids/1", Caller::AsRecorded, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // ...but registers under no other subject, even one that starts like its own.
    for subject in [
        "orders",
        "com.riffle.pipeline.Envelope2",
        "com.riffle.pipeline",
    ] {
        call(
            &app,
            "POST",
            &format!("/subjects/{subject}/versions"),
            Caller::AsRecorded,
            schema(USER),
        )
        .await
        .refused(
            StatusCode::FORBIDDEN,
            40301,
            &format!(
                "principal {} may not register schemas under subject '{subject}'",
                role_arn("riffle-validator-Role-1QX2W3E4R5T6")
            ),
        );
    }
    // Nor deletes or sets levels on its own.
    for (method, path) in [
        ("DELETE", format!("/subjects/{ENVELOPE_SUBJECT}")),
        ("PUT", format!("/config/{ENVELOPE_SUBJECT}")),
    ] {
        call(&app, method, &path, Caller::AsRecorded, level("NONE"))
            .await
            .refused(StatusCode::FORBIDDEN, 40301, "is a subject writer");
    }
    let reply = call(&app, "GET", "/subjects", Caller::AsRecorded, None).await;
    assert_eq!(reply.body, json!([ENVELOPE_SUBJECT]));
}

#[tokio::test]
async fn unknown_principal_is_forbidden() {
    let app = app();
    for (caller, named) in [
        (session("riffle-intruder"), role_arn("riffle-intruder")),
        (
            format!("arn:aws:iam::{ACCOUNT}:user/mallory"),
            format!("arn:aws:iam::{ACCOUNT}:user/mallory"),
        ),
        // The admin's role name, in another account.
        (
            format!("arn:aws:sts::999999999999:assumed-role/{ADMIN}/s"),
            format!("arn:aws:iam::999999999999:role/{ADMIN}"),
        ),
        // Principals no list can name are refused by the ARN IAM gave.
        (
            format!("arn:aws:iam::{ACCOUNT}:root"),
            format!("arn:aws:iam::{ACCOUNT}:root"),
        ),
        (
            format!("arn:aws:sts::{ACCOUNT}:federated-user/bob"),
            format!("arn:aws:sts::{ACCOUNT}:federated-user/bob"),
        ),
    ] {
        for (method, path) in [("GET", "/subjects"), ("POST", "/subjects/orders/versions")] {
            let reply = call(&app, method, path, Caller::Arn(&caller), schema(USER)).await;
            reply.refused(
                StatusCode::FORBIDDEN,
                40301,
                &format!("principal {named} is granted no access to this registry"),
            );
            assert!(
                reply.challenge.is_none(),
                "IAM authenticated it: no challenge"
            );
        }
    }
}

#[tokio::test]
async fn no_iam_caller_is_unauthenticated() {
    let app = app();
    // A function URL without IAM auth in front: the context has no authorizer.
    for (method, path) in [
        ("GET", "/subjects"),
        ("POST", "/subjects/orders/versions"),
        ("PUT", "/config"),
        ("GET", "/nowhere"),
    ] {
        let reply = call(&app, method, path, Caller::NoAuthorizer, schema(USER)).await;
        reply.refused(StatusCode::UNAUTHORIZED, 40101, "no IAM caller");
        assert_eq!(
            reply.challenge.as_deref(),
            Some("AWS4-HMAC-SHA256 realm=\"riffle-schema-registry\"")
        );
    }
    // No request context at all (served on a socket, or a test harness): refused too.
    let bare = lambda_http::http::Request::builder()
        .method("GET")
        .uri("/subjects")
        .body(lambda_http::Body::Empty)
        .unwrap();
    send(&app, bare)
        .await
        .refused(StatusCode::UNAUTHORIZED, 40101, "no IAM caller");
}

#[tokio::test]
async fn assumed_role_and_role_arn_forms_match() {
    let app = app();
    // The admin is listed as arn:aws:iam::ACCOUNT:role/ops/RiffleAdmin: its sessions (which
    // carry no path), its role ARN and a differently cased name are all it.
    for caller in [
        session(ADMIN),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ADMIN}/another-session"),
        role_arn(ADMIN),
        role_arn(&format!("ops/{ADMIN}")),
        session(&ADMIN.to_ascii_lowercase()),
    ] {
        let reply = call(&app, "PUT", "/config", Caller::Arn(&caller), level("FULL")).await;
        assert_eq!(reply.status, StatusCode::OK, "{caller}: {}", reply.body);
    }
    // The reader is listed as arn:aws:sts::ACCOUNT:assumed-role/riffle-dashboard.
    for caller in [session(READER), role_arn(READER)] {
        let reply = call(&app, "GET", "/subjects", Caller::Arn(&caller), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{caller}: {}", reply.body);
    }
    // Names that only resemble them are not them.
    for caller in [
        session(&format!("{ADMIN}2")),
        session("Riffle"),
        session(&format!("{READER}-x")),
        format!("arn:aws:iam::{ACCOUNT}:user/{ADMIN}"),
    ] {
        let reply = call(&app, "GET", "/subjects", Caller::Arn(&caller), None).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{caller}: {}",
            reply.body
        );
    }
}

/// The template's environment, resolved by riffle-plan (the reader riffle-local uses) for
/// environment `dev`, is a valid `iam` configuration under which each stage's role, as
/// CloudFormation names it in the stack `riffle deploy --env dev` makes
/// (`riffle-dev-<stage>`), registers the envelope and nothing else; the same stage of another
/// environment is nobody here.
#[tokio::test]
async fn the_template_grants_each_stage_its_envelope_only() {
    const ENV: &str = "dev";
    let infra = riffle_plan::project_root().unwrap().join("infra");
    let plan = riffle_plan::plan(&infra, ENV).unwrap();
    let spec = plan
        .services
        .iter()
        .find(|s| s.name == "schema-registry")
        .unwrap();
    let exports = [(
        format!("riffle-{ENV}-SchemasTableName"),
        format!("riffle-{ENV}-schemas"),
    )]
    .into();
    let scope = Scope {
        resources: &Default::default(),
        exports: &exports,
    };
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(name, value)| (name.clone(), spec.template.eval(value, scope).unwrap()))
        .collect();
    env.push(("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into()));
    let config =
        Config::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap();
    let app = router_with_auth(Registry::new(MemoryStore::new()), config.auth);
    let envelope = format!("/subjects/{ENVELOPE_SUBJECT}/versions");
    for stage in ["validator", "enricher", "aggregator", "archiver"] {
        let role = format!(
            "arn:aws:sts::{LOCAL_ACCOUNT_ID}:assumed-role/riffle-{ENV}-{stage}-Role-1QX2W3E4R5T6/riffle-{ENV}-{stage}"
        );
        let caller = Caller::Arn(&role);
        let reply = call(&app, "POST", &envelope, caller, schema(ENVELOPE_SCHEMA)).await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::OK, json!({"id": 1})),
            "{stage}"
        );
        let reply = call(&app, "GET", "/schemas/ids/1", caller, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{stage}: {}", reply.body);
        call(
            &app,
            "POST",
            "/subjects/orders/versions",
            caller,
            schema(USER),
        )
        .await
        .refused(StatusCode::FORBIDDEN, 40301, "subject 'orders'");
    }
    // The registry's own role, or any other, is nobody; so is another environment's stage.
    let others = [
        format!("riffle-{ENV}-schema-registry-Role-1QX2W3E4R5T6"),
        "riffle-staging-validator-Role-1QX2W3E4R5T6".to_owned(),
        "riffle-validator-Role-1QX2W3E4R5T6".to_owned(),
    ];
    for other in others {
        let other = session(&other);
        call(&app, "GET", "/subjects", Caller::Arn(&other), None)
            .await
            .refused(StatusCode::FORBIDDEN, 40301, "granted no access");
    }
}
