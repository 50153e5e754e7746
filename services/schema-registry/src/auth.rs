//! Who may call the registry: HTTP Basic users or bearer tokens, or on AWS the caller's IAM
//! principal, checked by one middleware in front of every route.
//!
//! Configured from the environment ([`Auth::from_lookup`]):
//! - `RIFFLE_REGISTRY_AUTH`: `none`, `basic`, `bearer` or `iam`. Unset, it follows what else
//!   is set (`RIFFLE_REGISTRY_USERS` means basic, `RIFFLE_REGISTRY_TOKENS` bearer) and is
//!   `none` when nothing is, so a local registry started without auth settings stays open;
//!   `iam` is only ever chosen explicitly;
//! - `RIFFLE_REGISTRY_USERS`: `user:password[,user:password...]` (basic);
//! - `RIFFLE_REGISTRY_TOKENS`: `token[,token...]` (bearer);
//! - `RIFFLE_REGISTRY_READERS`: users (basic) or tokens (bearer) that may only read; in
//!   `iam` mode, reader principals;
//! - `RIFFLE_REGISTRY_OPEN_READS=1`: GET and HEAD need no credential (not with `iam`);
//! - `RIFFLE_REGISTRY_ADMINS`, `RIFFLE_REGISTRY_WRITERS`, `RIFFLE_REGISTRY_SUBJECT_WRITERS`:
//!   `iam` only, see [`iam`] for the roles and the syntax.
//!
//! Reads are GET and HEAD, plus the two POSTs that change nothing: the lookup
//! (`POST /subjects/{subject}`) and compatibility checks (`POST /compatibility/...`), which a
//! read-only credential may use. Everything else is a write and needs a credential that is
//! not read-only; in `iam` mode registering is told apart from the rest (deletes and levels),
//! by the route axum matched, so a grant for one subject is checked against the subject the
//! handler will see.
//!
//! Replies: no credential or a wrong one -> 401 (40101) with `WWW-Authenticate`; a read-only
//! credential writing -> 403 (40301). In `iam` mode: no IAM caller in the request -> 401
//! (40101); a caller not allowed the operation -> 403 (40301) naming the principal (and the
//! subject, for a registration), since IAM has already authenticated it. Error bodies never
//! echo a secret that was sent. Secrets are compared through their SHA-256 digests with a
//! fold over every byte, so the time taken tells nothing about how much of a guess was right,
//! nor its length.

pub mod iam;

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use riffle_http::{credential, secret_eq};

use self::iam::{Action, Rules};
use crate::api::{REGISTER_ROUTE, SUBJECT_PARAM};
use crate::error::{Error, Result};

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "riffle-schema-registry";

/// How callers prove who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// Anyone may do anything: locally, and in tests.
    None,
    /// HTTP Basic: (user, password) pairs.
    Basic(Vec<(String, String)>),
    /// `Authorization: Bearer <token>`.
    Bearer(Vec<String>),
    /// The IAM principal a Lambda function URL (AuthType `AWS_IAM`) authenticated, mapped
    /// to a role by [`Rules`]. Only under Lambda: elsewhere no request carries a caller.
    Iam(Rules),
}

/// The registry's access rules.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    mode: Mode,
    /// Users or tokens that may only read.
    readers: Vec<String>,
    /// GET and HEAD without a credential.
    open_reads: bool,
}

/// Secrets stay out of logs and panics.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::None => "none".to_owned(),
            Mode::Basic(users) => format!("basic ({} users)", users.len()),
            Mode::Bearer(tokens) => format!("bearer ({} tokens)", tokens.len()),
            Mode::Iam(rules) => format!("iam ({})", rules.summary()),
        };
        f.debug_struct("Auth")
            .field("mode", &mode)
            .field("readers", &self.readers.len())
            .field("open_reads", &self.open_reads)
            .finish()
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth::none()
    }
}

impl Auth {
    /// No checks at all.
    pub fn none() -> Self {
        Auth {
            mode: Mode::None,
            readers: Vec::new(),
            open_reads: false,
        }
    }

    /// Basic auth over `users` (user, password).
    pub fn basic(users: Vec<(String, String)>) -> Self {
        Auth {
            mode: Mode::Basic(users),
            ..Auth::none()
        }
    }

    /// Bearer auth over `tokens`.
    pub fn bearer(tokens: Vec<String>) -> Self {
        Auth {
            mode: Mode::Bearer(tokens),
            ..Auth::none()
        }
    }

    /// Callers authorized by their IAM principal under `rules`.
    pub fn iam(rules: Rules) -> Self {
        Auth {
            mode: Mode::Iam(rules),
            ..Auth::none()
        }
    }

    /// The same rules, with `readers` (users or tokens) limited to reads.
    pub fn with_readers(mut self, readers: Vec<String>) -> Self {
        self.readers = readers;
        self
    }

    /// The same rules, with GET and HEAD open to callers without a credential.
    pub fn with_open_reads(mut self, open: bool) -> Self {
        self.open_reads = open;
        self
    }

    /// The mode in force.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Reads the variables described in the module docs through `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let users = set("RIFFLE_REGISTRY_USERS");
        let tokens = set("RIFFLE_REGISTRY_TOKENS");
        let mode = match set("RIFFLE_REGISTRY_AUTH").map(|m| m.trim().to_ascii_lowercase()) {
            Some(mode) => mode,
            None => match (&users, &tokens) {
                (Some(_), Some(_)) => {
                    return Err(Error::Config(
                        "both RIFFLE_REGISTRY_USERS and RIFFLE_REGISTRY_TOKENS are set; choose with RIFFLE_REGISTRY_AUTH".into(),
                    ));
                }
                (Some(_), None) => "basic".to_owned(),
                (None, Some(_)) => "bearer".to_owned(),
                (None, None) => "none".to_owned(),
            },
        };
        let iam_only = [iam::ADMINS_ENV, iam::WRITERS_ENV, iam::SUBJECT_WRITERS_ENV];
        if mode != "iam"
            && let Some(name) = iam_only.iter().find(|name| set(name).is_some())
        {
            // Role lists without the mode that reads them would look like a restriction and
            // be none.
            return Err(Error::Config(format!(
                "{name} is set but RIFFLE_REGISTRY_AUTH={mode}: it only applies with iam"
            )));
        }
        let mode = match mode.as_str() {
            "iam" => {
                let stray = [
                    "RIFFLE_REGISTRY_USERS",
                    "RIFFLE_REGISTRY_TOKENS",
                    "RIFFLE_REGISTRY_OPEN_READS",
                ];
                if let Some(name) = stray.iter().find(|name| set(name).is_some()) {
                    return Err(Error::Config(format!(
                        "{name} has no meaning with RIFFLE_REGISTRY_AUTH=iam"
                    )));
                }
                return Ok(Auth::iam(Rules::from_lookup(set)?));
            }
            "none" => {
                if users.is_some() || tokens.is_some() {
                    return Err(Error::Config(
                        "RIFFLE_REGISTRY_AUTH=none but credentials are configured".into(),
                    ));
                }
                Mode::None
            }
            "basic" => Mode::Basic(parse_users(users.as_deref().unwrap_or_default())?),
            "bearer" => Mode::Bearer(parse_list(
                "RIFFLE_REGISTRY_TOKENS",
                tokens.as_deref().unwrap_or_default(),
            )?),
            other => {
                return Err(Error::Config(format!(
                    "RIFFLE_REGISTRY_AUTH={other}: expected none, basic, bearer or iam"
                )));
            }
        };
        let readers = match set("RIFFLE_REGISTRY_READERS") {
            Some(list) => parse_list("RIFFLE_REGISTRY_READERS", &list)?,
            None => Vec::new(),
        };
        let open_reads = set("RIFFLE_REGISTRY_OPEN_READS")
            .is_some_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"));
        Ok(Auth {
            mode,
            readers,
            open_reads,
        })
    }

    /// Whether a request of `method` to `path` with this `Authorization` header may pass.
    /// In `iam` mode the answer is in the request itself ([`require`]), so this refuses.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<()> {
        let identity = match &self.mode {
            Mode::None => return Ok(()),
            Mode::Iam(_) => return Err(Error::NoIamCaller),
            Mode::Basic(users) => authorization.map(|h| basic_user(users, h)),
            Mode::Bearer(tokens) => authorization.map(|h| bearer_token(tokens, h)),
        };
        let read = is_read(method, path);
        match identity {
            None if self.open_reads && matches!(*method, Method::GET | Method::HEAD) => Ok(()),
            None | Some(None) => Err(Error::Unauthenticated),
            Some(Some(identity)) => {
                let read_only = self.readers.contains(&identity);
                if read_only && !read {
                    Err(Error::Forbidden)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn challenge(&self) -> HeaderValue {
        let scheme = match self.mode {
            Mode::Bearer(_) => "Bearer",
            // What the function URL wants: a SigV4 signature.
            Mode::Iam(_) => "AWS4-HMAC-SHA256",
            _ => "Basic",
        };
        HeaderValue::from_str(&format!("{scheme} realm=\"{REALM}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"))
    }
}

/// The middleware: refuses the request with the API's error body, or passes it on.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let (verdict, request) = match &auth.mode {
        Mode::Iam(rules) => {
            let (mut parts, body) = request.into_parts();
            let verdict = authorize_iam(rules, &mut parts).await;
            (verdict, Request::from_parts(parts, body))
        }
        _ => {
            let verdict = auth.check(
                request.method(),
                request.uri().path(),
                request.headers().get(AUTHORIZATION),
            );
            (verdict, request)
        }
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let challenge =
                matches!(e, Error::Unauthenticated | Error::NoIamCaller).then(|| auth.challenge());
            riffle_http::with_challenge(e.into_response(), challenge)
        }
    }
}

/// The caller (from lambda_http's request context) against `rules`. Refusals are logged
/// with the caller: in `iam` mode one means a role missing from the lists, or a principal
/// trying what it was not given.
async fn authorize_iam(rules: &Rules, parts: &mut Parts) -> Result<()> {
    let action = action_of(parts).await;
    let caller = iam::caller_arn(
        parts
            .extensions
            .get::<lambda_http::request::RequestContext>(),
    );
    let verdict = rules.authorize(caller, &action);
    if let Err(e) = &verdict {
        tracing::warn!(
            caller = caller.unwrap_or("none"),
            method = %parts.method,
            path = parts.uri.path(),
            error = %e,
            "request refused"
        );
    }
    verdict
}

/// What the request asks, for [`Rules`]. A registration is the route axum matched with the
/// subject as axum decoded it, the same value the handler gets; anything not recognized as
/// a read or a registration is [`Action::Manage`], so an unknown shape needs an admin.
async fn action_of(parts: &mut Parts) -> Action {
    if is_read(&parts.method, parts.uri.path()) {
        return Action::Read;
    }
    let register = parts.method == Method::POST
        && parts
            .extensions
            .get::<MatchedPath>()
            .is_some_and(|m| m.as_str() == REGISTER_ROUTE);
    if register
        && let Ok(params) = RawPathParams::from_request_parts(parts, &()).await
        && let Some((_, subject)) = params.iter().find(|(name, _)| *name == SUBJECT_PARAM)
    {
        return Action::Register(subject.to_owned());
    }
    Action::Manage
}

/// GET and HEAD, the lookup and the compatibility checks change nothing.
fn is_read(method: &Method, path: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD) {
        return true;
    }
    if *method != Method::POST {
        return false;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["subjects", _]) || segments.first() == Some(&"compatibility")
}

/// The user whose password matches, if any. Every user is compared, matched or not.
fn basic_user(users: &[(String, String)], header: &HeaderValue) -> Option<String> {
    let encoded = credential(header, "Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    let mut found = None;
    for (known_user, known_password) in users {
        if secret_eq(known_user, user) & secret_eq(known_password, password) {
            found = Some(known_user.clone());
        }
    }
    found
}

/// The token, if it is one of `tokens`. Every token is compared, matched or not.
fn bearer_token(tokens: &[String], header: &HeaderValue) -> Option<String> {
    let given = credential(header, "Bearer")?;
    let mut found = None;
    for token in tokens {
        if secret_eq(token, given) {
            found = Some(token.clone());
        }
    }
    found
}

fn parse_list(name: &str, list: &str) -> Result<Vec<String>> {
    let items: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err(Error::Config(format!("{name} lists nothing")));
    }
    Ok(items)
}

fn parse_users(list: &str) -> Result<Vec<(String, String)>> {
    parse_list("RIFFLE_REGISTRY_USERS", list)?
        .into_iter()
        .map(|pair| match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok((user.to_owned(), password.to_owned()))
            }
            // The entry itself is not echoed: it holds a password.
            _ => Err(Error::Config(
                "RIFFLE_REGISTRY_USERS entries must be user:password".into(),
            )),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn auth(pairs: &[(&str, &str)]) -> Result<Auth> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Auth::from_lookup(|name| map.get(name).cloned())
    }

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[test]
    fn modes_from_the_environment() {
        // Mode has no Debug (it holds secrets): compared with assert!.
        let mode = |pairs: &[(&str, &str)]| auth(pairs).unwrap().mode;
        assert!(mode(&[]) == Mode::None);
        let users = vec![("a".into(), "b".into()), ("c".into(), "d:e".into())];
        assert!(mode(&[("RIFFLE_REGISTRY_USERS", "a:b, c:d:e")]) == Mode::Basic(users));
        let tokens = vec!["t1".into(), "t2".into()];
        assert!(
            mode(&[
                ("RIFFLE_REGISTRY_AUTH", "Bearer"),
                ("RIFFLE_REGISTRY_TOKENS", "t1,t2")
            ]) == Mode::Bearer(tokens)
        );
        let open = auth(&[
            ("RIFFLE_REGISTRY_TOKENS", "t"),
            ("RIFFLE_REGISTRY_OPEN_READS", "1"),
            ("RIFFLE_REGISTRY_READERS", "t"),
        ])
        .unwrap();
        assert!(open.open_reads);
        assert_eq!(open.readers, vec!["t"]);
        // Debug output carries no secret.
        assert!(!format!("{open:?}").contains("\"t\""), "{open:?}");
        // iam only when asked for; READERS then holds principals.
        let iam = auth(&[
            ("RIFFLE_REGISTRY_AUTH", "IAM"),
            (
                "RIFFLE_REGISTRY_READERS",
                "arn:aws:iam::123456789012:role/R",
            ),
        ])
        .unwrap();
        assert!(matches!(iam.mode, Mode::Iam(_)));
        assert!(format!("{iam:?}").contains("1 readers"), "{iam:?}");
        assert!(
            iam.check(&Method::GET, "/subjects", None).is_err(),
            "iam decides from the request, never from a header alone"
        );
    }

    #[test]
    fn contradictory_or_empty_settings_are_refused() {
        for bad in [
            vec![("RIFFLE_REGISTRY_AUTH", "basic")],
            vec![("RIFFLE_REGISTRY_AUTH", "bearer")],
            vec![("RIFFLE_REGISTRY_AUTH", "kerberos")],
            vec![
                ("RIFFLE_REGISTRY_AUTH", "none"),
                ("RIFFLE_REGISTRY_TOKENS", "t"),
            ],
            vec![
                ("RIFFLE_REGISTRY_USERS", "a:b"),
                ("RIFFLE_REGISTRY_TOKENS", "t"),
            ],
            vec![("RIFFLE_REGISTRY_USERS", "nopassword")],
            // iam with nobody granted, or with another mode's settings; role lists without iam.
            vec![("RIFFLE_REGISTRY_AUTH", "iam")],
            vec![
                ("RIFFLE_REGISTRY_AUTH", "iam"),
                ("RIFFLE_REGISTRY_ADMINS", "arn:aws:iam::123456789012:role/A"),
                ("RIFFLE_REGISTRY_USERS", "a:secret"),
            ],
            vec![
                ("RIFFLE_REGISTRY_AUTH", "iam"),
                ("RIFFLE_REGISTRY_ADMINS", "arn:aws:iam::123456789012:role/A"),
                ("RIFFLE_REGISTRY_OPEN_READS", "1"),
            ],
            vec![("RIFFLE_REGISTRY_ADMINS", "arn:aws:iam::123456789012:role/A")],
            vec![
                ("RIFFLE_REGISTRY_AUTH", "bearer"),
                ("RIFFLE_REGISTRY_TOKENS", "t"),
                (
                    "RIFFLE_REGISTRY_SUBJECT_WRITERS",
                    "arn:aws:iam::123456789012:role/S=s",
                ),
            ],
            vec![("RIFFLE_REGISTRY_USERS", ":secret")],
            vec![
                ("RIFFLE_REGISTRY_AUTH", "bearer"),
                ("RIFFLE_REGISTRY_TOKENS", " , "),
            ],
        ] {
            let result = auth(&bad);
            assert!(matches!(result, Err(Error::Config(_))), "{bad:?}");
            assert!(!result.unwrap_err().to_string().contains("secret"));
        }
    }

    #[test]
    fn basic_credentials() {
        let users = vec![("alice".to_owned(), "pw1".to_owned())];
        assert_eq!(
            basic_user(&users, &basic("alice", "pw1")),
            Some("alice".into())
        );
        assert_eq!(basic_user(&users, &basic("alice", "pw2")), None);
        assert_eq!(basic_user(&users, &basic("bob", "pw1")), None);
        assert_eq!(
            basic_user(&users, &HeaderValue::from_static("Basic %%%")),
            None
        );
        assert_eq!(
            basic_user(&users, &HeaderValue::from_static("Bearer pw1")),
            None
        );
    }

    #[test]
    fn reads_and_writes() {
        assert!(is_read(&Method::GET, "/subjects/s/versions"));
        assert!(is_read(&Method::POST, "/subjects/s"));
        assert!(is_read(&Method::POST, "/compatibility/subjects/s/versions"));
        assert!(!is_read(&Method::POST, "/subjects/s/versions"));
        assert!(!is_read(&Method::PUT, "/config"));
        assert!(!is_read(&Method::DELETE, "/subjects/s"));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_eq("token", "token"));
        assert!(!secret_eq("token", "token2"));
        assert!(!secret_eq("token", "tokeN"));
        assert!(!secret_eq("", "x"));
    }
}
