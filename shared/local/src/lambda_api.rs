//! A local Lambda Runtime API: the HTTP interface a function's runtime polls inside Lambda
//! (`GET /2018-06-01/runtime/invocation/next`, then `POST .../{id}/response` or
//! `.../{id}/error`, and `POST .../init/error` when it cannot start). The real function
//! binaries run against it in Lambda mode (`AWS_LAMBDA_RUNTIME_API` set), so the code path
//! AWS runs (lambda_runtime's client, the raw payload, the response's JSON shape) is the
//! one tested and measured here, not only the local event source mapping.
//!
//! One function instance per server, as in a Lambda sandbox: invocations are handed out one
//! at a time in the order [`RuntimeApi::invoke`] queued them. What Lambda's own service adds
//! around it (scaling, the event source mapping's retries) is not here; the local mapping
//! in `riffle-runtime` does that part.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, oneshot};

/// The API version in every path, as Lambda serves it.
const PREFIX: &str = "/2018-06-01/runtime";
/// Lambda's limit on a synchronous invocation's request and on its response (6 MB).
pub const PAYLOAD_MAX_BYTES: usize = 6 * 1024 * 1024;
/// The header naming an error's type on `.../error` and `init/error`.
const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// How an invocation ended, as the caller of a synchronous `Invoke` would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function answered: its response body (JSON).
    Response(Vec<u8>),
    /// The function reported an error (Lambda's `X-Amz-Function-Error: Unhandled`): the
    /// type from `Lambda-Runtime-Function-Error-Type` and the body (`errorType`,
    /// `errorMessage`).
    FunctionError {
        error_type: Option<String>,
        body: Vec<u8>,
    },
}

/// One invocation answered, with its timings.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The request id the runtime was given.
    pub request_id: String,
    /// What came back.
    pub outcome: Outcome,
    /// When the runtime took the invocation (`GET .../next` answered).
    pub taken_at: Instant,
    /// When the runtime answered it.
    pub answered_at: Instant,
}

impl Answer {
    /// Time from the runtime taking the invocation to its answer.
    pub fn duration(&self) -> Duration {
        self.answered_at.saturating_duration_since(self.taken_at)
    }
}

/// Why an invocation got no answer from the function.
#[derive(Debug, thiserror::Error)]
pub enum LambdaApiError {
    /// The payload is over Lambda's 6 MB synchronous limit.
    #[error("request payload of {0} bytes is over Lambda's {PAYLOAD_MAX_BYTES}-byte limit")]
    RequestTooLarge(usize),
    /// The runtime reported that it could not start (`init/error`).
    #[error("the function failed to initialize ({error_type}): {body}")]
    InitFailed { error_type: String, body: String },
    /// No answer within the function's timeout (Lambda: "Task timed out").
    #[error("task timed out after {0:?}")]
    TimedOut(Duration),
    /// The answer was over the 6 MB response limit.
    #[error("response of {0} bytes is over Lambda's {PAYLOAD_MAX_BYTES}-byte limit")]
    ResponseTooLarge(usize),
    /// The server could not be started.
    #[error("cannot serve the runtime API: {0}")]
    Io(#[from] std::io::Error),
}

/// An invocation waiting for, or held by, the runtime.
struct Pending {
    request_id: String,
    payload: Bytes,
    trace_header: Option<String>,
    deadline: SystemTime,
    reply: oneshot::Sender<Result<Answer, LambdaApiError>>,
}

/// Held by the runtime: where its answer goes.
struct Taken {
    taken_at: Instant,
    reply: oneshot::Sender<Result<Answer, LambdaApiError>>,
}

#[derive(Default)]
struct Queues {
    waiting: VecDeque<Pending>,
    taken: HashMap<String, Taken>,
    init_error: Option<(String, String)>,
    first_poll: Option<Instant>,
}

struct Shared {
    queues: Mutex<Queues>,
    arrived: Notify,
    function_arn: String,
    next_id: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A panic elsewhere while holding the lock leaves plain data behind; go on with it.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running local Runtime API for one function instance.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    timeout: Duration,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RuntimeApi {
    /// Serves the API on a free loopback port for `function_name`, whose invocations time
    /// out after `timeout` (the function's configured `Timeout`).
    ///
    /// # Errors
    /// The port could not be bound.
    pub async fn start(function_name: &str, timeout: Duration) -> Result<Self, LambdaApiError> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            arrived: Notify::new(),
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            // Answers over the limit are read whole and refused by the handler, as Lambda
            // refuses them, rather than cut off by the framework's 2 MB default.
            .layer(DefaultBodyLimit::max(PAYLOAD_MAX_BYTES * 2))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "local Lambda runtime API stopped");
            }
        });
        Ok(RuntimeApi {
            addr,
            shared,
            timeout,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (`host:port`, no scheme, as Lambda sets it).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// When the runtime first asked for an invocation: the end of its init phase.
    pub fn first_poll(&self) -> Option<Instant> {
        self.shared.lock().first_poll
    }

    /// Invokes the function synchronously with `payload` (JSON), as `Invoke` with
    /// `RequestResponse` does, and waits for its answer. `trace_header` is passed as
    /// `Lambda-Runtime-Trace-Id` (what Lambda puts in `_X_AMZN_TRACE_ID`).
    ///
    /// # Errors
    /// The payload is too large, the function failed to initialize, timed out, or answered
    /// over the response limit.
    pub async fn invoke(
        &self,
        payload: Vec<u8>,
        trace_header: Option<String>,
    ) -> Result<Answer, LambdaApiError> {
        if payload.len() > PAYLOAD_MAX_BYTES {
            return Err(LambdaApiError::RequestTooLarge(payload.len()));
        }
        let (reply, answer) = oneshot::channel();
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("00000000-0000-4000-8000-{n:012x}");
        {
            let mut queues = self.shared.lock();
            if let Some((error_type, body)) = &queues.init_error {
                return Err(LambdaApiError::InitFailed {
                    error_type: error_type.clone(),
                    body: body.clone(),
                });
            }
            queues.waiting.push_back(Pending {
                request_id: request_id.clone(),
                payload: Bytes::from(payload),
                trace_header,
                deadline: SystemTime::now() + self.timeout,
                reply,
            });
        }
        self.shared.arrived.notify_one();
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(answer)) => answer,
            // The sender went away only with the server: the runtime can no longer answer.
            Ok(Err(_)) => Err(LambdaApiError::TimedOut(self.timeout)),
            Err(_) => {
                let mut queues = self.shared.lock();
                queues.waiting.retain(|p| p.request_id != request_id);
                queues.taken.remove(&request_id);
                Err(LambdaApiError::TimedOut(self.timeout))
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `GET .../invocation/next`: long-polls until an invocation is queued.
async fn next(State(shared): State<Arc<Shared>>) -> Response {
    loop {
        let notified = shared.arrived.notified();
        {
            let mut queues = shared.lock();
            queues.first_poll.get_or_insert_with(Instant::now);
            if let Some(pending) = queues.waiting.pop_front() {
                queues.taken.insert(
                    pending.request_id.clone(),
                    Taken {
                        taken_at: Instant::now(),
                        reply: pending.reply,
                    },
                );
                return invocation_response(
                    &shared,
                    &pending.request_id,
                    pending.deadline,
                    pending.trace_header,
                    pending.payload,
                );
            }
        }
        notified.await;
    }
}

fn invocation_response(
    shared: &Shared,
    request_id: &str,
    deadline: SystemTime,
    trace_header: Option<String>,
    payload: Bytes,
) -> Response {
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", request_id);
    put("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &shared.function_arn);
    if let Some(trace) = &trace_header {
        put("lambda-runtime-trace-id", trace);
    }
    put("content-type", "application/json");
    (StatusCode::OK, headers, payload).into_response()
}

/// `POST .../invocation/{id}/response`.
async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let outcome = if body.len() > PAYLOAD_MAX_BYTES {
        Err(LambdaApiError::ResponseTooLarge(body.len()))
    } else {
        Ok(Outcome::Response(body.to_vec()))
    };
    let too_large = outcome.is_err();
    match complete(&shared, &id, outcome) {
        Some(_) if too_large => api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the response is over Lambda's 6 MB limit",
        ),
        Some(r) => r,
        None => unknown_request(&id),
    }
}

/// `POST .../invocation/{id}/error`.
async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = headers
        .get(ERROR_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let outcome = Ok(Outcome::FunctionError {
        error_type,
        body: body.to_vec(),
    });
    complete(&shared, &id, outcome).unwrap_or_else(|| unknown_request(&id))
}

/// `POST .../init/error`: the function could not start; every invocation fails from now on.
async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = headers
        .get(ERROR_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Runtime.Unknown")
        .to_owned();
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut queues = shared.lock();
    for pending in queues.waiting.drain(..) {
        let _ = pending.reply.send(Err(LambdaApiError::InitFailed {
            error_type: error_type.clone(),
            body: body.clone(),
        }));
    }
    queues.init_error = Some((error_type, body));
    accepted()
}

/// Hands the outcome to the invoker; `None` when no invocation has that id.
fn complete(
    shared: &Shared,
    id: &str,
    outcome: Result<Outcome, LambdaApiError>,
) -> Option<Response> {
    let taken = shared.lock().taken.remove(id)?;
    let answer = outcome.map(|outcome| Answer {
        request_id: id.to_owned(),
        outcome,
        taken_at: taken.taken_at,
        answered_at: Instant::now(),
    });
    // The invoker may have timed out and gone: the answer is dropped, as Lambda drops it.
    let _ = taken.reply.send(answer);
    Some(accepted())
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn unknown_request(id: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        &format!("no invocation {id} is in progress"),
    )
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn next_of(api: &RuntimeApi) -> reqwest::Response {
        reqwest::get(format!("http://{}{PREFIX}/invocation/next", api.address()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_invocation_is_handed_out_with_lambdas_headers_and_its_answer_returned() {
        let api = Arc::new(
            RuntimeApi::start("fn", Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let invoke = tokio::spawn({
            let api = Arc::clone(&api);
            async move {
                api.invoke(br#"{"Records":[]}"#.to_vec(), Some("Root=1-abc".into()))
                    .await
            }
        });
        let next = next_of(&api).await;
        assert_eq!(next.status(), 200);
        let headers = next.headers().clone();
        let id = headers["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let deadline: u128 = headers["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(
            deadline > now && deadline <= now + 5_000,
            "{deadline} vs {now}"
        );
        assert!(
            headers["lambda-runtime-invoked-function-arn"]
                .to_str()
                .unwrap()
                .ends_with(":function:fn")
        );
        assert_eq!(headers["lambda-runtime-trace-id"], "Root=1-abc");
        assert_eq!(next.bytes().await.unwrap().as_ref(), br#"{"Records":[]}"#);
        assert!(api.first_poll().is_some());

        let client = reqwest::Client::new();
        let url = format!("http://{}{PREFIX}/invocation/{id}/response", api.address());
        let posted = client
            .post(&url)
            .body(r#"{"batchItemFailures":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
        // A second answer to the same invocation is refused, as Lambda refuses it.
        let again = client.post(&url).body("{}").send().await.unwrap();
        assert_eq!(again.status(), 400);
        assert!(again.text().await.unwrap().contains("InvalidRequestID"));

        let answer = invoke.await.unwrap().unwrap();
        assert_eq!(answer.request_id, id);
        assert_eq!(
            answer.outcome,
            Outcome::Response(br#"{"batchItemFailures":[]}"#.to_vec())
        );
    }

    #[tokio::test]
    async fn errors_and_init_errors_reach_the_invoker() {
        let api = Arc::new(
            RuntimeApi::start("fn", Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let invoke = tokio::spawn({
            let api = Arc::clone(&api);
            async move { api.invoke(b"{}".to_vec(), None).await }
        });
        let next = next_of(&api).await;
        let id = next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let client = reqwest::Client::new();
        let posted = client
            .post(format!(
                "http://{}{PREFIX}/invocation/{id}/error",
                api.address()
            ))
            .header("Lambda-Runtime-Function-Error-Type", "Runtime.Bad")
            .body(r#"{"errorType":"Bad","errorMessage":"no"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
        match invoke.await.unwrap().unwrap().outcome {
            Outcome::FunctionError { error_type, body } => {
                assert_eq!(error_type.as_deref(), Some("Runtime.Bad"));
                assert!(String::from_utf8(body).unwrap().contains("no"));
            }
            other => panic!("{other:?}"),
        }

        let posted = client
            .post(format!("http://{}{PREFIX}/init/error", api.address()))
            .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
            .body("missing variable")
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 202);
        let refused = api.invoke(b"{}".to_vec(), None).await.unwrap_err();
        assert!(
            matches!(refused, LambdaApiError::InitFailed { .. }),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn oversized_payloads_and_silent_functions_fail_as_lambda_fails_them() {
        let api = RuntimeApi::start("fn", Duration::from_millis(200))
            .await
            .unwrap();
        let big = vec![b' '; PAYLOAD_MAX_BYTES + 1];
        assert!(matches!(
            api.invoke(big, None).await.unwrap_err(),
            LambdaApiError::RequestTooLarge(_)
        ));
        // Nobody polls: the invocation times out and is no longer handed out afterwards.
        assert!(matches!(
            api.invoke(b"{}".to_vec(), None).await.unwrap_err(),
            LambdaApiError::TimedOut(_)
        ));
        assert!(api.shared.lock().waiting.is_empty());
    }
}
