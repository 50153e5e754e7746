//! A stack's parameters for one change set, from `--param`, from the deploy itself (`Env`,
//! the code's bucket and key) and from the stack as it is. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::DeployError;

/// One parameter's value in a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// This value.
    Value(String),
    /// Whatever the stack has now (`UsePreviousValue`).
    UsePrevious,
}

/// `--param KEY=VALUE`, for clap's `value_parser`.
///
/// # Errors
/// No `=`, or an empty key.
pub fn parse_param(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{arg:?} is not KEY=VALUE (a template parameter name, '=', its value)"
        )),
    }
}

/// A duration as `500ms`, `30s`, `20m`, `1h` or bare seconds, for clap's `value_parser`.
///
/// # Errors
/// Not a number with one of those units, or zero.
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    let arg = arg.trim();
    let split = arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len());
    let (number, unit) = arg.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{arg:?} is not a duration like 500ms, 30s, 20m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{arg:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err(format!("{arg:?}: must be more than zero"));
    }
    Ok(d)
}

/// The `--param` keys that none of the stacks declares.
pub fn undeclared<'a>(
    explicit: &'a BTreeMap<String, String>,
    declared: &[&BTreeMap<String, bool>],
) -> Option<&'a str> {
    explicit
        .keys()
        .find(|k| !declared.iter().any(|d| d.contains_key(*k)))
        .map(String::as_str)
}

/// What one stack's parameters are made from.
#[derive(Debug, Clone, Copy)]
pub struct ParamSources<'a> {
    /// The stack (for errors).
    pub stack: &'a str,
    /// The template's parameters: name -> has a default.
    pub declared: &'a BTreeMap<String, bool>,
    /// `--param`, for every stack that declares the key.
    pub explicit: &'a BTreeMap<String, String>,
    /// What the deploy derives (`Env`, `CodeS3Bucket`, `CodeS3Key`); applied only where
    /// declared, so templates with and without an `Env` parameter both work.
    pub derived: &'a BTreeMap<String, ParamValue>,
    /// The parameters the stack has now; `None` for a stack being created.
    pub previous: Option<&'a BTreeSet<String>>,
}

/// Each declared parameter's value: `--param`, else derived, else the stack's current value
/// (an update keeps what an earlier deploy set, rather than falling back to the default),
/// else left out so the template's default applies.
///
/// # Errors
/// [`DeployError::MissingParam`] for a parameter with no default and no value.
pub fn merge(src: ParamSources<'_>) -> Result<Vec<(String, ParamValue)>, DeployError> {
    let mut out = Vec::new();
    for (name, has_default) in src.declared {
        let value = if let Some(v) = src.explicit.get(name) {
            Some(ParamValue::Value(v.clone()))
        } else if let Some(v) = src.derived.get(name) {
            Some(v.clone())
        } else if src.previous.is_some_and(|p| p.contains(name)) {
            Some(ParamValue::UsePrevious)
        } else {
            None
        };
        match value {
            // A previous value only exists on a stack that has the parameter already.
            Some(ParamValue::UsePrevious) if !src.previous.is_some_and(|p| p.contains(name)) => {
                return Err(missing(src.stack, name));
            }
            Some(v) => out.push((name.clone(), v)),
            None if *has_default => {}
            None => return Err(missing(src.stack, name)),
        }
    }
    Ok(out)
}

fn missing(stack: &str, name: &str) -> DeployError {
    let hint = match name {
        "CodeS3Bucket" | "CodeS3Key" => {
            "pass --code-bucket BUCKET (after `make package`)".to_owned()
        }
        _ => format!("pass --param {name}=VALUE"),
    };
    DeployError::MissingParam {
        stack: stack.to_owned(),
        param: name.to_owned(),
        hint,
    }
}

/// One line per parameter for the plan: `Key=value`, `Key (unchanged)`.
pub fn render_params(params: &[(String, ParamValue)]) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            ParamValue::Value(v) => format!("{k}={v}"),
            ParamValue::UsePrevious => format!("{k} (unchanged)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn params_are_key_equals_value() {
        assert_eq!(parse_param("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_param("A=").unwrap(), ("A".into(), String::new()));
        assert!(parse_param("A").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("20m").unwrap(), Duration::from_secs(1200));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }

    fn declared(items: &[(&str, bool)]) -> BTreeMap<String, bool> {
        items.iter().map(|(k, d)| (k.to_string(), *d)).collect()
    }

    #[test]
    fn explicit_beats_derived_beats_previous_beats_default() {
        let declared = declared(&[
            ("Env", false),
            ("CodeS3Key", false),
            ("MemorySize", true),
            ("Timeout", true),
            ("ShardCount", true),
        ]);
        let explicit = BTreeMap::from([("MemorySize".to_string(), "1024".to_string())]);
        let derived = BTreeMap::from([
            ("Env".to_string(), ParamValue::Value("dev".into())),
            (
                "CodeS3Key".to_string(),
                ParamValue::Value("v/abc.zip".into()),
            ),
            // Not declared by this template: ignored.
            ("CodeS3Bucket".to_string(), ParamValue::Value("b".into())),
        ]);
        let previous = BTreeSet::from(["Timeout".to_string(), "CodeS3Key".to_string()]);
        let merged = merge(ParamSources {
            stack: "riffle-dev-validator",
            declared: &declared,
            explicit: &explicit,
            derived: &derived,
            previous: Some(&previous),
        })
        .unwrap();
        assert_eq!(
            merged,
            [
                ("CodeS3Key".into(), ParamValue::Value("v/abc.zip".into())),
                ("Env".into(), ParamValue::Value("dev".into())),
                ("MemorySize".into(), ParamValue::Value("1024".into())),
                ("Timeout".into(), ParamValue::UsePrevious),
            ]
        );
        assert_eq!(
            render_params(&merged),
            "CodeS3Key=v/abc.zip, Env=dev, MemorySize=1024, Timeout (unchanged)"
        );
    }

    #[test]
    fn a_required_parameter_without_a_value_is_named() {
        let declared = declared(&[("CodeS3Bucket", false)]);
        let none = BTreeMap::new();
        let src = ParamSources {
            stack: "riffle-dev-validator",
            declared: &declared,
            explicit: &none,
            derived: &BTreeMap::new(),
            previous: None,
        };
        let err = merge(src).unwrap_err().to_string();
        assert_eq!(
            err,
            "stack riffle-dev-validator: parameter CodeS3Bucket has no default and no value; pass --code-bucket BUCKET (after `make package`)"
        );
        // "Keep the previous value" on a stack being created has nothing to keep.
        let derived = BTreeMap::from([("CodeS3Bucket".to_string(), ParamValue::UsePrevious)]);
        assert!(
            merge(ParamSources {
                derived: &derived,
                ..src
            })
            .is_err()
        );
    }

    #[test]
    fn unknown_param_keys_are_found() {
        let a = declared(&[("Env", false)]);
        let b = declared(&[("MemorySize", true)]);
        let explicit = BTreeMap::from([
            ("MemorySize".to_string(), "1".to_string()),
            ("MemroySize".to_string(), "1".to_string()),
        ]);
        assert_eq!(undeclared(&explicit, &[&a, &b]), Some("MemroySize"));
        assert_eq!(undeclared(&BTreeMap::new(), &[&a]), None);
    }
}
