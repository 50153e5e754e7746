//! Who may call the registry: HTTP Basic users or bearer tokens, checked by one middleware
//! in front of every route.
//!
//! Configured from the environment ([`Auth::from_lookup`]):
//! - `RIFFLE_REGISTRY_AUTH`: `none`, `basic` or `bearer`. Unset, it follows what else is set
//!   (`RIFFLE_REGISTRY_USERS` means basic, `RIFFLE_REGISTRY_TOKENS` bearer) and is `none`
//!   when nothing is, so a local registry started without auth settings stays open;
//! - `RIFFLE_REGISTRY_USERS`: `user:password[,user:password...]` (basic);
//! - `RIFFLE_REGISTRY_TOKENS`: `token[,token...]` (bearer);
//! - `RIFFLE_REGISTRY_READERS`: users (basic) or tokens (bearer) that may only read;
//! - `RIFFLE_REGISTRY_OPEN_READS=1`: GET and HEAD need no credential.
//!
//! Reads are GET and HEAD, plus the two POSTs that change nothing: the lookup
//! (`POST /subjects/{subject}`) and compatibility checks (`POST /compatibility/...`), which a
//! read-only credential may use. Everything else is a write and needs a credential that is
//! not read-only.
//!
//! Replies: no credential or a wrong one -> 401 (40101) with `WWW-Authenticate`; a read-only
//! credential writing -> 403 (40301). Error bodies never echo what was sent. Secrets are
//! compared through their SHA-256 digests with a fold over every byte, so the time taken
//! tells nothing about how much of a guess was right, nor its length.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "riffle-schema-registry";

/// How callers prove who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// Anyone may do anything: locally, and on AWS where IAM guards the function URL.
    None,
    /// HTTP Basic: (user, password) pairs.
    Basic(Vec<(String, String)>),
    /// `Authorization: Bearer <token>`.
    Bearer(Vec<String>),
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
        let mode = match mode.as_str() {
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
                    "RIFFLE_REGISTRY_AUTH={other}: expected none, basic or bearer"
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
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<()> {
        let identity = match &self.mode {
            Mode::None => return Ok(()),
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
            _ => "Basic",
        };
        HeaderValue::from_str(&format!("{scheme} realm=\"{REALM}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"))
    }
}

/// The middleware: refuses the request with the API's error body, or passes it on.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    match auth.check(
        request.method(),
        request.uri().path(),
        request.headers().get(AUTHORIZATION),
    ) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let challenge = matches!(e, Error::Unauthenticated);
            let mut response = e.into_response();
            if challenge {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, auth.challenge());
            }
            response
        }
    }
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

/// The credential after `scheme ` in the header, if the header uses that scheme.
fn credential<'a>(header: &'a HeaderValue, scheme: &str) -> Option<&'a str> {
    let text = header.to_str().ok()?.trim();
    let (given, rest) = text.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
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

/// Equality in time independent of where (or whether) the inputs differ: both are hashed
/// to fixed-size digests, then every byte pair is folded in.
fn secret_eq(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
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
