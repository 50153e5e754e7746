//! A client of Riffle's schema registry (the Confluent-compatible REST API): register
//! schemas, fetch them by id, read subjects and versions, check compatibility and set
//! compatibility levels, with optional credentials (basic, bearer, or AWS SigV4 for the
//! registry behind a Lambda function URL with AuthType `AWS_IAM`).
//!
//! It is also the codec's [`SchemaSource`]: an id the registry does not know is
//! [`SourceError::NotFound`] (the record can never be decoded), anything else that goes
//! wrong (down, timeout, 5xx, a reply that is not the registry's) is
//! [`SourceError::Unavailable`], so the record is retried rather than dead-lettered.
//!
//! Layout: this file — [`RegistryClient`], its [`ClientError`], the reply types; `admin` —
//! subjects, versions, compatibility checks and levels; `level` — [`CompatibilityLevel`],
//! the one definition the registry service enforces too; `auth` — [`Credentials`] and the
//! environment they come from; `sigv4` — signing a finished request for
//! [`Credentials::Iam`]; `bootstrap` — a stage's start-up registration of the
//! envelope schema.
//! Caching schemas per id is the codec's job, not the client's.

mod admin;
mod auth;
mod bootstrap;
mod sigv4;

pub use admin::{Compatibility, SUBJECT_LEVEL_NOT_CONFIGURED, VersionRef};
pub use auth::{Credentials, PASSWORD_ENV, SIGV4_ENV, TOKEN_ENV, USER_ENV};
pub use riffle_codec::compatibility::{CompatibilityLevel, UnknownLevel};
pub use sigv4::{SIGV4_SERVICE, sign_for_function_url};

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;

use reqwest::{StatusCode, Url};
use riffle_codec::registered::DataContract;
use riffle_codec::source::{Fetched, SchemaSource, SourceError};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The registry API's media type, sent as Accept and Content-Type.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// Time to open a connection: a registry that takes longer is treated as down.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Time for a whole request; well under the shortest Lambda timeout a stage runs with, so a
/// hung registry fails the call, not the invocation.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stage's start-up waits for the registry in
/// [`RegistryClient::envelope_codec`] (the registry may be starting alongside).
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// The API's error code for an unknown schema (id or, in lookups, schema text).
pub const SCHEMA_NOT_FOUND: u32 = 40403;

/// The API's error code for an unknown subject.
pub const SUBJECT_NOT_FOUND: u32 = 40401;

/// The API's error code for an unknown version of a known subject.
pub const VERSION_NOT_FOUND: u32 = 40402;

/// The API's error code (and HTTP status) for a registration refused as incompatible.
pub const INCOMPATIBLE_SCHEMA: u32 = 409;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL cannot name a registry, or the HTTP client cannot be built.
    #[error("registry client configuration: {0}")]
    Config(String),
    /// The registry could not be reached or did not answer in time.
    #[error("registry unreachable: {0}")]
    Transport(String),
    /// The registry answered with an error.
    #[error("registry answered {status} (error code {error_code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code (the status itself when the body had none).
        error_code: u32,
        /// The registry's message, or the start of a non-registry body.
        message: String,
    },
    /// The registry wants credentials, or did not accept the ones sent (HTTP 401).
    #[error(
        "registry refused the credentials (401, error code {error_code}): {message}; \
         set RIFFLE_REGISTRY_USER and RIFFLE_REGISTRY_PASSWORD, RIFFLE_REGISTRY_TOKEN, \
         or RIFFLE_REGISTRY_SIGV4=1 on AWS"
    )]
    Unauthorized {
        /// The API's error code (401 when the body had none).
        error_code: u32,
        /// The registry's message.
        message: String,
    },
    /// The credentials were accepted but do not allow this call (HTTP 403).
    #[error("registry denied the request (403, error code {error_code}): {message}")]
    Forbidden {
        /// The API's error code (403 when the body had none).
        error_code: u32,
        /// The registry's message.
        message: String,
    },
    /// A success reply whose body is not what the API promises.
    #[error("unexpected registry reply: {0}")]
    Decode(String),
}

impl ClientError {
    /// Transport failures, 5xx and throttling heal; refusals of what was sent do not.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Api { status, .. } => {
                *status >= 500 || *status == StatusCode::TOO_MANY_REQUESTS.as_u16()
            }
            ClientError::Config(_)
            | ClientError::Decode(_)
            | ClientError::Unauthorized { .. }
            | ClientError::Forbidden { .. } => false,
        }
    }

    /// The API error code, if the registry answered with one.
    pub fn error_code(&self) -> Option<u32> {
        match self {
            ClientError::Api { error_code, .. }
            | ClientError::Unauthorized { error_code, .. }
            | ClientError::Forbidden { error_code, .. } => Some(*error_code),
            _ => None,
        }
    }

    /// The HTTP status the registry answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Unauthorized { .. } => Some(401),
            ClientError::Forbidden { .. } => Some(403),
            _ => None,
        }
    }

    /// The registry's message, if it answered with an error.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Api { message, .. }
            | ClientError::Unauthorized { message, .. }
            | ClientError::Forbidden { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// One version of a subject, as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The global schema id.
    pub id: u32,
    /// The version within the subject.
    pub version: u32,
    /// The schema text.
    pub schema: String,
    /// The data-contract fields registered with it.
    #[serde(flatten)]
    pub contract: DataContract,
}

#[derive(Deserialize)]
struct IdReply {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaReply {
    schema: String,
    #[serde(flatten)]
    contract: DataContract,
}

#[derive(Deserialize)]
struct ErrorReply {
    error_code: u32,
    message: String,
}

/// A registry at one base URL. Cheap to clone; build it once per process.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    credentials: Option<Credentials>,
    /// Where [`Credentials::Iam`] gets keys, region and clock: set by
    /// [`RegistryClient::with_sdk_config`], else the default chain loaded on the first signed
    /// request (so a client that never signs never touches AWS configuration).
    aws: Arc<tokio::sync::OnceCell<SdkConfig>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base.as_str())
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl RegistryClient {
    /// A client of the registry at `base_url` (it may carry a path prefix), with the
    /// default timeouts.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_timeouts(base_url, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT)
    }

    /// As [`RegistryClient::new`] with explicit timeouts.
    pub fn with_timeouts(
        base_url: &str,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, ClientError> {
        let base = Url::parse(base_url)
            .map_err(|e| ClientError::Config(format!("registry URL {base_url:?}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "registry URL {base_url:?} is not an http(s) base URL"
            )));
        }
        // The roots the SDK's client uses too, read once per process (riffle_aws::tls); a
        // plain-HTTP registry needs none, and reqwest would otherwise read the store again.
        let roots = if base.scheme() == "https" {
            riffle_aws::tls::roots()
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Config(format!("platform trust roots: {e}")))?
        } else {
            Vec::new()
        };
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(request)
            .tls_certs_only(roots)
            .build()
            .map_err(|e| ClientError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            credentials: None,
            aws: Arc::default(),
        })
    }

    /// The same client sending `credentials` with every request (`None`: anonymous).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The same client signing with `sdk`'s credentials provider, region and time source
    /// when its credentials are [`Credentials::Iam`], instead of the default chain.
    #[must_use]
    pub fn with_sdk_config(mut self, sdk: SdkConfig) -> Self {
        self.aws = Arc::new(tokio::sync::OnceCell::new_with(Some(sdk)));
        self
    }

    /// A client of `base_url` with the credentials the environment names
    /// ([`Credentials::from_env`]).
    ///
    /// # Errors
    /// A bad URL, or credentials set ambiguously.
    pub fn from_env_credentials(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self::new(base_url)?.with_credentials(Credentials::from_env()?))
    }

    /// The base URL requests are made against.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The credentials sent with each request, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Registers `schema_json` (Avro) under `subject` and returns its global id; registering
    /// a schema that is already there returns the id it has.
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32, ClientError> {
        self.register_with(subject, schema_json, &DataContract::default())
            .await
    }

    /// [`RegistryClient::register`] with data-contract fields (a subject's contract, ADR
    /// 0020). Without them the registry carries the latest version's forward, as Confluent's
    /// does.
    pub async fn register_with(
        &self,
        subject: &str,
        schema_json: &str,
        contract: &DataContract,
    ) -> Result<u32, ClientError> {
        let request = self
            .http
            .post(self.url(&["subjects", subject, "versions"])?)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE_V1)
            .body(admin::schema_body_with(schema_json, contract));
        let reply: IdReply = self.send(request).await?;
        Ok(reply.id)
    }

    /// The schema text registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, ClientError> {
        Ok(self.registered_by_id(id).await?.schema)
    }

    /// The schema registered under `id` with its contract fields.
    pub async fn registered_by_id(&self, id: u32) -> Result<Fetched, ClientError> {
        let id = id.to_string();
        let request = self.http.get(self.url(&["schemas", "ids", &id])?);
        let reply: SchemaReply = self.send(request).await?;
        Ok(Fetched {
            schema: reply.schema,
            contract: reply.contract,
        })
    }

    /// The latest version of `subject`.
    pub async fn latest(&self, subject: &str) -> Result<SubjectVersion, ClientError> {
        let request = self
            .http
            .get(self.url(&["subjects", subject, "versions", "latest"])?);
        self.send(request).await
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment (so
    /// a subject with `/` in it stays one segment).
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Config("registry URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let mut request = request.header(reqwest::header::ACCEPT, CONTENT_TYPE_V1);
        if let Some(credentials) = &self.credentials {
            request = credentials.apply(request);
        }
        let mut request = request
            .build()
            .map_err(|e| ClientError::Config(format!("building the request: {e}")))?;
        if self.credentials == Some(Credentials::Iam) {
            let sdk = self.aws.get_or_init(sigv4::default_sdk_config).await;
            sigv4::sign_with(sdk, &mut request).await?;
        }
        let response = self.http.execute(request).await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()));
        }
        Err(api_error(status, &bytes))
    }
}

/// The error for a non-success reply: the registry's code and message when the body is the
/// API's error shape, else the status and the start of whatever answered.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let (error_code, message) = match serde_json::from_slice::<ErrorReply>(bytes) {
        Ok(reply) => (reply.error_code, reply.message),
        // Not the registry talking (a proxy, a load balancer): keep a little of what it said.
        Err(_) => (
            u32::from(status.as_u16()),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        ),
    };
    match status {
        StatusCode::UNAUTHORIZED => ClientError::Unauthorized {
            error_code,
            message,
        },
        StatusCode::FORBIDDEN => ClientError::Forbidden {
            error_code,
            message,
        },
        _ => ClientError::Api {
            status: status.as_u16(),
            error_code,
            message,
        },
    }
}

fn transport(e: reqwest::Error) -> ClientError {
    // The source chain says why (refused, reset, timed out); the top level alone often does not.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ClientError::Transport(message)
}

impl SchemaSource for RegistryClient {
    /// The schema of `id` with its contract. An id registered without one (before its
    /// subject had a contract, or by a client that sent none to an empty subject) is judged
    /// by the contract of its subject's latest version (ADR 0020), so records that carry it
    /// are not rejected for the way they were registered.
    async fn fetch_schema(&self, id: u32) -> Result<Fetched, SourceError> {
        let mut fetched = self.registered_by_id(id).await.map_err(|e| match e {
            // Only the registry itself saying "no such schema" is final: a bare 404 from a
            // wrong URL or a proxy must not dead-letter every record.
            ClientError::Api {
                status: 404,
                error_code: SCHEMA_NOT_FOUND,
                ..
            } => SourceError::NotFound(id),
            other => SourceError::Unavailable(other.to_string()),
        })?;
        if fetched.contract.is_empty()
            && let Some(subject) = record_name(&fetched.schema)
        {
            match self.latest(&subject).await {
                Ok(latest) => fetched.contract = latest.contract,
                // No such subject: the record's subject check decides.
                Err(e) if matches!(e.error_code(), Some(SUBJECT_NOT_FOUND | VERSION_NOT_FOUND)) => {
                }
                Err(e) => return Err(SourceError::Unavailable(e.to_string())),
            }
        }
        Ok(fetched)
    }
}

/// The full name of the record a schema text defines, which is its subject in this project
/// (RecordNameStrategy); `None` for anything else.
fn record_name(schema: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(schema).ok()?;
    if value.get("type")?.as_str()? != "record" {
        return None;
    }
    let name = value.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_owned());
    }
    match value.get("namespace").and_then(serde_json::Value::as_str) {
        Some(ns) if !ns.is_empty() => Some(format!("{ns}.{name}")),
        _ => Some(name.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_prefixes() {
        let c = RegistryClient::new("http://127.0.0.1:1/registry/").unwrap();
        assert_eq!(
            c.url(&["subjects", "a/b c", "versions"]).unwrap().as_str(),
            "http://127.0.0.1:1/registry/subjects/a%2Fb%20c/versions"
        );
        let c = RegistryClient::new("http://127.0.0.1:1").unwrap();
        assert_eq!(
            c.url(&["schemas", "ids", "7"]).unwrap().as_str(),
            "http://127.0.0.1:1/schemas/ids/7"
        );
    }

    #[test]
    fn refuses_non_http_urls() {
        for bad in ["", "not a url", "mailto:x@y", "ftp://host/"] {
            assert!(
                matches!(RegistryClient::new(bad), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn retryability() {
        let api = |status| ClientError::Api {
            status,
            error_code: 0,
            message: String::new(),
        };
        assert!(api(500).retryable());
        assert!(api(503).retryable());
        assert!(api(429).retryable());
        assert!(!api(404).retryable());
        assert!(!api(422).retryable());
        assert!(ClientError::Transport("refused".into()).retryable());
        assert!(!ClientError::Decode("x".into()).retryable());
        assert!(
            !ClientError::Unauthorized {
                error_code: 401,
                message: String::new()
            }
            .retryable()
        );
    }

    #[test]
    fn error_replies_keep_code_and_tell_401_from_403() {
        let body = br#"{"error_code":40101,"message":"bad credentials"}"#;
        let e = api_error(StatusCode::UNAUTHORIZED, body);
        assert!(
            matches!(
                e,
                ClientError::Unauthorized {
                    error_code: 40101,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.message(), Some("bad credentials"));
        let e = api_error(
            StatusCode::FORBIDDEN,
            br#"{"error_code":40301,"message":"no"}"#,
        );
        assert!(
            matches!(
                e,
                ClientError::Forbidden {
                    error_code: 40301,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(403));
        let e = api_error(
            StatusCode::CONFLICT,
            br#"{"error_code":409,"message":"incompatible"}"#,
        );
        assert_eq!(e.error_code(), Some(INCOMPATIBLE_SCHEMA));
        // A proxy's HTML page: the status stands in for the code.
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!((e.status(), e.error_code()), (Some(502), Some(502)));
        assert!(e.retryable());
    }

    #[test]
    fn debug_never_shows_credentials() {
        let c = RegistryClient::new("http://127.0.0.1:1")
            .unwrap()
            .with_credentials(Some(Credentials::Bearer("s3cret".into())));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
