//! Every endpoint through real HTTP on a loopback port, over the in-memory store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use riffle_schema_registry::{MemoryStore, Registry, router};
use serde_json::{Value, json};

const CT: &str = "application/vnd.schemaregistry.v1+json";
const USER: &str = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"id","type":"long"}]}"#;
const USER_SPACED: &str = r#"{ "namespace": "riffle", "type": "record", "name": "User",
  "fields": [ {"type": "long", "name": "id"} ] }"#;
const USER_V2: &str = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"id","type":"long"},{"name":"email","type":["null","string"],"default":null}]}"#;

struct Server {
    base: String,
    http: reqwest::Client,
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(Registry::new(MemoryStore::new()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

impl Server {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_raw(path, CT, body.to_string()).await
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: String) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn register(&self, subject: &str, schema: &str) -> u64 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                &json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_u64().unwrap()
    }
}

/// Every reply, success or error, is JSON of the registry media type.
async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some(CT), "status {status}");
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

fn assert_error(reply: (StatusCode, Value), status: StatusCode, code: u64) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error_code"], code, "{}", reply.1);
    assert!(reply.1["message"].is_string(), "{}", reply.1);
}

#[tokio::test]
async fn register_dedupes_by_schema_and_shares_ids_across_subjects() {
    let s = start().await;
    let id = s.register("users-value", USER).await;
    assert_eq!(s.register("users-value", USER_SPACED).await, id);
    assert_eq!(s.register("other-value", USER).await, id);
    let id2 = s.register("users-value", USER_V2).await;
    assert_ne!(id2, id);

    assert_eq!(
        s.get("/subjects").await,
        (StatusCode::OK, json!(["other-value", "users-value"]))
    );
    assert_eq!(
        s.get("/subjects/users-value/versions").await,
        (StatusCode::OK, json!([1, 2]))
    );
    assert_eq!(
        s.get("/subjects/other-value/versions").await,
        (StatusCode::OK, json!([1]))
    );
    let (status, latest) = s.get("/subjects/users-value/versions/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        latest,
        json!({"subject": "users-value", "id": id2, "version": 2, "schema": USER_V2})
    );
    let (_, one) = s.get("/subjects/users-value/versions/1").await;
    assert_eq!(one["id"], id);
    assert_eq!(one["schema"], USER);
    assert_eq!(
        s.get("/subjects/users-value/versions/-1").await.1["version"],
        2
    );

    let (status, raw) = s.get("/subjects/users-value/versions/1/schema").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw, serde_json::from_str::<Value>(USER).unwrap());

    assert_eq!(
        s.get(&format!("/schemas/ids/{id}")).await,
        (StatusCode::OK, json!({ "schema": USER }))
    );
    let (status, raw) = s.get(&format!("/schemas/ids/{id2}/schema")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw, serde_json::from_str::<Value>(USER_V2).unwrap());
    assert_eq!(
        s.get(&format!("/schemas/ids/{id}/versions")).await,
        (
            StatusCode::OK,
            json!([
                {"subject": "other-value", "version": 1},
                {"subject": "users-value", "version": 1}
            ])
        )
    );
}

#[tokio::test]
async fn lookup_finds_the_version_or_says_why_not() {
    let s = start().await;
    let id = s.register("users-value", USER).await;
    let (status, found) = s
        .post("/subjects/users-value", &json!({"schema": USER_SPACED}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({"subject": "users-value", "id": id, "version": 1, "schema": USER})
    );
    assert_error(
        s.post("/subjects/users-value", &json!({"schema": USER_V2}))
            .await,
        StatusCode::NOT_FOUND,
        40403,
    );
    assert_error(
        s.post("/subjects/nobody", &json!({"schema": USER})).await,
        StatusCode::NOT_FOUND,
        40401,
    );
}

#[tokio::test]
async fn request_media_types() {
    let s = start().await;
    let body = json!({"schema": USER, "schemaType": "AVRO"}).to_string();
    for ct in [
        "application/vnd.schemaregistry.v1+json",
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/json; charset=utf-8",
    ] {
        let (status, reply) = s.post_raw("/subjects/t/versions", ct, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{ct}: {reply}");
        assert_eq!(reply, json!({"id": 1}));
    }
    assert_error(
        s.post_raw("/subjects/t/versions", "text/plain", body).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        415,
    );
}

#[tokio::test]
async fn bad_input_gets_api_errors() {
    let s = start().await;
    s.register("users-value", USER).await;
    // Invalid schemas, unsupported types, references.
    for bad in [
        json!({"schema": "{\"type\":\"nope\"}"}),
        json!({"schema": "not json at all"}),
        json!({"schema": USER, "schemaType": "PROTOBUF"}),
        json!({"schema": USER, "references": [{"name": "x", "subject": "y", "version": 1}]}),
    ] {
        assert_error(
            s.post("/subjects/users-value/versions", &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
        );
    }
    // Bodies that are not the expected JSON.
    for bad in ["{", "[]", "{\"schema\": 3}", "{}", ""] {
        assert_error(
            s.post_raw("/subjects/users-value/versions", CT, bad.to_owned())
                .await,
            StatusCode::BAD_REQUEST,
            400,
        );
    }
    // Subjects that cannot be stored.
    let long = "s".repeat(riffle_schema_registry::MAX_SUBJECT_BYTES + 1);
    assert_error(
        s.post(
            &format!("/subjects/{long}/versions"),
            &json!({"schema": USER}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42208,
    );
    assert_error(
        s.post("/subjects/a%0Ab/versions", &json!({"schema": USER}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42208,
    );
    // Versions.
    for bad in ["0", "abc", "-5", "99999999999"] {
        assert_error(
            s.get(&format!("/subjects/users-value/versions/{bad}"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        );
    }
    assert_error(
        s.get("/subjects/users-value/versions/2").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        s.get("/subjects/users-value/versions/2/schema").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        s.get("/subjects/nobody/versions/1").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        s.get("/subjects/nobody/versions/latest").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        s.get("/subjects/nobody/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        s.get(&format!("/subjects/{long}/versions")).await,
        StatusCode::NOT_FOUND,
        40401,
    );
    // Ids.
    for bad in ["999", "abc", "-1", "99999999999"] {
        assert_error(
            s.get(&format!("/schemas/ids/{bad}")).await,
            StatusCode::NOT_FOUND,
            40403,
        );
    }
    assert_error(
        s.get("/schemas/ids/999/versions").await,
        StatusCode::NOT_FOUND,
        40403,
    );
    // Paths and methods.
    assert_error(s.get("/nowhere").await, StatusCode::NOT_FOUND, 404);
    assert_error(
        s.get("/subjects/%FF/versions").await,
        StatusCode::BAD_REQUEST,
        400,
    );
    assert_error(
        s.post("/subjects", &json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
        405,
    );
    // Nothing above broke the server.
    assert_eq!(s.get("/").await, (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn subjects_with_slashes_and_spaces_round_trip() {
    let s = start().await;
    let id = s.register("team%2Fusers%20v", USER).await;
    assert_eq!(s.get("/subjects").await.1, json!(["team/users v"]));
    assert_eq!(
        s.get("/subjects/team%2Fusers%20v/versions/1").await.1["id"],
        id
    );
}

#[tokio::test]
async fn empty_registry() {
    let s = start().await;
    assert_eq!(s.get("/subjects").await, (StatusCode::OK, json!([])));
}
