//! What gets deployed: the environment's name, the stacks (the platform and one per file under
//! `infra/services/`), their templates' parameters, and the order they go in. Pure apart from
//! reading the template files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_yaml_ng::Value;

use super::DeployError;

/// Longest environment name: it goes into stack names and into every resource name (ADR
/// 0016), some with tight limits of their own: S3 bucket names 63 (the longest,
/// `riffle-archive-logs-<env>-<account>`, is 49 at 16), SQS queue names 80.
pub const ENV_MAX_LEN: usize = 16;

/// The name of the platform stack's entry on the command line and in stack names.
pub const PLATFORM: &str = "platform";

/// A validated environment name: lowercase letters, digits and hyphens, a letter first, no
/// hyphen last, at most [`ENV_MAX_LEN`] characters. Stack names allow more; S3 bucket and
/// DynamoDB names are the narrowest places it will land, and both take exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvName(String);

impl EnvName {
    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For clap's `value_parser`.
    ///
    /// # Errors
    /// [`DeployError::InvalidEnv`] naming the rule broken.
    pub fn parse(name: &str) -> Result<EnvName, DeployError> {
        name.parse()
    }

    /// The CloudFormation stack name of one stack of this environment.
    pub fn stack_name(&self, stack: &str) -> String {
        format!("riffle-{}-{stack}", self.0)
    }

    /// A name as a template writes it in a `Fn::Sub` (`riffle-${Env}-KeyArn`) as
    /// CloudFormation names it in this environment (`riffle-dev-KeyArn`), e.g. in
    /// "No export named riffle-dev-KeyArn found".
    pub fn resolve(&self, pattern: &str) -> String {
        pattern.replace("${Env}", &self.0)
    }
}

impl FromStr for EnvName {
    type Err = DeployError;

    fn from_str(name: &str) -> Result<EnvName, DeployError> {
        let invalid = |why: &str| DeployError::InvalidEnv {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        let Some(first) = name.chars().next() else {
            return Err(invalid("it is empty"));
        };
        if name.len() > ENV_MAX_LEN {
            return Err(invalid(&format!(
                "longer than {ENV_MAX_LEN} characters (it goes into resource names)"
            )));
        }
        if !first.is_ascii_lowercase() {
            return Err(invalid("it must start with a lowercase letter"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(&format!(
                "{bad:?} is not allowed: lowercase letters, digits and '-' only"
            )));
        }
        if name.ends_with('-') {
            return Err(invalid("it must not end with '-'"));
        }
        Ok(EnvName(name.to_owned()))
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stack: its short name (`platform`, `validator`) and its template file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `platform` or the service's name (the template's file stem).
    pub name: String,
    /// The template file.
    pub template: PathBuf,
}

/// Every stack the templates under `infra` describe: the platform, then the services in file
/// name order.
///
/// # Errors
/// The platform template or the services folder is missing or unreadable.
pub fn catalogue(infra: &Path) -> Result<Vec<Target>, DeployError> {
    let platform = infra.join("platform.yaml");
    if !platform.is_file() {
        return Err(DeployError::TemplateMissing(platform));
    }
    let mut out = vec![Target {
        name: PLATFORM.to_owned(),
        template: platform,
    }];
    let services = infra.join("services");
    if !services.is_dir() {
        return Ok(out);
    }
    let io = |source| DeployError::Io {
        path: services.clone(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&services).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "yaml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            found.push(Target {
                name: stem.to_owned(),
                template: path.clone(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(found);
    Ok(out)
}

/// The stacks named on the command line (none: all of them), the platform always first:
/// every service imports its exports, so a service is never deployed against a platform
/// older than its own template expects.
///
/// # Errors
/// [`DeployError::UnknownStack`] listing the valid names.
pub fn select(all: &[Target], names: &[String]) -> Result<Vec<Target>, DeployError> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    for name in names {
        if !all.iter().any(|t| &t.name == name) {
            return Err(DeployError::UnknownStack {
                name: name.clone(),
                valid: all.iter().map(|t| t.name.clone()).collect(),
            });
        }
    }
    Ok(all
        .iter()
        .filter(|t| t.name == PLATFORM || names.contains(&t.name))
        .cloned()
        .collect())
}

/// What the deploy needs to know about a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateInfo {
    /// The file's text, sent as it is.
    pub body: String,
    /// Declared parameters: name -> whether it has a default.
    pub parameters: BTreeMap<String, bool>,
    /// Export names of its outputs (as written: a literal, or a `Fn::Sub` pattern).
    pub exports: BTreeSet<String>,
    /// Export names it imports (`Fn::ImportValue`, written the same way).
    pub imports: BTreeSet<String>,
}

impl TemplateInfo {
    /// Reads a template file.
    ///
    /// # Errors
    /// Missing, unreadable, or not a template.
    pub fn load(path: &Path) -> Result<TemplateInfo, DeployError> {
        let body = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DeployError::TemplateMissing(path.to_path_buf())
            } else {
                DeployError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        TemplateInfo::parse(path, body)
    }

    /// Parses template text; `file` is for error messages.
    ///
    /// # Errors
    /// Not YAML, or its `Parameters` is not a mapping of names.
    pub fn parse(file: &Path, body: String) -> Result<TemplateInfo, DeployError> {
        let err = |message: String| DeployError::Template {
            file: file.to_path_buf(),
            message,
        };
        let root: Value =
            serde_yaml_ng::from_str(&body).map_err(|e| err(format!("not YAML: {e}")))?;
        if root.get("Resources").and_then(Value::as_mapping).is_none() {
            return Err(err(
                "no Resources mapping: not a CloudFormation template".into()
            ));
        }
        let mut parameters = BTreeMap::new();
        if let Some(params) = root.get("Parameters") {
            let params = params
                .as_mapping()
                .ok_or_else(|| err("Parameters is not a mapping".into()))?;
            for (name, spec) in params {
                let name = name
                    .as_str()
                    .ok_or_else(|| err("a parameter name is not a string".into()))?;
                parameters.insert(name.to_owned(), spec.get("Default").is_some());
            }
        }
        let mut exports = BTreeSet::new();
        if let Some(outputs) = root.get("Outputs").and_then(Value::as_mapping) {
            for output in outputs.values() {
                if let Some(name) = output.get("Export").and_then(|e| e.get("Name")) {
                    exports.insert(export_key(name));
                }
            }
        }
        let mut imports = BTreeSet::new();
        if let Some(resources) = root.get("Resources") {
            collect_imports(resources, &mut imports);
        }
        if let Some(outputs) = root.get("Outputs") {
            collect_imports(outputs, &mut imports);
        }
        // Comments and indentation are most of a documented template's bytes. Over the
        // inline limit it goes as compact JSON, which CloudFormation reads alike: with
        // long-form intrinsics only (no `!Ref` tags) a YAML template maps onto JSON one to
        // one. What still does not fit needs --code-bucket.
        let body = if body.len() > super::TEMPLATE_BODY_MAX && !has_tags(&root) {
            serde_json::to_string(&root).map_err(|e| err(format!("not JSON-able: {e}")))?
        } else {
            body
        };
        Ok(TemplateInfo {
            body,
            parameters,
            exports,
            imports,
        })
    }
}

/// Whether `value` holds a YAML tag anywhere (`!Ref` and friends), which JSON cannot carry.
fn has_tags(value: &Value) -> bool {
    match value {
        Value::Tagged(_) => true,
        Value::Sequence(items) => items.iter().any(has_tags),
        Value::Mapping(map) => map.iter().any(|(k, v)| has_tags(k) || has_tags(v)),
        _ => false,
    }
}

/// An export name as a comparable string: the literal, or the `Fn::Sub` pattern, so
/// `riffle-${Env}-KeyArn` on both sides still matches once names carry the environment.
fn export_key(name: &Value) -> String {
    if let Some(s) = name.as_str() {
        return s.to_owned();
    }
    if let Some(s) = name.get("Fn::Sub").and_then(Value::as_str) {
        return s.to_owned();
    }
    serde_yaml_ng::to_string(name).unwrap_or_default()
}

fn collect_imports(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("Fn::ImportValue") {
                    into.insert(export_key(v));
                } else {
                    collect_imports(v, into);
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_imports(v, into)),
        Value::Tagged(t) => collect_imports(&t.value, into),
        _ => {}
    }
}

/// The stacks in an order where each comes after the stacks whose exports it imports (the
/// validator after the schema registry), otherwise in the given order. Imports nobody in the
/// list exports (a stack deployed earlier) impose nothing.
///
/// # Errors
/// [`DeployError::ImportCycle`] naming the stacks caught in it.
pub fn deploy_order<T: Clone>(
    stacks: &[(T, &TemplateInfo)],
    name: impl Fn(&T) -> String,
) -> Result<Vec<T>, DeployError> {
    let mut left: Vec<usize> = (0..stacks.len()).collect();
    let mut out = Vec::with_capacity(stacks.len());
    while !left.is_empty() {
        // The first stack none of the remaining others exports anything to.
        let ready = left.iter().position(|&i| {
            let (_, info) = &stacks[i];
            !left
                .iter()
                .any(|&j| j != i && stacks[j].1.exports.iter().any(|e| info.imports.contains(e)))
        });
        match ready {
            Some(pos) => {
                let i = left.remove(pos);
                out.push(stacks[i].0.clone());
            }
            None => {
                return Err(DeployError::ImportCycle(
                    left.iter().map(|&i| name(&stacks[i].0)).collect(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_rules() {
        for good in ["dev", "prod-eu1", "a", "x234567890123456"] {
            assert_eq!(EnvName::parse(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "empty"),
            ("Dev", "lowercase letter"),
            ("1dev", "lowercase letter"),
            ("-dev", "lowercase letter"),
            ("dev_1", "'_'"),
            ("dev.eu", "'.'"),
            ("dev-", "end with"),
            ("x2345678901234567", "longer than 16"),
        ] {
            let err = EnvName::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn stack_names_carry_the_environment() {
        let env = EnvName::parse("dev").unwrap();
        assert_eq!(env.stack_name("platform"), "riffle-dev-platform");
        assert_eq!(
            env.stack_name("schema-registry"),
            "riffle-dev-schema-registry"
        );
    }

    #[test]
    fn a_template_over_the_inline_limit_goes_as_the_same_template_in_compact_json() {
        let path = riffle_plan::project_root()
            .unwrap()
            .join("infra/platform.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() > crate::deploy::TEMPLATE_BODY_MAX,
            "the test needs a large one"
        );
        let info = TemplateInfo::parse(&path, text.clone()).unwrap();
        assert!(
            info.body.len() <= crate::deploy::TEMPLATE_BODY_MAX,
            "{}",
            info.body.len()
        );
        let sent: serde_json::Value = serde_json::from_str(&info.body).unwrap();
        let read: serde_json::Value =
            serde_json::to_value(serde_yaml_ng::from_str::<Value>(&text).unwrap()).unwrap();
        assert_eq!(sent, read);

        // Small ones go as written; tagged YAML (short-form intrinsics) is never converted.
        let small = "Resources:\n  Q:\n    Type: AWS::SQS::Queue # a comment\n";
        assert_eq!(
            TemplateInfo::parse(&path, small.into()).unwrap().body,
            small
        );
        let tagged = format!(
            "{}\nOutputs:\n  X:\n    Value: !Ref Q\n",
            "#".repeat(60_000)
        );
        let body = TemplateInfo::parse(&path, format!("{small}{tagged}"))
            .unwrap()
            .body;
        assert!(body.contains("!Ref Q"));
    }

    fn t(name: &str) -> Target {
        Target {
            name: name.into(),
            template: PathBuf::from(format!("{name}.yaml")),
        }
    }

    #[test]
    fn selection_keeps_the_platform_first_and_rejects_unknown_names() {
        let all = vec![t("platform"), t("enricher"), t("validator")];
        assert_eq!(select(&all, &[]).unwrap(), all);
        let names = |v: Vec<Target>| v.into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(&all, &["validator".into()]).unwrap()),
            ["platform", "validator"]
        );
        assert_eq!(
            names(select(&all, &["platform".into()]).unwrap()),
            ["platform"]
        );
        let err = select(&all, &["validater".into()]).unwrap_err().to_string();
        assert!(
            err.contains("\"validater\"") && err.contains("platform, enricher, validator"),
            "{err}"
        );
    }

    const SERVICE: &str = "
Parameters:
  CodeS3Bucket:
    Type: String
  MemorySize:
    Type: Number
    Default: 512
Resources:
  Function:
    Type: AWS::Lambda::Function
    Properties:
      Role:
        Fn::ImportValue: riffle-KeyArn
      Environment:
        Variables:
          A:
            Fn::ImportValue:
              Fn::Sub: riffle-${Env}-RegistryUrl
Outputs:
  Arn:
    Value: x
    Export:
      Name: riffle-ValidatorFunctionArn
";

    /// Every template's `Env` parameter takes exactly what `--env` takes, so CloudFormation
    /// never refuses a name the CLI let through (nor the other way round), and its default is
    /// a valid name.
    #[test]
    fn every_template_env_pattern_is_what_env_name_accepts() {
        let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
        let samples = [
            "dev",
            "staging",
            "prod",
            "a",
            "a1",
            "team-b",
            "x-2-y",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "",
            "-dev",
            "dev-",
            "Dev",
            "1dev",
            "dev_1",
            "dév",
            "dev.1",
            "de v",
        ];
        let targets = catalogue(&infra).unwrap();
        assert!(targets.len() > 1);
        for target in &targets {
            let text = std::fs::read_to_string(&target.template).unwrap();
            let root: Value = serde_yaml_ng::from_str(&text).unwrap();
            let env = &root["Parameters"]["Env"];
            let at = target.template.display();
            assert_eq!(env["Type"].as_str(), Some("String"), "{at}");
            let default = env["Default"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no default"));
            assert!(EnvName::parse(default).is_ok(), "{at}: default {default}");
            let pattern = env["AllowedPattern"].as_str().unwrap();
            assert!(env["ConstraintDescription"].as_str().is_some(), "{at}");
            // CloudFormation matches the whole value; the pattern must anchor itself.
            let re = regex::Regex::new(pattern).unwrap();
            for name in samples {
                assert_eq!(
                    re.is_match(name),
                    EnvName::parse(name).is_ok(),
                    "{at}: {pattern} and --env disagree on {name:?}"
                );
            }
        }
    }

    #[test]
    fn resolve_fills_in_the_environment() {
        let env = EnvName::parse("staging").unwrap();
        assert_eq!(env.resolve("riffle-${Env}-KeyArn"), "riffle-staging-KeyArn");
        assert_eq!(env.resolve("riffle-KeyArn"), "riffle-KeyArn");
    }

    #[test]
    fn template_info_reads_parameters_exports_and_imports() {
        let info = TemplateInfo::parse(Path::new("v.yaml"), SERVICE.into()).unwrap();
        assert_eq!(
            info.parameters,
            BTreeMap::from([("CodeS3Bucket".into(), false), ("MemorySize".into(), true)])
        );
        assert_eq!(
            info.imports,
            BTreeSet::from(["riffle-KeyArn".into(), "riffle-${Env}-RegistryUrl".into()])
        );
        assert_eq!(
            info.exports,
            BTreeSet::from(["riffle-ValidatorFunctionArn".into()])
        );
        let err = TemplateInfo::parse(Path::new("x.yaml"), "a: [".into()).unwrap_err();
        assert!(
            err.to_string().starts_with("template x.yaml: not YAML"),
            "{err}"
        );
        let err = TemplateInfo::parse(Path::new("x.yaml"), "a: 1".into()).unwrap_err();
        assert!(err.to_string().contains("no Resources"), "{err}");
    }

    fn info(exports: &[&str], imports: &[&str]) -> TemplateInfo {
        TemplateInfo {
            exports: exports.iter().map(|s| s.to_string()).collect(),
            imports: imports.iter().map(|s| s.to_string()).collect(),
            ..TemplateInfo::default()
        }
    }

    #[test]
    fn importers_come_after_exporters() {
        let platform = info(&["riffle-KeyArn"], &[]);
        let validator = info(
            &["riffle-ValidatorFunctionArn"],
            &["riffle-KeyArn", "riffle-RegistryUrl"],
        );
        let registry = info(&["riffle-RegistryUrl"], &["riffle-KeyArn"]);
        let stacks = [
            ("platform", &platform),
            ("validator", &validator),
            ("schema-registry", &registry),
        ];
        let order = deploy_order(&stacks, |s| s.to_string()).unwrap();
        assert_eq!(order, ["platform", "schema-registry", "validator"]);

        let a = info(&["A"], &["B"]);
        let b = info(&["B"], &["A"]);
        let err = deploy_order(&[("a", &a), ("b", &b)], |s| s.to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the service templates import each other's exports in a cycle: a, b"
        );
    }
}
