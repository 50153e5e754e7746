//! The service's configuration, read once from the environment at start.

use riffle_http::Serving;

use crate::auth::Auth;
use crate::error::Error;

/// What the process needs to know before serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The view table (`RIFFLE_VIEW_TABLE`).
    pub table: String,
    /// The table holding the view's watermark item (`RIFFLE_CLAIMS_TABLE`, ADR 0021); unset,
    /// no window is reported final.
    pub claims_table: Option<String>,
    /// Where and how it is served (`RIFFLE_QUERY_ADDR` locally).
    pub serving: Serving,
    /// Who may call (`RIFFLE_QUERY_AUTH`, `RIFFLE_QUERY_TOKENS`, see [`crate::auth`]).
    pub auth: Auth,
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// A setting is missing or malformed.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `var` (the environment, or a map in tests).
    ///
    /// # Errors
    /// A setting is missing or malformed.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let table = var("RIFFLE_VIEW_TABLE")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Config("RIFFLE_VIEW_TABLE is not set".into()))?;
        let serving = Serving::from_lookup(&var, "RIFFLE_QUERY_ADDR").map_err(Error::Config)?;
        let auth = Auth::from_lookup(&var)?;
        if auth == Auth::Iam && !serving.lambda {
            return Err(Error::Config(
                "RIFFLE_QUERY_AUTH=iam reads the caller from a Lambda function URL's request \
                 context, and this process is not under Lambda: use bearer tokens here"
                    .into(),
            ));
        }
        Ok(Config {
            table,
            claims_table: var("RIFFLE_CLAIMS_TABLE").filter(|t| !t.is_empty()),
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

    fn config(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_lookup(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn reads_and_refuses() {
        let c = config(&[("RIFFLE_VIEW_TABLE", "v"), ("RIFFLE_QUERY_TOKENS", "t")]).unwrap();
        assert_eq!(c.serving.addr, riffle_http::DEFAULT_ADDR.parse().unwrap());
        assert!(!c.serving.lambda);
        assert!(matches!(
            config(&[("RIFFLE_QUERY_TOKENS", "t")]),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            config(&[
                ("RIFFLE_VIEW_TABLE", "v"),
                ("RIFFLE_QUERY_TOKENS", "t"),
                ("RIFFLE_QUERY_ADDR", "x")
            ]),
            Err(Error::Config(_))
        ));
        let iam = [("RIFFLE_VIEW_TABLE", "v"), ("RIFFLE_QUERY_AUTH", "iam")];
        assert!(
            config(&iam)
                .unwrap_err()
                .to_string()
                .contains("not under Lambda")
        );
        let mut lambda = iam.to_vec();
        lambda.push(("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"));
        assert_eq!(config(&lambda).unwrap().auth, Auth::Iam);
    }
}
