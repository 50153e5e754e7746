//! The registry's administrative calls: subjects and their versions, compatibility checks and
//! compatibility levels, in the Confluent REST API's shapes.

use std::fmt;
use std::str::FromStr;

use riffle_codec::registered::DataContract;
use serde::Deserialize;

use crate::{ClientError, CompatibilityLevel, RegistryClient, SUBJECT_NOT_FOUND, SubjectVersion};

/// The API's error code for a subject without a subject-level compatibility level.
pub const SUBJECT_LEVEL_NOT_CONFIGURED: u32 = 40408;

/// Which version of a subject a call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    /// The highest version.
    Latest,
    /// One version number.
    Number(u32),
}

impl From<u32> for VersionRef {
    fn from(n: u32) -> Self {
        VersionRef::Number(n)
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for VersionRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(VersionRef::Number(n)),
            _ => Err(format!(
                "{s:?} is not a version (a number from 1, or \"latest\")"
            )),
        }
    }
}

/// The registry's answer to "may this schema follow that version?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// Whether the schema may be registered.
    pub is_compatible: bool,
    /// Why not, one line per problem (empty when compatible, or when the registry gives none).
    pub messages: Vec<String>,
}

#[derive(Deserialize)]
struct CompatibilityReply {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<serde_json::Value>,
}

/// Config replies name the level `compatibilityLevel` (GET) or `compatibility` (PUT).
#[derive(Deserialize)]
struct ConfigReply {
    #[serde(rename = "compatibilityLevel", alias = "compatibility")]
    level: String,
}

impl RegistryClient {
    /// Every subject with at least one version.
    pub async fn subjects(&self) -> Result<Vec<String>, ClientError> {
        let request = self.http.get(self.url(&["subjects"])?);
        self.send(request).await
    }

    /// The versions of `subject`, ascending.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, ClientError> {
        let request = self.http.get(self.url(&["subjects", subject, "versions"])?);
        let mut versions: Vec<u32> = self.send(request).await?;
        versions.sort_unstable();
        Ok(versions)
    }

    /// One version of `subject`.
    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
    ) -> Result<SubjectVersion, ClientError> {
        let v = version.to_string();
        let request = self
            .http
            .get(self.url(&["subjects", subject, "versions", &v])?);
        self.send(request).await
    }

    /// The version of `subject` that holds `schema_json`, with its id.
    ///
    /// # Errors
    /// `40401` when the subject has no versions, `40403` when it does but not this schema.
    pub async fn lookup(
        &self,
        subject: &str,
        schema_json: &str,
    ) -> Result<SubjectVersion, ClientError> {
        self.lookup_with(subject, schema_json, &DataContract::default())
            .await
    }

    /// [`RegistryClient::lookup`] of a schema with its contract fields: the version that
    /// holds both (without fields, the latest version holding the schema, ADR 0020).
    ///
    /// # Errors
    /// As [`RegistryClient::lookup`].
    pub async fn lookup_with(
        &self,
        subject: &str,
        schema_json: &str,
        contract: &DataContract,
    ) -> Result<SubjectVersion, ClientError> {
        let request = self
            .http
            .post(self.url(&["subjects", subject])?)
            .header(reqwest::header::CONTENT_TYPE, crate::CONTENT_TYPE_V1)
            .body(schema_body_with(schema_json, contract));
        self.send(request).await
    }

    /// Asks whether `schema_json` may follow `version` of `subject` under the subject's level,
    /// with the reasons when it may not.
    ///
    /// # Errors
    /// `40401`/`40402` when the subject or version does not exist (the caller decides whether
    /// "nothing registered yet" counts as compatible).
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema_json: &str,
        version: VersionRef,
    ) -> Result<Compatibility, ClientError> {
        self.check_compatibility_with(subject, schema_json, &DataContract::default(), version)
            .await
    }

    /// [`RegistryClient::check_compatibility`] of a schema with its contract fields: a
    /// contract that rejects what the version's accepts is incompatible too (ADR 0020).
    ///
    /// # Errors
    /// As [`RegistryClient::check_compatibility`].
    pub async fn check_compatibility_with(
        &self,
        subject: &str,
        schema_json: &str,
        contract: &DataContract,
        version: VersionRef,
    ) -> Result<Compatibility, ClientError> {
        let v = version.to_string();
        let mut url = self.url(&["compatibility", "subjects", subject, "versions", &v])?;
        url.query_pairs_mut().append_pair("verbose", "true");
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, crate::CONTENT_TYPE_V1)
            .body(schema_body_with(schema_json, contract));
        let reply: CompatibilityReply = self.send(request).await?;
        Ok(Compatibility {
            is_compatible: reply.is_compatible,
            messages: reply
                .messages
                .into_iter()
                .map(|m| match m {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
        })
    }

    /// The compatibility level in force: `subject`'s own, else the global one (`None` asks for
    /// the global level directly).
    pub async fn config(&self, subject: Option<&str>) -> Result<CompatibilityLevel, ClientError> {
        if let Some(subject) = subject {
            let mut url = self.url(&["config", subject])?;
            url.query_pairs_mut().append_pair("defaultToGlobal", "true");
            match self.send::<ConfigReply>(self.http.get(url)).await {
                Ok(reply) => return parse_level(&reply.level),
                // A subject without a level of its own (or without versions) follows the
                // global level; registries that ignore defaultToGlobal say so with these codes.
                Err(e)
                    if matches!(
                        e.error_code(),
                        Some(SUBJECT_LEVEL_NOT_CONFIGURED | SUBJECT_NOT_FOUND)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        let reply: ConfigReply = self.send(self.http.get(self.url(&["config"])?)).await?;
        parse_level(&reply.level)
    }

    /// Sets the compatibility level of `subject` (`None`: the global level); returns the level
    /// the registry now holds.
    pub async fn set_config(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<CompatibilityLevel, ClientError> {
        let url = match subject {
            Some(subject) => self.url(&["config", subject])?,
            None => self.url(&["config"])?,
        };
        let body = serde_json::json!({ "compatibility": level.as_str() });
        let request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, crate::CONTENT_TYPE_V1)
            .body(body.to_string());
        let reply: ConfigReply = self.send(request).await?;
        parse_level(&reply.level)
    }
}

/// The body of register, lookup and compatibility requests.
/// A register, lookup or compatibility body, with the contract fields when there are any.
pub(crate) fn schema_body_with(schema_json: &str, contract: &DataContract) -> String {
    let mut body = serde_json::json!({ "schema": schema_json, "schemaType": "AVRO" });
    if let Some(metadata) = &contract.metadata {
        body["metadata"] = metadata.clone();
    }
    if let Some(rule_set) = &contract.rule_set {
        body["ruleSet"] = rule_set.clone();
    }
    body.to_string()
}

fn parse_level(text: &str) -> Result<CompatibilityLevel, ClientError> {
    text.parse()
        .map_err(|e: crate::UnknownLevel| ClientError::Decode(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn version_refs_parse_as_the_api_spells_them() {
        assert_eq!("latest".parse::<VersionRef>().unwrap(), VersionRef::Latest);
        assert_eq!("3".parse::<VersionRef>().unwrap(), VersionRef::Number(3));
        for bad in ["0", "-2", "", "v1"] {
            assert!(bad.parse::<VersionRef>().is_err(), "{bad}");
        }
        assert_eq!(VersionRef::Number(12).to_string(), "12");
    }

    #[test]
    fn config_replies_of_get_and_put_both_read() {
        let get: ConfigReply = serde_json::from_str(r#"{"compatibilityLevel":"FULL"}"#).unwrap();
        let put: ConfigReply = serde_json::from_str(r#"{"compatibility":"NONE"}"#).unwrap();
        assert_eq!(parse_level(&get.level).unwrap(), CompatibilityLevel::Full);
        assert_eq!(parse_level(&put.level).unwrap(), CompatibilityLevel::None);
    }
}
