//! riffle-http: what Riffle's HTTP functions (the schema registry, the view query API)
//! share: served by a Lambda function URL on AWS and on a loopback socket everywhere else,
//! with the same router; credentials compared in constant time; the IAM caller a function
//! URL authenticated.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::http::HeaderValue;
use lambda_http::request::RequestContext;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// Where a locally served function listens unless told otherwise: loopback, any free port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:0";

/// How a function is served, from the environment: the same settings for every HTTP
/// function, only the name of the address variable differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    /// Local listen address.
    pub addr: SocketAddr,
    /// Running inside Lambda (`AWS_LAMBDA_RUNTIME_API` is set).
    pub lambda: bool,
    /// Stop when stdin closes (`RIFFLE_EXIT_ON_STDIN_EOF=1`), so a parent that dies takes
    /// its child servers with it.
    pub exit_on_stdin_eof: bool,
}

impl Serving {
    /// Reads `addr_var` (default [`DEFAULT_ADDR`]), `AWS_LAMBDA_RUNTIME_API` and
    /// `RIFFLE_EXIT_ON_STDIN_EOF` through `var`.
    ///
    /// # Errors
    /// The address does not parse.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
        addr_var: &str,
    ) -> Result<Self, String> {
        let addr_text = var(addr_var)
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = addr_text
            .parse()
            .map_err(|e| format!("{addr_var}={addr_text}: {e}"))?;
        Ok(Serving {
            addr,
            lambda: var("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty()),
            exit_on_stdin_eof: var("RIFFLE_EXIT_ON_STDIN_EOF").as_deref() == Some("1"),
        })
    }

    /// Serves `app` as these settings say ([`run`]).
    ///
    /// # Errors
    /// The server or the Lambda runtime failed.
    pub async fn run(self, app: Router) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        run(app, self.lambda, self.addr, self.exit_on_stdin_eof).await
    }
}

/// The line prefix the local orchestrator waits for on stdout.
pub const LISTENING_PREFIX: &str = "LISTENING";

/// Binds `addr` and announces the bound address as `LISTENING http://<addr>` on stdout.
///
/// # Errors
/// The address cannot be bound, or stdout is gone.
pub async fn bind_and_announce(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("bound socket has no address: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{LISTENING_PREFIX} http://{bound}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot announce the address: {e}"))?;
    Ok(listener)
}

/// Serves `app` on `listener` until `shutdown` completes.
///
/// # Errors
/// The server failed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// Serves `app` under Lambda when `lambda` (the function URL's events), else on `addr`
/// (announced on stdout) until SIGTERM, SIGINT or, if `exit_on_stdin_eof`, stdin closing.
///
/// # Errors
/// The server or the Lambda runtime failed.
pub async fn run(
    app: Router,
    lambda: bool,
    addr: SocketAddr,
    exit_on_stdin_eof: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if lambda {
        return lambda_http::run(app).await;
    }
    let listener = bind_and_announce(addr).await?;
    serve(listener, app, shutdown_signal(exit_on_stdin_eof)).await?;
    Ok(())
}

/// Completes on SIGTERM, SIGINT or, if `on_stdin_eof`, when stdin closes.
pub async fn shutdown_signal(on_stdin_eof: bool) {
    let stdin_closed = async {
        if on_stdin_eof {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            // A plain thread, not tokio's stdin: a blocking read left pending in tokio's
            // pool would hold up runtime shutdown; a detached thread dies with the process.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                let _ = tx.send(());
            });
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        () = stdin_closed => tracing::info!("stdin closed: shutting down"),
    }
}

/// `response` (a refusal) with `WWW-Authenticate: challenge` when the refusal asks for a
/// credential (401): what the caller should send, as RFC 9110 asks of a 401.
pub fn with_challenge(
    mut response: axum::response::Response,
    challenge: Option<HeaderValue>,
) -> axum::response::Response {
    if let Some(challenge) = challenge {
        response
            .headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The credential after `scheme ` in an `Authorization` header, if the header uses that
/// scheme (compared without case, as RFC 9110 says).
pub fn credential<'a>(header: &'a HeaderValue, scheme: &str) -> Option<&'a str> {
    let text = header.to_str().ok()?.trim();
    let (given, rest) = text.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// Equality in time independent of where (or whether) the inputs differ: both are hashed
/// to fixed-size digests, then every byte pair is folded in.
pub fn secret_eq(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The caller's ARN, from the context lambda_http attached to the request: a function URL
/// request (payload format 2.0, read as API Gateway v2) with AuthType `AWS_IAM` carries
/// `requestContext.authorizer.iam.userArn`. Other contexts (REST API, ALB, a function URL
/// without IAM auth) and requests with none (served on a socket) have no caller.
pub fn caller_arn(context: Option<&RequestContext>) -> Option<&str> {
    match context? {
        RequestContext::ApiGatewayV2(context) => context
            .authorizer
            .as_ref()?
            .iam
            .as_ref()?
            .user_arn
            .as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_by_scheme() {
        let header = HeaderValue::from_static("bearer  s3cret ");
        assert_eq!(credential(&header, "Bearer"), Some("s3cret"));
        assert_eq!(credential(&header, "Basic"), None);
        assert_eq!(
            credential(&HeaderValue::from_static("Bearer"), "Bearer"),
            None
        );
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(secret_eq("token", "token"));
        assert!(!secret_eq("token", "tokem"));
        assert!(!secret_eq("token", "token2"));
        assert!(!secret_eq("", "x"));
    }
}
