//! Who may read the view through the API, checked by one middleware in front of every
//! route.
//!
//! - `iam` (the template's): the function URL's AuthType `AWS_IAM` has authenticated the
//!   caller and IAM has allowed it `lambda:InvokeFunctionUrl` before the code runs; every
//!   route only reads, so any such caller may read everything. A request without a caller
//!   (the function invoked some other way) is refused 401.
//! - `bearer` (the local twin's): `Authorization: Bearer <token>` with one of
//!   `RIFFLE_QUERY_TOKENS`. None, or another scheme: 401 with `WWW-Authenticate`; a token
//!   that is not one of them: 403. Tokens are compared in constant time.
//! - `none`: only when asked for by name (`RIFFLE_QUERY_AUTH=none`), never by default, so
//!   a query API started without settings does not serve the view to anyone who asks.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "riffle-view-query";

/// How callers prove who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anyone on the socket (asked for explicitly).
    None,
    /// One of these bearer tokens.
    Bearer(Vec<String>),
    /// The IAM caller a function URL authenticated.
    Iam,
}

/// Tokens stay out of logs and panics.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Bearer(tokens) => write!(f, "Auth::Bearer({} tokens)", tokens.len()),
            Auth::Iam => f.write_str("Auth::Iam"),
        }
    }
}

impl Auth {
    /// From `RIFFLE_QUERY_AUTH` (`none`, `bearer`, `iam`) and `RIFFLE_QUERY_TOKENS`
    /// (comma-separated). Unset, the mode is `bearer` when tokens are set; with neither the
    /// API refuses to start.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Auth, Error> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let tokens: Vec<String> = set("RIFFLE_QUERY_TOKENS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mode = set("RIFFLE_QUERY_AUTH").map(|m| m.trim().to_ascii_lowercase());
        match (mode.as_deref(), tokens.is_empty()) {
            (Some("bearer") | None, false) => Ok(Auth::Bearer(tokens)),
            (Some("bearer"), true) => Err(Error::Config(
                "RIFFLE_QUERY_AUTH=bearer needs RIFFLE_QUERY_TOKENS (comma-separated)".into(),
            )),
            (None, true) => Err(Error::Config(
                "set RIFFLE_QUERY_TOKENS (bearer tokens callers must send), or \
                 RIFFLE_QUERY_AUTH=iam behind a function URL, or RIFFLE_QUERY_AUTH=none to \
                 serve the view to anyone who can reach the socket"
                    .into(),
            )),
            (Some("iam" | "none"), false) => Err(Error::Config(format!(
                "RIFFLE_QUERY_TOKENS has no meaning with RIFFLE_QUERY_AUTH={}",
                mode.unwrap_or_default()
            ))),
            (Some("iam"), true) => Ok(Auth::Iam),
            (Some("none"), true) => Ok(Auth::None),
            (Some(other), _) => Err(Error::Config(format!(
                "RIFFLE_QUERY_AUTH={other}: expected bearer, iam or none"
            ))),
        }
    }

    fn check(&self, request: &Request) -> Result<(), Error> {
        match self {
            Auth::None => Ok(()),
            Auth::Iam => {
                let context = request
                    .extensions()
                    .get::<lambda_http::request::RequestContext>();
                riffle_http::caller_arn(context)
                    .map(|_| ())
                    .ok_or(Error::Unauthenticated)
            }
            Auth::Bearer(tokens) => {
                let given = request
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|h| riffle_http::credential(h, "Bearer"))
                    .ok_or(Error::Unauthenticated)?;
                // Every token is compared, matched or not.
                let mut found = false;
                for token in tokens {
                    found |= riffle_http::secret_eq(token, given);
                }
                if found { Ok(()) } else { Err(Error::Forbidden) }
            }
        }
    }

    fn challenge(&self) -> HeaderValue {
        match self {
            Auth::Iam => HeaderValue::from_static("AWS4-HMAC-SHA256"),
            _ => HeaderValue::from_static("Bearer realm=\"riffle-view-query\""),
        }
    }
}

/// The middleware: refuses the request with the API's error body, or passes it on.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    match auth.check(&request) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let challenge = matches!(e, Error::Unauthenticated).then(|| auth.challenge());
            riffle_http::with_challenge(e.into_response(), challenge)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn auth(pairs: &[(&str, &str)]) -> Result<Auth, Error> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Auth::from_lookup(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn modes_from_the_environment() {
        assert_eq!(
            auth(&[("RIFFLE_QUERY_TOKENS", "a, b")]).unwrap(),
            Auth::Bearer(vec!["a".into(), "b".into()])
        );
        assert_eq!(auth(&[("RIFFLE_QUERY_AUTH", "IAM")]).unwrap(), Auth::Iam);
        assert_eq!(auth(&[("RIFFLE_QUERY_AUTH", "none")]).unwrap(), Auth::None);
        // Nothing set is not an open API.
        assert!(
            auth(&[])
                .unwrap_err()
                .to_string()
                .contains("RIFFLE_QUERY_TOKENS")
        );
        for refused in [
            vec![("RIFFLE_QUERY_AUTH", "bearer")],
            vec![("RIFFLE_QUERY_AUTH", "iam"), ("RIFFLE_QUERY_TOKENS", "a")],
            vec![("RIFFLE_QUERY_AUTH", "none"), ("RIFFLE_QUERY_TOKENS", "a")],
            vec![("RIFFLE_QUERY_AUTH", "basic")],
        ] {
            assert!(
                matches!(auth(&refused), Err(Error::Config(_))),
                "{refused:?}"
            );
        }
        // Tokens never reach a log line through Debug.
        let shown = format!("{:?}", auth(&[("RIFFLE_QUERY_TOKENS", "s3cret")]).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
