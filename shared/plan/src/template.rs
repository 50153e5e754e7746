//! Reading the CloudFormation templates under `infra/` (pure: no I/O beyond the file read).
//!
//! Only what local provisioning needs is understood: parameters with their defaults or a
//! value set for them ([`Template::set_parameter`], e.g. `Env`), resources
//! by type, outputs with exports, and the long-form intrinsics `Ref`, `Fn::Sub`,
//! `Fn::GetAtt`, `Fn::ImportValue` and `Fn::Join`. Anything else is a typed error naming
//! the file and resource, never a silent guess.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::error::PlanError;

/// The region every local run uses; the emulators accept any, but ARNs must agree.
pub const LOCAL_REGION: &str = "us-east-1";

/// The account id moto reports; local ARNs and `${AWS::AccountId}` use it.
pub const LOCAL_ACCOUNT_ID: &str = "123456789012";
pub const LOCAL_PARTITION: &str = "aws";

/// One parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    file: PathBuf,
    /// Every declared parameter, with or without a default.
    declared: Vec<String>,
    /// The values `Ref` sees: defaults, then what [`Template::set_parameter`] gave.
    parameters: BTreeMap<String, Value>,
    /// The `Conditions` section: name -> condition expression.
    conditions: BTreeMap<String, Value>,
    resources: BTreeMap<String, Resource>,
    outputs: BTreeMap<String, Output>,
}

/// One resource: its `Type` and `Properties`.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: String,
    pub properties: Mapping,
}

/// One output: its value expression and export name expression.
#[derive(Debug, Clone)]
pub struct Output {
    pub value: Value,
    pub export_name: Option<Value>,
}

/// What a resource's `Ref` and `Fn::GetAtt` resolve to once it exists.
#[derive(Debug, Clone, Default)]
pub struct Attrs {
    pub reference: String,
    pub attrs: BTreeMap<String, String>,
}

/// What intrinsics may see while evaluating: created resources and known exports.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub resources: &'a BTreeMap<String, Attrs>,
    pub exports: &'a BTreeMap<String, String>,
}

impl Template {
    /// Reads and parses a template file.
    pub fn load(path: &Path) -> Result<Template, PlanError> {
        let text = std::fs::read_to_string(path).map_err(PlanError::io(format!(
            "reading template {}",
            path.display()
        )))?;
        Template::parse(path, &text)
    }

    /// Parses template text; `file` is only for error messages.
    pub fn parse(file: &Path, text: &str) -> Result<Template, PlanError> {
        let err = |resource: Option<&str>, message: String| PlanError::Template {
            file: file.to_path_buf(),
            resource: resource.map(str::to_owned),
            message,
        };
        let root: Value =
            serde_yaml_ng::from_str(text).map_err(|e| err(None, format!("not YAML: {e}")))?;
        let root = root
            .as_mapping()
            .ok_or_else(|| err(None, "top level is not a mapping".to_owned()))?;

        let mut parameters = BTreeMap::new();
        let mut declared = Vec::new();
        for (name, spec) in section(root, "Parameters") {
            let name = key(name).ok_or_else(|| err(None, "parameter name not a string".into()))?;
            declared.push(name.to_owned());
            if let Some(default) = spec.get("Default") {
                parameters.insert(name.to_owned(), default.clone());
            }
        }

        let mut conditions = BTreeMap::new();
        for (name, spec) in section(root, "Conditions") {
            let name = key(name).ok_or_else(|| err(None, "condition name not a string".into()))?;
            conditions.insert(name.to_owned(), spec.clone());
        }

        let mut resources = BTreeMap::new();
        for (name, spec) in section(root, "Resources") {
            let name = key(name).ok_or_else(|| err(None, "resource name not a string".into()))?;
            reject_short_tags(spec).map_err(|m| err(Some(name), m))?;
            let kind = spec
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| err(Some(name), "no Type".into()))?;
            let properties = match spec.get("Properties") {
                None => Mapping::new(),
                Some(Value::Mapping(m)) => m.clone(),
                Some(_) => return Err(err(Some(name), "Properties is not a mapping".into())),
            };
            resources.insert(
                name.to_owned(),
                Resource {
                    kind: kind.to_owned(),
                    properties,
                },
            );
        }

        let mut outputs = BTreeMap::new();
        for (name, spec) in section(root, "Outputs") {
            let name = key(name).ok_or_else(|| err(None, "output name not a string".into()))?;
            reject_short_tags(spec).map_err(|m| err(Some(name), m))?;
            let value = spec
                .get("Value")
                .cloned()
                .ok_or_else(|| err(Some(name), "output has no Value".into()))?;
            let export_name = spec.get("Export").and_then(|e| e.get("Name")).cloned();
            outputs.insert(name.to_owned(), Output { value, export_name });
        }

        Ok(Template {
            file: file.to_path_buf(),
            declared,
            parameters,
            conditions,
            resources,
            outputs,
        })
    }

    /// Gives a declared parameter a value, as a stack's parameter would: `Ref` and `${Name}`
    /// then see it instead of the default (riffle-local sets `Env` to
    /// [`crate::LOCAL_ENV`]).
    ///
    /// # Errors
    /// [`PlanError::Template`] when the template declares no such parameter: a value for a
    /// parameter nothing reads would be silently ignored, as CloudFormation refuses it.
    pub fn set_parameter(&mut self, name: &str, value: &str) -> Result<(), PlanError> {
        if !self.declared.iter().any(|d| d == name) {
            return Err(PlanError::Template {
                file: self.file.clone(),
                resource: None,
                message: format!("no parameter {name} is declared"),
            });
        }
        self.parameters
            .insert(name.to_owned(), Value::String(value.to_owned()));
        Ok(())
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Resources of one CloudFormation type, by logical id.
    pub fn resources_of<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Resource)> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| r.kind == kind)
            .map(|(n, r)| (n.as_str(), r))
    }

    pub fn outputs(&self) -> impl Iterator<Item = (&str, &Output)> {
        self.outputs.iter().map(|(n, o)| (n.as_str(), o))
    }

    /// A typed error about one resource of this template.
    pub fn error(&self, resource: &str, message: impl Into<String>) -> PlanError {
        PlanError::Template {
            file: self.file.clone(),
            resource: Some(resource.to_owned()),
            message: message.into(),
        }
    }

    /// Evaluates an expression to a string (numbers and booleans as YAML writes them).
    pub fn eval(&self, value: &Value, scope: Scope<'_>) -> Result<String, String> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Mapping(m) if m.len() == 1 => {
                let Some((Value::String(f), arg)) = m.iter().next() else {
                    return Err("expected an intrinsic function".into());
                };
                match f.as_str() {
                    "Ref" => self.reference(arg.as_str().ok_or("Ref takes a name")?, scope),
                    "Fn::GetAtt" => {
                        let (res, attr) = match arg {
                            Value::Sequence(s) if s.len() == 2 => (
                                s[0].as_str().ok_or("Fn::GetAtt: resource not a string")?,
                                s[1].as_str().ok_or("Fn::GetAtt: attribute not a string")?,
                            ),
                            Value::String(s) => s.split_once('.').ok_or("Fn::GetAtt: no dot")?,
                            _ => return Err("Fn::GetAtt takes [resource, attribute]".into()),
                        };
                        get_att(res, attr, scope)
                    }
                    "Fn::ImportValue" => {
                        let name = self.eval(arg, scope)?;
                        scope
                            .exports
                            .get(&name)
                            .cloned()
                            .ok_or_else(|| format!("import `{name}` is not exported"))
                    }
                    "Fn::Sub" => match arg {
                        Value::String(s) => self.sub(s, &BTreeMap::new(), scope),
                        Value::Sequence(s) if s.len() == 2 => {
                            let text = s[0].as_str().ok_or("Fn::Sub: text not a string")?;
                            let mut vars = BTreeMap::new();
                            for (k, v) in s[1].as_mapping().ok_or("Fn::Sub: vars not a map")? {
                                let k = k.as_str().ok_or("Fn::Sub: var name not a string")?;
                                vars.insert(k.to_owned(), self.eval(v, scope)?);
                            }
                            self.sub(text, &vars, scope)
                        }
                        _ => Err("Fn::Sub takes a string or [string, vars]".into()),
                    },
                    "Fn::If" => match self.resolve(value, scope)? {
                        Some(chosen) => self.eval(chosen, scope),
                        None => Err("AWS::NoValue where a value is needed".into()),
                    },
                    "Fn::Join" => {
                        let parts = arg.as_sequence().filter(|s| s.len() == 2);
                        let parts = parts.ok_or("Fn::Join takes [separator, list]")?;
                        let sep = parts[0].as_str().ok_or("Fn::Join: separator")?;
                        let list = parts[1].as_sequence().ok_or("Fn::Join: list")?;
                        let items: Result<Vec<String>, String> =
                            list.iter().map(|v| self.eval(v, scope)).collect();
                        Ok(items?.join(sep))
                    }
                    other => Err(format!("unsupported intrinsic {other}")),
                }
            }
            _ => Err("expected a scalar or an intrinsic function".into()),
        }
    }

    /// `value` with its `Fn::If`s decided (from the template's `Conditions`, over the
    /// parameters' values); `None` when that leaves `AWS::NoValue`: the property is absent.
    pub fn resolve<'v>(
        &self,
        value: &'v Value,
        scope: Scope<'_>,
    ) -> Result<Option<&'v Value>, String> {
        let mut value = value;
        loop {
            let Some(m) = value.as_mapping().filter(|m| m.len() == 1) else {
                return Ok(Some(value));
            };
            match m.iter().next() {
                Some((Value::String(f), arg)) if f == "Fn::If" => {
                    let parts = arg.as_sequence().filter(|s| s.len() == 3);
                    let parts = parts.ok_or("Fn::If takes [condition, then, else]")?;
                    let name = parts[0].as_str().ok_or("Fn::If: condition not a name")?;
                    value = if self.condition(name, scope)? {
                        &parts[1]
                    } else {
                        &parts[2]
                    };
                }
                Some((Value::String(f), Value::String(name)))
                    if f == "Ref" && name == "AWS::NoValue" =>
                {
                    return Ok(None);
                }
                _ => return Ok(Some(value)),
            }
        }
    }

    /// The named condition of the `Conditions` section, decided.
    fn condition(&self, name: &str, scope: Scope<'_>) -> Result<bool, String> {
        let expr = self
            .conditions
            .get(name)
            .ok_or_else(|| format!("no condition {name}"))?;
        self.truth(expr, scope)
    }

    /// A condition expression: `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`.
    fn truth(&self, expr: &Value, scope: Scope<'_>) -> Result<bool, String> {
        let m = expr
            .as_mapping()
            .filter(|m| m.len() == 1)
            .ok_or("a condition is one function")?;
        let Some((Value::String(f), arg)) = m.iter().next() else {
            return Err("a condition is one function".into());
        };
        let list = || arg.as_sequence().ok_or(format!("{f} takes a list"));
        match f.as_str() {
            "Fn::Equals" => {
                let l = list()?;
                if l.len() != 2 {
                    return Err("Fn::Equals takes two values".into());
                }
                Ok(self.eval(&l[0], scope)? == self.eval(&l[1], scope)?)
            }
            "Fn::Not" => match list()?.as_slice() {
                [c] => Ok(!self.truth(c, scope)?),
                _ => Err("Fn::Not takes one condition".into()),
            },
            "Fn::And" => list()?
                .iter()
                .try_fold(true, |acc, c| Ok(acc && self.truth(c, scope)?)),
            "Fn::Or" => list()?
                .iter()
                .try_fold(false, |acc, c| Ok(acc || self.truth(c, scope)?)),
            "Condition" => self.condition(arg.as_str().ok_or("Condition takes a name")?, scope),
            other => Err(format!("unsupported condition function {other}")),
        }
    }

    fn reference(&self, name: &str, scope: Scope<'_>) -> Result<String, String> {
        if let Some(v) = pseudo(name) {
            return Ok(v.to_owned());
        }
        if let Some(default) = self.parameters.get(name) {
            return self.eval(default, scope);
        }
        if let Some(attrs) = scope.resources.get(name) {
            return Ok(attrs.reference.clone());
        }
        Err(format!(
            "Ref {name}: no such parameter default or local resource"
        ))
    }

    /// `${Name}`, `${Res.Attr}` and `${!Literal}` substitution.
    fn sub(
        &self,
        text: &str,
        vars: &BTreeMap<String, String>,
        scope: Scope<'_>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or("Fn::Sub: unclosed ${")?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(v);
            } else if let Some((res, attr)) = name.split_once('.')
                && pseudo(name).is_none()
            {
                out.push_str(&get_att(res, attr, scope)?);
            } else {
                out.push_str(&self.reference(name, scope)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Evaluates a property of a resource; a missing one is `None`.
    pub fn prop(
        &self,
        resource: &str,
        props: &Mapping,
        name: &str,
        scope: Scope<'_>,
    ) -> Result<Option<String>, PlanError> {
        let Some(value) = props.get(name) else {
            return Ok(None);
        };
        let error = |m: String| self.error(resource, format!("{name}: {m}"));
        match self.resolve(value, scope).map_err(error)? {
            Some(value) => self.eval(value, scope).map(Some).map_err(error),
            None => Ok(None),
        }
    }

    /// A required property, evaluated.
    pub fn required(
        &self,
        resource: &str,
        props: &Mapping,
        name: &str,
        scope: Scope<'_>,
    ) -> Result<String, PlanError> {
        self.prop(resource, props, name, scope)?
            .ok_or_else(|| self.error(resource, format!("{name} is required locally")))
    }

    /// A numeric property, evaluated and parsed.
    pub fn number<T: std::str::FromStr>(
        &self,
        resource: &str,
        props: &Mapping,
        name: &str,
        scope: Scope<'_>,
    ) -> Result<Option<T>, PlanError> {
        self.prop(resource, props, name, scope)?
            .map(|s| {
                s.parse::<T>()
                    .map_err(|_| self.error(resource, format!("{name}: `{s}` is not a number")))
            })
            .transpose()
    }
}

fn pseudo(name: &str) -> Option<&'static str> {
    match name {
        "AWS::AccountId" => Some(LOCAL_ACCOUNT_ID),
        "AWS::Region" => Some(LOCAL_REGION),
        "AWS::Partition" => Some(LOCAL_PARTITION),
        "AWS::URLSuffix" => Some("amazonaws.com"),
        _ => None,
    }
}

fn get_att(res: &str, attr: &str, scope: Scope<'_>) -> Result<String, String> {
    scope
        .resources
        .get(res)
        .and_then(|a| a.attrs.get(attr))
        .cloned()
        .ok_or_else(|| format!("Fn::GetAtt {res}.{attr}: not known locally"))
}

fn section<'a>(root: &'a Mapping, name: &str) -> impl Iterator<Item = (&'a Value, &'a Value)> {
    root.get(name)
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.iter())
}

fn key(v: &Value) -> Option<&str> {
    v.as_str()
}

/// Short-form tags (`!Ref`) would parse as opaque tagged values; say so plainly instead.
fn reject_short_tags(v: &Value) -> Result<(), String> {
    match v {
        Value::Tagged(t) => Err(format!(
            "short-form intrinsic {} is not supported; use the long form (e.g. `Ref:`)",
            t.tag
        )),
        Value::Mapping(m) => m.values().try_for_each(reject_short_tags),
        Value::Sequence(s) => s.iter().try_for_each(reject_short_tags),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Template {
        Template::parse(Path::new("t.yaml"), text).unwrap()
    }

    const EMPTY: Scope<'static> = Scope {
        resources: &BTreeMap::new(),
        exports: &BTreeMap::new(),
    };

    #[test]
    fn conditions_decide_fn_if_and_no_value_leaves_a_property_out() {
        let text = "Parameters:\n  Mode:\n    Type: String\n    Default: PROVISIONED\n  N:\n    Type: Number\n    Default: 2\n\
Conditions:\n  Provisioned:\n    Fn::Equals: [{Ref: Mode}, PROVISIONED]\n  Not:\n    Fn::Not: [{Condition: Provisioned}]\n  Both:\n    Fn::And: [{Condition: Provisioned}, {Fn::Or: [{Condition: Not}, {Fn::Equals: [a, a]}]}]\n\
Resources:\n  S:\n    Type: AWS::Kinesis::Stream\n    Properties:\n      ShardCount:\n        Fn::If: [Provisioned, {Ref: N}, {Ref: AWS::NoValue}]\n      Label:\n        Fn::If: [Not, on-demand, {Fn::If: [Both, provisioned, never]}]\n";
        let mut t = parse(text);
        let (resources, exports) = (BTreeMap::new(), BTreeMap::new());
        let scope = Scope {
            resources: &resources,
            exports: &exports,
        };
        let props = t
            .resources_of("AWS::Kinesis::Stream")
            .next()
            .unwrap()
            .1
            .properties
            .clone();
        assert_eq!(
            t.number::<u32>("S", &props, "ShardCount", scope).unwrap(),
            Some(2)
        );
        assert_eq!(
            t.prop("S", &props, "Label", scope).unwrap().as_deref(),
            Some("provisioned")
        );
        t.set_parameter("Mode", "ON_DEMAND").unwrap();
        assert_eq!(
            t.number::<u32>("S", &props, "ShardCount", scope).unwrap(),
            None,
            "left out"
        );
        assert_eq!(
            t.prop("S", &props, "Label", scope).unwrap().as_deref(),
            Some("on-demand")
        );
        let v = |y: &str| serde_yaml_ng::from_str::<Value>(y).unwrap();
        assert!(t.eval(&v("Fn::If: [Missing, a, b]"), scope).is_err());
        assert!(
            t.eval(&v("Fn::If: [Provisioned, a, {Ref: AWS::NoValue}]"), scope)
                .is_err()
        );
    }

    #[test]
    fn evaluates_long_form_intrinsics() {
        let t = parse(
            "Parameters:\n  N:\n    Type: Number\n    Default: 3\nResources:\n  R:\n    Type: X\n",
        );
        let v = |y: &str| serde_yaml_ng::from_str::<Value>(y).unwrap();
        let mut resources = BTreeMap::new();
        resources.insert(
            "Q".to_owned(),
            Attrs {
                reference: "url".into(),
                attrs: [("Arn".to_owned(), "arn:q".to_owned())].into(),
            },
        );
        let exports = [("riffle-X".to_owned(), "x-value".to_owned())].into();
        let scope = Scope {
            resources: &resources,
            exports: &exports,
        };
        assert_eq!(t.eval(&v("Ref: N"), scope).unwrap(), "3");
        assert_eq!(t.eval(&v("Ref: Q"), scope).unwrap(), "url");
        assert_eq!(t.eval(&v("Fn::GetAtt: [Q, Arn]"), scope).unwrap(), "arn:q");
        assert_eq!(t.eval(&v("Fn::GetAtt: Q.Arn"), scope).unwrap(), "arn:q");
        assert_eq!(
            t.eval(
                &v("Fn::Sub: a-${AWS::AccountId}-${Q.Arn}-${N}-${!Lit}"),
                scope
            )
            .unwrap(),
            "a-123456789012-arn:q-3-${Lit}"
        );
        assert_eq!(
            t.eval(
                &v("Fn::Sub: ['${B}/*', {B: {Fn::ImportValue: riffle-X}}]"),
                scope
            )
            .unwrap(),
            "x-value/*"
        );
        assert_eq!(
            t.eval(&v("Fn::Join: ['-', [a, {Ref: N}]]"), scope).unwrap(),
            "a-3"
        );
        assert!(t.eval(&v("Fn::ImportValue: nope"), scope).is_err());
        assert!(
            t.eval(&v("Fn::If: [a, b, c]"), scope).is_err(),
            "no condition a"
        );
        assert!(t.eval(&v("Ref: Missing"), EMPTY).is_err());
    }

    /// `${Env}` in a `Fn::Sub` (both forms) and in an import's name follows the value set
    /// for the parameter, not its default; an undeclared parameter cannot be set.
    #[test]
    fn a_set_parameter_replaces_the_default_everywhere() {
        let mut t = parse(
            "Parameters:\n  Env:\n    Type: String\n    Default: dev\n  Bare:\n    Type: String\n\
             Resources:\n  R:\n    Type: X\n",
        );
        let v = |y: &str| serde_yaml_ng::from_str::<Value>(y).unwrap();
        let name = v("Fn::Sub: riffle-${Env}-raw");
        assert_eq!(t.eval(&name, EMPTY).unwrap(), "riffle-dev-raw");
        assert!(
            t.eval(&v("Ref: Bare"), EMPTY).is_err(),
            "no default, no value"
        );

        t.set_parameter("Env", "local").unwrap();
        t.set_parameter("Bare", "b").unwrap();
        assert_eq!(t.eval(&name, EMPTY).unwrap(), "riffle-local-raw");
        assert_eq!(t.eval(&v("Ref: Bare"), EMPTY).unwrap(), "b");
        assert_eq!(
            t.eval(
                &v("Fn::Sub: [\"${P}/${AWS::Region}/${Env}\", {P: {Ref: Env}}]"),
                EMPTY
            )
            .unwrap(),
            "local/us-east-1/local"
        );
        let exports = [("riffle-local-KeyArn".to_owned(), "arn:key".to_owned())].into();
        let scope = Scope {
            resources: &BTreeMap::new(),
            exports: &exports,
        };
        assert_eq!(
            t.eval(
                &v("Fn::ImportValue: {Fn::Sub: 'riffle-${Env}-KeyArn'}"),
                scope
            )
            .unwrap(),
            "arn:key"
        );
        let err = t.set_parameter("Envv", "x").unwrap_err().to_string();
        assert!(err.contains("t.yaml") && err.contains("Envv"), "{err}");
    }

    #[test]
    fn short_tags_are_a_typed_error_naming_file_and_resource() {
        let err = Template::parse(
            Path::new("bad.yaml"),
            "Resources:\n  S:\n    Type: X\n    Properties:\n      Name: !Ref P\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.yaml") && text.contains("resource S"),
            "{text}"
        );
        assert!(text.contains("long form"), "{text}");
    }

    #[test]
    fn missing_type_names_the_resource() {
        let err = Template::parse(Path::new("t.yaml"), "Resources:\n  Lonely: {}\n").unwrap_err();
        assert!(matches!(err, PlanError::Template { resource: Some(ref r), .. } if r == "Lonely"));
        assert!(Template::parse(Path::new("t.yaml"), ": : :").is_err());
    }

    #[test]
    fn numbers_parse_or_name_the_property() {
        let t =
            parse("Resources:\n  R:\n    Type: X\n    Properties:\n      A: 5\n      B: five\n");
        let props = &t.resources["R"].properties;
        assert_eq!(t.number::<u32>("R", props, "A", EMPTY).unwrap(), Some(5));
        assert_eq!(t.number::<u32>("R", props, "C", EMPTY).unwrap(), None);
        let err = t.number::<u32>("R", props, "B", EMPTY).unwrap_err();
        assert!(err.to_string().contains("B: `five`"), "{err}");
    }
}
