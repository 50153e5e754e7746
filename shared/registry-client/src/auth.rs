//! Credentials for a registry that asks for them: HTTP basic (user and password), a bearer
//! token, or AWS SigV4 signing (the registry on AWS is a Lambda function URL with AuthType
//! `AWS_IAM`), read from the environment so no secret has to travel on a command line.

use crate::ClientError;

/// The user name for HTTP basic authentication.
pub const USER_ENV: &str = "RIFFLE_REGISTRY_USER";
/// The password that goes with [`USER_ENV`].
pub const PASSWORD_ENV: &str = "RIFFLE_REGISTRY_PASSWORD";
/// A bearer token, the alternative to a user and password.
pub const TOKEN_ENV: &str = "RIFFLE_REGISTRY_TOKEN";
/// `1`: sign every request with SigV4 (service `lambda`, the SDK's default credentials and
/// region); `0` or unset: do not. Exclusive with the other three, because SigV4 takes the
/// `Authorization` header they would use.
pub const SIGV4_ENV: &str = "RIFFLE_REGISTRY_SIGV4";

/// How the client proves who it is. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// AWS SigV4 with the default credential chain: no secret is held here, the keys are
    /// resolved (and refreshed) by the SDK when a request is signed.
    Iam,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Iam => f.write_str("Iam"),
        }
    }
}

impl Credentials {
    /// Credentials from the process environment, `None` when none are set.
    ///
    /// # Errors
    /// A half-given pair (user without password or the reverse), more than one of a user, a
    /// token and [`SIGV4_ENV`]`=1` (guessing which one was meant would send the wrong
    /// secret), or a [`SIGV4_ENV`] other than `0`/`1`.
    pub fn from_env() -> Result<Option<Self>, ClientError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Credentials::from_env`], reading variables through `var` (a map in tests).
    ///
    /// # Errors
    /// As [`Credentials::from_env`].
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ClientError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let sigv4 = match get(SIGV4_ENV).as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(ClientError::Config(format!(
                    "{SIGV4_ENV}={other:?}: expected 0 or 1"
                )));
            }
        };
        if sigv4 {
            return match (get(USER_ENV), get(PASSWORD_ENV), get(TOKEN_ENV)) {
                (None, None, None) => Ok(Some(Credentials::Iam)),
                _ => Err(ClientError::Config(format!(
                    "{SIGV4_ENV}=1 and {USER_ENV}/{PASSWORD_ENV}/{TOKEN_ENV} are set; \
                     SigV4 uses the Authorization header, set one of them"
                ))),
            };
        }
        match (get(USER_ENV), get(PASSWORD_ENV), get(TOKEN_ENV)) {
            (None, None, None) => Ok(None),
            (None, None, Some(token)) => Ok(Some(Credentials::Bearer(token))),
            (Some(user), Some(password), None) => Ok(Some(Credentials::Basic { user, password })),
            (Some(_) | None, Some(_) | None, Some(_)) => Err(ClientError::Config(format!(
                "both {TOKEN_ENV} and {USER_ENV}/{PASSWORD_ENV} are set; set one of them"
            ))),
            (Some(_), None, None) => Err(ClientError::Config(format!(
                "{USER_ENV} is set but {PASSWORD_ENV} is not"
            ))),
            (None, Some(_), None) => Err(ClientError::Config(format!(
                "{PASSWORD_ENV} is set but {USER_ENV} is not"
            ))),
        }
    }

    /// Adds the `Authorization` header to `request`; [`Credentials::Iam`] leaves it alone,
    /// as a signature covers the finished request and is added in `send`.
    pub(crate) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credentials::Basic { user, password } => request.basic_auth(user, Some(password)),
            Credentials::Bearer(token) => request.bearer_auth(token),
            Credentials::Iam => request,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Option<Credentials>, ClientError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Credentials::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn reads_basic_bearer_or_nothing() {
        assert_eq!(from(&[]).unwrap(), None);
        // An empty variable counts as unset, as a shell's `VAR=` means "no value".
        assert_eq!(from(&[(TOKEN_ENV, "")]).unwrap(), None);
        assert_eq!(
            from(&[(TOKEN_ENV, "t0k")]).unwrap(),
            Some(Credentials::Bearer("t0k".into()))
        );
        assert_eq!(
            from(&[(USER_ENV, "ci"), (PASSWORD_ENV, "pw")]).unwrap(),
            Some(Credentials::Basic {
                user: "ci".into(),
                password: "pw".into()
            })
        );
    }

    #[test]
    fn reads_sigv4_switch() {
        assert_eq!(from(&[(SIGV4_ENV, "1")]).unwrap(), Some(Credentials::Iam));
        assert_eq!(from(&[(SIGV4_ENV, "0")]).unwrap(), None);
        assert_eq!(
            from(&[(SIGV4_ENV, "0"), (TOKEN_ENV, "t")]).unwrap(),
            Some(Credentials::Bearer("t".into()))
        );
        for pairs in [
            &[(SIGV4_ENV, "yes")][..],
            &[(SIGV4_ENV, "1"), (TOKEN_ENV, "t")][..],
            &[(SIGV4_ENV, "1"), (USER_ENV, "ci"), (PASSWORD_ENV, "pw")][..],
            &[(SIGV4_ENV, "1"), (USER_ENV, "ci")][..],
        ] {
            assert!(
                matches!(from(pairs), Err(ClientError::Config(_))),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn refuses_ambiguous_or_half_given_credentials() {
        for pairs in [
            &[(USER_ENV, "ci")][..],
            &[(PASSWORD_ENV, "pw")][..],
            &[(USER_ENV, "ci"), (PASSWORD_ENV, "pw"), (TOKEN_ENV, "t")][..],
            &[(USER_ENV, "ci"), (TOKEN_ENV, "t")][..],
        ] {
            assert!(
                matches!(from(pairs), Err(ClientError::Config(_))),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let basic = Credentials::Basic {
            user: "ci".into(),
            password: "hunter2".into(),
        };
        let bearer = Credentials::Bearer("s3cret-token".into());
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(format!("{basic:?}").contains("ci"));
        assert!(!format!("{bearer:?}").contains("s3cret"));
    }
}
