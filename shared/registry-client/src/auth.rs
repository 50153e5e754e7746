//! Credentials for a registry that asks for them: HTTP basic (user and password) or a bearer
//! token, read from the environment so no secret has to travel on a command line.

use crate::ClientError;

/// The user name for HTTP basic authentication.
pub const USER_ENV: &str = "RIFFLE_REGISTRY_USER";
/// The password that goes with [`USER_ENV`].
pub const PASSWORD_ENV: &str = "RIFFLE_REGISTRY_PASSWORD";
/// A bearer token, the alternative to a user and password.
pub const TOKEN_ENV: &str = "RIFFLE_REGISTRY_TOKEN";

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
        }
    }
}

impl Credentials {
    /// Credentials from the process environment, `None` when none are set.
    ///
    /// # Errors
    /// A half-given pair (user without password or the reverse), or both a user and a token:
    /// guessing which one was meant would send the wrong secret.
    pub fn from_env() -> Result<Option<Self>, ClientError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Credentials::from_env`], reading variables through `var` (a map in tests).
    ///
    /// # Errors
    /// As [`Credentials::from_env`].
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ClientError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
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

    /// Adds the `Authorization` header to `request`.
    pub(crate) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credentials::Basic { user, password } => request.basic_auth(user, Some(password)),
            Credentials::Bearer(token) => request.bearer_auth(token),
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
