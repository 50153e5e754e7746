//! The service's configuration, read once from the environment at start.

use riffle_http::Serving;

use crate::auth::{Auth, Mode};
use crate::error::{Error, Result};

/// Where a locally run registry listens unless told otherwise: loopback, any free port.
pub use riffle_http::DEFAULT_ADDR;

/// What the process needs to know before serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DynamoDB table of schemas (`RIFFLE_REGISTRY_TABLE`).
    pub table: String,
    /// Where and how it is served (`RIFFLE_REGISTRY_ADDR` locally).
    pub serving: Serving,
    /// Who may call (`RIFFLE_REGISTRY_AUTH` and friends, see [`crate::auth`]).
    pub auth: Auth,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `var` (the environment, or a map in tests).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let table = var("RIFFLE_REGISTRY_TABLE")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Config("RIFFLE_REGISTRY_TABLE is not set".into()))?;
        let serving = Serving::from_lookup(&var, "RIFFLE_REGISTRY_ADDR").map_err(Error::Config)?;
        let auth = Auth::from_lookup(&var)?;
        if matches!(auth.mode(), Mode::Iam(_)) && !serving.lambda {
            // Served on a socket, no request carries an IAM caller: every call would be
            // refused. Said at start rather than as a 401 on each call.
            return Err(Error::Config(
                "RIFFLE_REGISTRY_AUTH=iam reads the caller from a Lambda function URL's request \
                 context, and this process is not under Lambda (AWS_LAMBDA_RUNTIME_API unset): \
                 use none, basic or bearer here"
                    .into(),
            ));
        }
        Ok(Config {
            table,
            serving,
            auth,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let c = config(&[("RIFFLE_REGISTRY_TABLE", "schemas")]).unwrap();
        assert_eq!(c.serving.addr, DEFAULT_ADDR.parse().unwrap());
        assert!(!c.serving.lambda && !c.serving.exit_on_stdin_eof);
        assert_eq!(c.auth, Auth::none());
        let c = config(&[
            ("RIFFLE_REGISTRY_TABLE", "schemas"),
            ("RIFFLE_REGISTRY_ADDR", "127.0.0.1:8081"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("RIFFLE_EXIT_ON_STDIN_EOF", "1"),
        ])
        .unwrap();
        assert_eq!(c.serving.addr.port(), 8081);
        assert!(c.serving.lambda && c.serving.exit_on_stdin_eof);
    }

    #[test]
    fn iam_only_under_lambda() {
        let iam = [
            ("RIFFLE_REGISTRY_TABLE", "schemas"),
            ("RIFFLE_REGISTRY_AUTH", "iam"),
            (
                "RIFFLE_REGISTRY_READERS",
                "arn:aws:iam::123456789012:role/Reader",
            ),
        ];
        let err = config(&iam).unwrap_err();
        assert!(err.to_string().contains("not under Lambda"), "{err}");
        let mut lambda = iam.to_vec();
        lambda.push(("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"));
        assert!(matches!(config(&lambda).unwrap().auth.mode(), Mode::Iam(_)));
    }

    #[test]
    fn refuses_missing_table_and_bad_addr() {
        assert!(matches!(config(&[]), Err(Error::Config(_))));
        assert!(matches!(
            config(&[
                ("RIFFLE_REGISTRY_TABLE", "t"),
                ("RIFFLE_REGISTRY_ADDR", "nope")
            ]),
            Err(Error::Config(_))
        ));
    }
}
