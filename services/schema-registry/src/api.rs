//! The HTTP face of the registry: routes, request bodies, JSON replies and error bodies.
//!
//! Every reply, errors included, is JSON of the registry media type, and nothing a client
//! sends reaches a panic: path and body rejections are turned into the API's error shape.
//!
//! Query flags (`deleted`, `permanent`, `verbose`, `defaultToGlobal`) are true when their
//! value is `true` in any case; anything else, or their absence, is false.

use riffle_codec::registered::DataContract;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use riffle_codec::compatibility::CompatibilityLevel;
use riffle_telemetry::{Metrics, names};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{self, Auth};
use crate::error::Error;
use crate::registry::{Registry, VersionSpec};
use crate::store::{SchemaStore, VersionRecord};

/// The media type of every reply.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// Request media types understood (a missing Content-Type is read as JSON too, as the
/// reference clients sometimes omit it).
const ACCEPTED_REQUEST_TYPES: [&str; 3] = [
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
];

/// The registration route: the one write that `iam` mode grants per subject, so the auth
/// middleware recognizes it by this template (axum's `MatchedPath`).
pub(crate) const REGISTER_ROUTE: &str = "/subjects/{subject}/versions";
/// The name of the subject in [`REGISTER_ROUTE`].
pub(crate) const SUBJECT_PARAM: &str = "subject";

/// The registry's routes over `registry`, open to every caller (tests and embedding).
pub fn router<S: SchemaStore>(registry: Registry<S>) -> Router {
    routes(registry)
}

/// The registry's routes behind `auth`: every route, the fallbacks included, passes the
/// credential check first.
pub fn router_with_auth<S: SchemaStore>(registry: Registry<S>, auth: Auth) -> Router {
    routes(registry).layer(axum::middleware::from_fn_with_state(
        Arc::new(auth),
        auth::require,
    ))
}

fn routes<S: SchemaStore>(registry: Registry<S>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/subjects", get(subjects::<S>))
        .route(
            "/subjects/{subject}",
            post(lookup::<S>).delete(delete_subject::<S>),
        )
        .route(REGISTER_ROUTE, get(versions::<S>).post(register::<S>))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version::<S>).delete(delete_version::<S>),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatible_with_subject::<S>),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatible_with_version::<S>),
        )
        .route(
            "/config",
            get(global_config::<S>).put(set_global_config::<S>),
        )
        .route(
            "/config/{subject}",
            get(subject_config::<S>)
                .put(set_subject_config::<S>)
                .delete(delete_subject_config::<S>),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema::<S>),
        )
        .route("/schemas/ids/{id}", get(schema_by_id::<S>))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id::<S>))
        .route("/schemas/ids/{id}/versions", get(usages::<S>))
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .with_state(Arc::new(registry))
        // Outermost of the routes, so every answer passes, the fallbacks' and the
        // extractors' rejections included, whatever produced its status.
        .layer(axum::middleware::map_response(count_server_errors))
}

/// Prints one `ServerErrors` EMF line for an answer with a 5xx status, so an alarm can
/// page on the registry's own failures (Lambda counts them as successful invocations).
async fn count_server_errors(response: Response) -> Response {
    if let Some(mut metrics) = answer_metrics(response.status()) {
        metrics.flush();
    }
    response
}

/// The metrics one answer adds: `ServerErrors` for a 5xx, none otherwise. Only failures
/// print: a line per request would cost more in log ingestion than serving it does, and
/// the alarm reads an absent datapoint as no failures.
fn answer_metrics(status: StatusCode) -> Option<Metrics> {
    if !status.is_server_error() {
        return None;
    }
    let mut metrics = Metrics::new(crate::SERVICE);
    metrics.count(names::SERVER_ERRORS, 1);
    Some(metrics)
}

type Shared<S> = State<Arc<Registry<S>>>;

/// A JSON reply with the registry media type.
struct Reply<T>(StatusCode, T);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(self.1)).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1));
        response
    }
}

fn ok<T: Serialize>(body: T) -> Reply<T> {
    Reply(StatusCode::OK, body)
}

#[derive(Serialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, error_code) = self.status_and_code();
        let message = if status.is_server_error() {
            // The detail (an SDK error: table names, ARNs, request ids) goes to the log, for
            // the operator; the caller learns that the fault is ours and whether to retry.
            tracing::error!(error = %self, retryable = self.retryable(), "request failed");
            server_error_message(self.retryable())
        } else {
            self.to_string()
        };
        Reply(
            status,
            ErrorBody {
                error_code,
                message,
            },
        )
        .into_response()
    }
}

/// What a caller reads of a failure on the registry's side.
fn server_error_message(retryable: bool) -> String {
    if retryable {
        "the registry could not complete the request; retry later".to_owned()
    } else {
        "the registry could not complete the request (see its log)".to_owned()
    }
}

/// Path parameters, with malformed ones (bad percent-encoding) answered in the API's shape.
struct ApiPath<T>(T);

impl<T, St> FromRequestParts<St> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    St: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| ApiPath(t))
            .map_err(|e| Error::BadRequest(e.body_text()))
    }
}

/// The body of register and lookup requests.
#[derive(Debug, Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
    /// Confluent's data-contract fields (`metadata`, `ruleSet`); a Riffle contract lives there.
    #[serde(flatten)]
    contract: DataContract,
}

impl<St: Send + Sync> FromRequest<St> for SchemaRequest {
    type Rejection = Error;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        let body: SchemaRequest = read_json(req, state).await?;
        if !body.references.is_empty() {
            return Err(Error::InvalidSchema(
                "schema references are not supported".into(),
            ));
        }
        Ok(body)
    }
}

/// The body of `PUT /config`: the level's name, checked by the handler so a missing or
/// unknown one gets the API's invalid-level code rather than a bad request.
#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: Option<serde_json::Value>,
}

impl<St: Send + Sync> FromRequest<St> for ConfigRequest {
    type Rejection = Error;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        read_json(req, state).await
    }
}

impl ConfigRequest {
    fn level(&self) -> Result<CompatibilityLevel, Error> {
        match &self.compatibility {
            Some(serde_json::Value::String(name)) => name
                .parse()
                .map_err(|_| Error::InvalidCompatibilityLevel(name.clone())),
            other => Err(Error::InvalidCompatibilityLevel(
                other
                    .as_ref()
                    .map_or_else(|| "missing".to_owned(), ToString::to_string),
            )),
        }
    }
}

/// A JSON body of an accepted media type.
async fn read_json<T: DeserializeOwned, St: Send + Sync>(
    req: Request,
    state: &St,
) -> Result<T, Error> {
    if let Some(value) = req.headers().get(CONTENT_TYPE) {
        let essence = value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !ACCEPTED_REQUEST_TYPES.contains(&essence.as_str()) {
            return Err(Error::UnsupportedMediaType(essence));
        }
    }
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|e| Error::BadRequest(e.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("malformed request body: {e}")))
}

/// The query's boolean flags.
struct Flags(Vec<String>);

impl Flags {
    fn get(&self, name: &str) -> bool {
        self.0.iter().any(|f| f == name)
    }
}

impl<St: Send + Sync> FromRequestParts<St> for Flags {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        let set = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(_, value)| value.eq_ignore_ascii_case("true"))
            .map(|(name, _)| name.to_owned())
            .collect();
        Ok(Flags(set))
    }
}

#[derive(Serialize)]
struct IdBody {
    id: u32,
}

#[derive(Serialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType", skip_serializing_if = "Option::is_none")]
    schema_type: Option<String>,
    #[serde(flatten)]
    contract: DataContract,
}

#[derive(Serialize)]
struct VersionBody {
    subject: String,
    id: u32,
    version: u32,
    schema: String,
    #[serde(flatten)]
    contract: DataContract,
}

impl From<VersionRecord> for VersionBody {
    fn from(v: VersionRecord) -> Self {
        VersionBody {
            subject: v.subject,
            id: v.id,
            version: v.version,
            schema: v.schema,
            contract: v.contract,
        }
    }
}

#[derive(Serialize)]
struct UsageBody {
    subject: String,
    version: u32,
}

async fn root() -> Reply<serde_json::Value> {
    ok(serde_json::json!({}))
}

async fn subjects<S: SchemaStore>(
    State(reg): Shared<S>,
    flags: Flags,
) -> Result<Reply<Vec<String>>, Error> {
    Ok(ok(reg.subjects(flags.get("deleted")).await?))
}

async fn register<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    body: SchemaRequest,
) -> Result<Reply<IdBody>, Error> {
    let registered = reg
        .register_with(
            &subject,
            &body.schema,
            body.schema_type.as_deref(),
            &body.contract,
        )
        .await?;
    Ok(ok(IdBody { id: registered.id }))
}

async fn lookup<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
    body: SchemaRequest,
) -> Result<Reply<VersionBody>, Error> {
    let found = reg
        .lookup(
            &subject,
            &body.schema,
            body.schema_type.as_deref(),
            &body.contract,
            flags.get("deleted"),
        )
        .await?;
    Ok(ok(found.into()))
}

async fn versions<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
) -> Result<Reply<Vec<u32>>, Error> {
    Ok(ok(reg.versions(&subject, flags.get("deleted")).await?))
}

async fn version<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
) -> Result<Reply<VersionBody>, Error> {
    let spec = VersionSpec::parse(&version)?;
    Ok(ok(reg
        .version(&subject, spec, flags.get("deleted"))
        .await?
        .into()))
}

async fn version_schema<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
) -> Result<Response, Error> {
    let spec = VersionSpec::parse(&version)?;
    Ok(raw(reg
        .version(&subject, spec, flags.get("deleted"))
        .await?
        .schema))
}

async fn delete_subject<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
) -> Result<Reply<Vec<u32>>, Error> {
    Ok(ok(reg
        .delete_subject(&subject, flags.get("permanent"))
        .await?))
}

async fn delete_version<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
) -> Result<Reply<u32>, Error> {
    let spec = VersionSpec::parse(&version)?;
    Ok(ok(reg
        .delete_version(&subject, spec, flags.get("permanent"))
        .await?))
}

#[derive(Serialize)]
struct CompatibilityBody {
    is_compatible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<String>>,
}

fn compatibility(messages: Vec<String>, verbose: bool) -> Reply<CompatibilityBody> {
    ok(CompatibilityBody {
        is_compatible: messages.is_empty(),
        messages: verbose.then_some(messages),
    })
}

async fn compatible_with_subject<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
    body: SchemaRequest,
) -> Result<Reply<CompatibilityBody>, Error> {
    let messages = reg
        .check_compatibility(
            &subject,
            &body.schema,
            body.schema_type.as_deref(),
            &body.contract,
            None,
        )
        .await?;
    Ok(compatibility(messages, flags.get("verbose")))
}

async fn compatible_with_version<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath((subject, version)): ApiPath<(String, String)>,
    flags: Flags,
    body: SchemaRequest,
) -> Result<Reply<CompatibilityBody>, Error> {
    let spec = VersionSpec::parse(&version)?;
    let messages = reg
        .check_compatibility(
            &subject,
            &body.schema,
            body.schema_type.as_deref(),
            &body.contract,
            Some(spec),
        )
        .await?;
    Ok(compatibility(messages, flags.get("verbose")))
}

#[derive(Serialize)]
struct LevelBody {
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: &'static str,
}

#[derive(Serialize)]
struct SetLevelBody {
    compatibility: &'static str,
}

fn level(level: CompatibilityLevel) -> Reply<LevelBody> {
    ok(LevelBody {
        compatibility_level: level.as_str(),
    })
}

async fn global_config<S: SchemaStore>(State(reg): Shared<S>) -> Result<Reply<LevelBody>, Error> {
    Ok(level(reg.global_level().await?))
}

async fn set_global_config<S: SchemaStore>(
    State(reg): Shared<S>,
    body: ConfigRequest,
) -> Result<Reply<SetLevelBody>, Error> {
    let new = body.level()?;
    reg.set_level(None, new).await?;
    Ok(ok(SetLevelBody {
        compatibility: new.as_str(),
    }))
}

async fn subject_config<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    flags: Flags,
) -> Result<Reply<LevelBody>, Error> {
    Ok(level(
        reg.subject_level(&subject, flags.get("defaultToGlobal"))
            .await?,
    ))
}

async fn set_subject_config<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
    body: ConfigRequest,
) -> Result<Reply<SetLevelBody>, Error> {
    let new = body.level()?;
    reg.set_level(Some(&subject), new).await?;
    Ok(ok(SetLevelBody {
        compatibility: new.as_str(),
    }))
}

async fn delete_subject_config<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(subject): ApiPath<String>,
) -> Result<Reply<LevelBody>, Error> {
    Ok(level(reg.delete_level(&subject).await?))
}

/// Ids outside u32 cannot name a schema: answered as an unknown schema, not a bad route.
fn parse_id(segment: &str) -> Result<u32, Error> {
    segment.parse::<u32>().map_err(|_| Error::SchemaNotFound)
}

async fn schema_by_id<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(id): ApiPath<String>,
) -> Result<Reply<SchemaBody>, Error> {
    let record = reg.schema_by_id(parse_id(&id)?).await?;
    // The API leaves schemaType out for Avro, its default.
    let schema_type = (!record.schema_type.eq_ignore_ascii_case(crate::schema::AVRO))
        .then_some(record.schema_type);
    Ok(ok(SchemaBody {
        schema: record.schema,
        schema_type,
        contract: record.contract,
    }))
}

async fn raw_schema_by_id<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    Ok(raw(reg.schema_by_id(parse_id(&id)?).await?.schema))
}

async fn usages<S: SchemaStore>(
    State(reg): Shared<S>,
    ApiPath(id): ApiPath<String>,
    flags: Flags,
) -> Result<Reply<Vec<UsageBody>>, Error> {
    let usages = reg.usages(parse_id(&id)?, flags.get("deleted")).await?;
    Ok(ok(usages
        .into_iter()
        .map(|(subject, version)| UsageBody { subject, version })
        .collect()))
}

/// The schema text itself as the body: it is JSON already.
fn raw(schema: String) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1))],
        schema,
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_errors_keep_their_detail_in_the_log() {
        let error = Error::Store {
            op: "PutItem",
            message: "ResourceNotFoundException: arn:aws:dynamodb:eu-west-1:123456789012:table/riffle-schemas".into(),
            retryable: true,
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains("retry later") && body.contains("50001"),
            "{body}"
        );
        assert!(
            !body.contains("arn:") && !body.contains("PutItem"),
            "{body}"
        );
        // A caller's mistake keeps its reason.
        let response = Error::InvalidSchema("no type".into()).into_response();
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        assert!(
            String::from_utf8(body.to_vec())
                .unwrap()
                .contains("no type")
        );
    }

    #[test]
    fn only_5xx_answers_are_counted() {
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let line = answer_metrics(status).unwrap().to_line(1).unwrap();
            let record = riffle_telemetry::parse_emf_line(&line).unwrap();
            assert_eq!(record.service, crate::SERVICE);
            assert_eq!(record.values, vec![(names::SERVER_ERRORS.to_owned(), 1.0)]);
        }
        for status in [StatusCode::OK, StatusCode::NOT_FOUND, StatusCode::CONFLICT] {
            assert!(answer_metrics(status).is_none(), "{status}");
        }
    }
}
