//! Every endpoint through real HTTP on a loopback port, over the in-memory store, with the
//! service's default compatibility level (BACKWARD).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use riffle_schema_registry::{CompatibilityLevel, MemoryStore, Registry, router};
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
    let app = router(Registry::with_default_level(
        MemoryStore::new(),
        CompatibilityLevel::default(),
    ));
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

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", CT)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        read(resp).await
    }

    async fn try_register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/subjects/{subject}/versions"),
            &json!({ "schema": schema }),
        )
        .await
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
        // apache-avro passes over the stray 33; the compatibility checks cannot read it.
        json!({"schema": r#"{"type":"record","name":"U","fields":[33,{"name":"a","type":"int"}]}"#}),
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

/// A `User` record with `fields` after its `id`.
fn user(fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"User","namespace":"riffle","fields":[{{"name":"id","type":"long"}}{fields}]}}"#
    )
}

#[tokio::test]
async fn registration_follows_the_compatibility_level() {
    let s = start().await;
    s.register("u", USER).await;
    // BACKWARD by default: a new field without a default cannot read old data.
    let no_default = user(r#",{"name":"email","type":"string"}"#);
    let (status, body) = s.try_register("u", &no_default).await;
    assert_error((status, body.clone()), StatusCode::CONFLICT, 409);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("READER_FIELD_MISSING_DEFAULT_VALUE") && message.contains("email"),
        "{message}"
    );
    assert_eq!(s.get("/subjects/u/versions").await.1, json!([1]));
    // With a default it may.
    s.register("u", USER_V2).await;
    // Re-registering an existing schema skips the check, even when it would now fail.
    s.put("/config/u", &json!({"compatibility": "FORWARD"}))
        .await;
    s.register("u", USER).await;
    // NONE lets anything through; the subject's level wins over the global one.
    s.put("/config/u", &json!({"compatibility": "NONE"})).await;
    s.register("u", r#"{"type":"string"}"#).await;
    assert_eq!(s.get("/subjects/u/versions").await.1, json!([1, 2, 3]));
}

#[tokio::test]
async fn transitive_levels_check_every_live_version() {
    let s = start().await;
    let v1 = user("");
    let v2 = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"name","type":"string","default":""}]}"#;
    let v3 = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"name","type":"string"}]}"#;
    s.register("t", &v1).await;
    s.register("t", v2).await;
    s.put(
        "/config/t",
        &json!({"compatibility": "BACKWARD_TRANSITIVE"}),
    )
    .await;
    // v3 reads v2's data but not v1's (no `name` there, and v3 has no default for it).
    assert_error(s.try_register("t", v3).await, StatusCode::CONFLICT, 409);
    let (status, body) = s
        .post(
            "/compatibility/subjects/t/versions/latest",
            &json!({ "schema": v3 }),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    // Once version 1 is soft deleted it no longer counts.
    s.delete("/subjects/t/versions/1").await;
    s.register("t", v3).await;
}

#[tokio::test]
async fn compatibility_endpoints() {
    let s = start().await;
    let int = r#"{"type":"record","name":"N","fields":[{"name":"n","type":"int"}]}"#;
    let long = r#"{"type":"record","name":"N","fields":[{"name":"n","type":"long"}]}"#;
    // No versions yet: anything is compatible with nothing.
    assert_eq!(
        s.post(
            "/compatibility/subjects/n/versions",
            &json!({"schema": long})
        )
        .await,
        (StatusCode::OK, json!({"is_compatible": true}))
    );
    assert_error(
        s.post(
            "/compatibility/subjects/n/versions/latest",
            &json!({"schema": long}),
        )
        .await,
        StatusCode::NOT_FOUND,
        40401,
    );
    s.register("n", long).await;
    // int -> long promotes; long -> int does not.
    assert_eq!(
        s.post(
            "/compatibility/subjects/n/versions/1",
            &json!({"schema": int})
        )
        .await,
        (StatusCode::OK, json!({"is_compatible": false}))
    );
    let (status, body) = s
        .post(
            "/compatibility/subjects/n/versions?verbose=true",
            &json!({"schema": int}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_compatible"], false);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    assert!(
        messages[0]
            .as_str()
            .unwrap()
            .contains("TYPE_MISMATCH at /fields/n"),
        "{body}"
    );
    assert_eq!(
        s.post(
            "/compatibility/subjects/n/versions/latest?verbose=true",
            &json!({"schema": long}),
        )
        .await,
        (
            StatusCode::OK,
            json!({"is_compatible": true, "messages": []})
        )
    );
    // FORWARD flips the direction: the old long reader reads new int data.
    s.put("/config/n", &json!({"compatibility": "FORWARD"}))
        .await;
    assert_eq!(
        s.post(
            "/compatibility/subjects/n/versions/1",
            &json!({"schema": int})
        )
        .await
        .1,
        json!({"is_compatible": true})
    );
    s.put("/config/n", &json!({"compatibility": "FULL"})).await;
    assert_eq!(
        s.post(
            "/compatibility/subjects/n/versions/1",
            &json!({"schema": int})
        )
        .await
        .1,
        json!({"is_compatible": false})
    );
    // Errors: unknown version, bad version, invalid schema.
    assert_error(
        s.post(
            "/compatibility/subjects/n/versions/7",
            &json!({"schema": int}),
        )
        .await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        s.post(
            "/compatibility/subjects/n/versions/x",
            &json!({"schema": int}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    assert_error(
        s.post(
            "/compatibility/subjects/n/versions",
            &json!({"schema": "{\"type\":\"nope\"}"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
}

#[tokio::test]
async fn config_endpoints() {
    let s = start().await;
    assert_eq!(
        s.get("/config").await,
        (StatusCode::OK, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_error(s.get("/config/orders").await, StatusCode::NOT_FOUND, 40408);
    assert_eq!(
        s.get("/config/orders?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        s.put("/config", &json!({"compatibility": "full_transitive"}))
            .await,
        (StatusCode::OK, json!({"compatibility": "FULL_TRANSITIVE"}))
    );
    assert_eq!(
        s.get("/config").await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    assert_eq!(
        s.get("/config/orders?defaultToGlobal=true").await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    // A subject may have a level before it has versions.
    assert_eq!(
        s.put("/config/orders", &json!({"compatibility": "FORWARD"}))
            .await,
        (StatusCode::OK, json!({"compatibility": "FORWARD"}))
    );
    assert_eq!(
        s.get("/config/orders").await.1,
        json!({"compatibilityLevel": "FORWARD"})
    );
    assert_eq!(
        s.delete("/config/orders").await,
        (StatusCode::OK, json!({"compatibilityLevel": "FORWARD"}))
    );
    assert_error(s.get("/config/orders").await, StatusCode::NOT_FOUND, 40408);
    assert_error(
        s.delete("/config/orders").await,
        StatusCode::NOT_FOUND,
        40408,
    );
    // Invalid levels, and bodies that are not JSON.
    for bad in [
        json!({"compatibility": "SIDEWAYS"}),
        json!({"compatibility": 3}),
        json!({}),
    ] {
        assert_error(
            s.put("/config", &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
        );
        assert_error(
            s.put("/config/orders", &bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
        );
    }
    assert_error(
        s.post_raw("/config", CT, "{".into()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        405,
    );
    assert_eq!(
        s.get("/config").await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
}

#[tokio::test]
async fn soft_and_permanent_deletes() {
    let s = start().await;
    let v3 = user(
        r#",{"name":"email","type":["null","string"],"default":null},{"name":"age","type":"int","default":0}"#,
    );
    let id1 = s.register("d", USER).await;
    let id2 = s.register("d", USER_V2).await;
    let id3 = s.register("d", &v3).await;
    s.register("other", USER).await;

    // Soft delete of one version: hidden, still readable by id, number kept.
    assert_eq!(
        s.delete("/subjects/d/versions/2").await,
        (StatusCode::OK, json!(2))
    );
    assert_eq!(s.get("/subjects/d/versions").await.1, json!([1, 3]));
    assert_eq!(
        s.get("/subjects/d/versions?deleted=true").await.1,
        json!([1, 2, 3])
    );
    assert_error(
        s.get("/subjects/d/versions/2").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_eq!(
        s.get("/subjects/d/versions/2?deleted=true").await.1["id"],
        id2
    );
    assert_eq!(
        s.get(&format!("/schemas/ids/{id2}")).await,
        (StatusCode::OK, json!({ "schema": USER_V2 }))
    );
    assert_eq!(
        s.get(&format!("/schemas/ids/{id2}/versions")).await.1,
        json!([])
    );
    assert_eq!(
        s.get(&format!("/schemas/ids/{id2}/versions?deleted=true"))
            .await
            .1,
        json!([{"subject": "d", "version": 2}])
    );
    assert_error(
        s.post("/subjects/d", &json!({"schema": USER_V2})).await,
        StatusCode::NOT_FOUND,
        40403,
    );
    assert_eq!(
        s.post("/subjects/d?deleted=true", &json!({"schema": USER_V2}))
            .await
            .1["version"],
        2
    );
    // Twice: soft deleted already. Permanent without soft first: refused.
    assert_error(
        s.delete("/subjects/d/versions/2").await,
        StatusCode::NOT_FOUND,
        40406,
    );
    assert_error(
        s.delete("/subjects/d/versions/1?permanent=true").await,
        StatusCode::NOT_FOUND,
        40407,
    );
    assert_error(
        s.delete("/subjects/d/versions/9").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        s.delete("/subjects/nobody/versions/1").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        s.delete("/subjects/d/versions/zero").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42202,
    );
    // `latest` is the highest live version.
    assert_eq!(
        s.delete("/subjects/d/versions/latest").await,
        (StatusCode::OK, json!(3))
    );
    assert_eq!(s.get("/subjects/d/versions/latest").await.1["id"], id1);
    assert_eq!(
        s.get("/subjects/d/versions/latest?deleted=true").await.1["id"],
        id3
    );
    // Re-registering a soft-deleted schema brings it back as a new version, same id.
    let (status, body) = s.try_register("d", USER_V2).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "id": id2 })));
    assert_eq!(s.get("/subjects/d/versions").await.1, json!([1, 4]));
    assert_eq!(
        s.post("/subjects/d", &json!({"schema": USER_V2})).await.1["version"],
        4
    );

    // Permanent delete of a soft-deleted version.
    assert_eq!(
        s.delete("/subjects/d/versions/2?permanent=true").await,
        (StatusCode::OK, json!(2))
    );
    assert_eq!(
        s.get("/subjects/d/versions?deleted=true").await.1,
        json!([1, 3, 4])
    );
    assert_error(
        s.delete("/subjects/d/versions/2?permanent=true").await,
        StatusCode::NOT_FOUND,
        40402,
    );

    // The whole subject: permanent first is refused, soft lists what it deleted.
    assert_error(
        s.delete("/subjects/d?permanent=true").await,
        StatusCode::NOT_FOUND,
        40405,
    );
    assert_eq!(
        s.delete("/subjects/d").await,
        (StatusCode::OK, json!([1, 4]))
    );
    assert_error(s.delete("/subjects/d").await, StatusCode::NOT_FOUND, 40404);
    assert_eq!(s.get("/subjects").await.1, json!(["other"]));
    assert_eq!(
        s.get("/subjects?deleted=true").await.1,
        json!(["d", "other"])
    );
    assert_error(
        s.get("/subjects/d/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        s.get("/subjects/d/versions/latest").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        s.post("/subjects/d", &json!({"schema": USER})).await,
        StatusCode::NOT_FOUND,
        40401,
    );
    s.put("/config/d", &json!({"compatibility": "NONE"})).await;
    assert_eq!(
        s.delete("/subjects/d?permanent=true").await,
        (StatusCode::OK, json!([1, 3, 4]))
    );
    assert_eq!(s.get("/subjects?deleted=true").await.1, json!(["other"]));
    assert_error(s.delete("/subjects/d").await, StatusCode::NOT_FOUND, 40401);
    // The permanent delete dropped the subject's level too.
    assert_error(s.get("/config/d").await, StatusCode::NOT_FOUND, 40408);
    // Schemas stay readable by id, and come back under their id.
    assert_eq!(
        s.get(&format!("/schemas/ids/{id3}")).await.1["schema"],
        v3.as_str()
    );
    assert_eq!(s.register("d", USER).await, id1);
    assert_eq!(s.get("/subjects/d/versions").await.1, json!([1]));
}
