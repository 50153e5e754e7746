//! Fuzz target: the schema registry's HTTP API (the same router the function URL serves,
//! over the in-memory store) driven by arbitrary sequences of requests.
//!
//! Paths come from the API's own shapes with arbitrary subjects, versions and ids, or are
//! arbitrary text; bodies are arbitrary bytes or a `{"schema": ...}` whose schema text is
//! arbitrary, or one of the event schemas with an arbitrary edit, so registration, lookup and
//! the compatibility check are reached with schemas that parse. Whatever is sent:
//! - nothing panics and every answer is below 500 (the memory store cannot fail, so a 5xx
//!   would be the registry's own bug);
//! - every error answer is Confluent's JSON shape (`error_code`, `message`);
//! - within a sequence, an id the registry handed out is served back by `GET
//!   /schemas/ids/{id}`.

#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use riffle_fuzz::EVENT_SCHEMAS;
use riffle_schema_registry::{CompatibilityLevel, MemoryStore, Registry, router};
use tower::ServiceExt as _;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
});

#[derive(Debug, Arbitrary)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
    Head,
}

#[derive(Debug, Arbitrary)]
enum Path {
    Subjects,
    Subject(String),
    Versions(String),
    Version(String, String),
    VersionSchema(String, String),
    CompatibilityLatest(String),
    Compatibility(String, String),
    Config,
    SubjectConfig(String),
    SchemaById(String),
    RawSchemaById(String),
    Usages(String),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Body_ {
    Empty,
    Bytes(Vec<u8>),
    SchemaText(String),
    /// One of `schemas/events/*.avsc`, with `edit` spliced in at `at`.
    EventSchema { which: u8, at: u16, edit: String },
    Level(u8),
}

#[derive(Debug, Arbitrary)]
struct Call {
    verb: Verb,
    path: Path,
    body: Body_,
}

/// Percent-encodes a path segment, so arbitrary text stays one segment.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn uri(path: &Path) -> String {
    match path {
        Path::Subjects => "/subjects".into(),
        Path::Subject(s) => format!("/subjects/{}", seg(s)),
        Path::Versions(s) => format!("/subjects/{}/versions", seg(s)),
        Path::Version(s, v) => format!("/subjects/{}/versions/{}", seg(s), seg(v)),
        Path::VersionSchema(s, v) => format!("/subjects/{}/versions/{}/schema", seg(s), seg(v)),
        Path::CompatibilityLatest(s) => format!("/compatibility/subjects/{}/versions", seg(s)),
        Path::Compatibility(s, v) => {
            format!("/compatibility/subjects/{}/versions/{}", seg(s), seg(v))
        }
        Path::Config => "/config".into(),
        Path::SubjectConfig(s) => format!("/config/{}", seg(s)),
        Path::SchemaById(id) => format!("/schemas/ids/{}", seg(id)),
        Path::RawSchemaById(id) => format!("/schemas/ids/{}/schema", seg(id)),
        Path::Usages(id) => format!("/schemas/ids/{}/versions", seg(id)),
        // Raw text as the path: what does not make a URI is not a request at all.
        Path::Raw(p) => format!("/{p}"),
    }
}

fn body(b: &Body_) -> Vec<u8> {
    match b {
        Body_::Empty => Vec::new(),
        Body_::Bytes(bytes) => bytes.clone(),
        Body_::SchemaText(text) => serde_json::json!({ "schema": text }).to_string().into_bytes(),
        Body_::EventSchema { which, at, edit } => {
            let (_, text) = EVENT_SCHEMAS[usize::from(*which) % EVENT_SCHEMAS.len()];
            let mut text = text.to_owned();
            let mut at = usize::from(*at) % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, edit);
            serde_json::json!({ "schema": text }).to_string().into_bytes()
        }
        Body_::Level(n) => {
            let levels = [
                "NONE",
                "BACKWARD",
                "BACKWARD_TRANSITIVE",
                "FORWARD",
                "FORWARD_TRANSITIVE",
                "FULL",
                "FULL_TRANSITIVE",
                "bogus",
            ];
            serde_json::json!({ "compatibility": levels[usize::from(*n) % levels.len()] })
                .to_string()
                .into_bytes()
        }
    }
}

fuzz_target!(|calls: Vec<Call>| {
    RUNTIME.block_on(async {
        let app = router(Registry::with_default_level(
            MemoryStore::new(),
            CompatibilityLevel::default(),
        ));
        let mut ids = Vec::new();
        for call in calls.iter().take(16) {
            let method = match call.verb {
                Verb::Get => Method::GET,
                Verb::Post => Method::POST,
                Verb::Put => Method::PUT,
                Verb::Delete => Method::DELETE,
                Verb::Head => Method::HEAD,
            };
            let Ok(request) = Request::builder()
                .method(method.clone())
                .uri(uri(&call.path))
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(Body::from(body(&call.body)))
            else {
                continue;
            };
            let Ok(response) = app.clone().oneshot(request).await;
            let status = response.status();
            let bytes = match axum::body::to_bytes(response.into_body(), 16 << 20).await {
                Ok(b) => b,
                Err(e) => panic!("{method} {}: unreadable body: {e}", uri(&call.path)),
            };
            assert!(
                status.as_u16() < 500,
                "{method} {} -> {status}: {}",
                uri(&call.path),
                String::from_utf8_lossy(&bytes)
            );
            if method == Method::HEAD {
                continue;
            }
            let json: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => panic!(
                    "{method} {} -> {status}: not JSON ({e}): {}",
                    uri(&call.path),
                    String::from_utf8_lossy(&bytes)
                ),
            };
            if !status.is_success() {
                assert!(
                    json["error_code"].is_u64() && json["message"].is_string(),
                    "{method} {} -> {status}: {json}",
                    uri(&call.path)
                );
            } else if method == Method::POST
                && matches!(call.path, Path::Versions(_))
                && let Some(id) = json["id"].as_u64()
            {
                ids.push(id);
            }
        }
        for id in ids {
            let request = Request::get(format!("/schemas/ids/{id}")).body(Body::empty());
            let Ok(request) = request else { continue };
            let Ok(response) = app.clone().oneshot(request).await;
            assert_eq!(response.status(), StatusCode::OK, "id {id} handed out, not served");
        }
    });
});
