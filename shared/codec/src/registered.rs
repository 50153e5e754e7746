//! Contracts in the registry: a subject's contract travels as Confluent's data-contract fields
//! on each schema version it governs (`metadata` and `ruleSet`), so a stage reads it with the
//! schema, by id, and a new subject needs a registration, not a rebuild (ADR 0020).
//!
//! The mapping, chosen so Confluent's own clients send and read it unchanged:
//! - each field rule is one domain rule `{"name": "<field>", "kind": "CONDITION", "mode":
//!   "WRITE", "type": "RIFFLE_FIELD", "params": {...}}`; Confluent's params are strings, so
//!   `required` is `"true"`, `min`/`max` are numbers in their shortest form, `allowed` is a
//!   JSON array, `pattern` the regex itself;
//! - the skew limit and the enrichment go into `metadata.properties`, as
//!   `riffle.max_event_time_skew_secs` and `riffle.enrich` (the file's section as JSON);
//! - `riffle.contract` (`"1"`) says the schema carries a contract at all.
//!
//! Rules of other types (CEL and the like, for Confluent's executors) are left alone, and so
//! are disabled ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::rules::{Contract, ContractError, RawContract, RawFieldRule, parse_raw};

/// The rule type of a field rule.
pub const FIELD_RULE_TYPE: &str = "RIFFLE_FIELD";
/// The property that marks a contract, with its format version as the value.
pub const CONTRACT_PROPERTY: &str = "riffle.contract";
/// The one format version this code reads and writes.
pub const CONTRACT_FORMAT: &str = "1";
/// The property holding `max_event_time_skew_secs`.
pub const SKEW_PROPERTY: &str = "riffle.max_event_time_skew_secs";
/// The property holding the `enrich` section as JSON.
pub const ENRICH_PROPERTY: &str = "riffle.enrich";

const PARAMS: [&str; 6] = ["field", "required", "min", "max", "pattern", "allowed"];

/// The data-contract fields of one schema version, as the registry API carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataContract {
    /// Confluent's `metadata` (`properties`, `tags`, `sensitive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Confluent's `ruleSet` (`domainRules`, `migrationRules`).
    #[serde(rename = "ruleSet", default, skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<Value>,
}

/// A contract file turned into what is registered with its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredContract {
    /// The subject the file is for.
    pub subject: String,
    /// The schema file it names, under `schemas/`.
    pub schema_file: String,
    /// The fields sent with the schema.
    pub fields: DataContract,
}

impl DataContract {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.metadata.is_none() && self.rule_set.is_none()
    }

    /// The same fields in one canonical form: members that say nothing (`null`, `{}`, `[]`,
    /// a rule's `"disabled": false`) dropped at every depth, and `None` for a field left
    /// empty. A client that sends `"ruleSet": {}`, or reads a contract back and sends it
    /// with its defaults spelled out (Confluent's Java `Rule` writes `"disabled": false`),
    /// means the same contract and must not make a new version.
    #[must_use]
    pub fn normalized(&self) -> DataContract {
        DataContract {
            metadata: self.metadata.as_ref().and_then(canonical),
            rule_set: self.rule_set.as_ref().and_then(canonical),
        }
    }

    /// The data contract of a contract file (`schemas/rules/<subject>.json`).
    ///
    /// # Errors
    /// What [`Contract::parse`] refuses: the file is compiled too, so a bad pattern is found
    /// before anything is registered.
    pub fn from_file(file: &str, text: &str) -> Result<RegisteredContract, ContractError> {
        Contract::parse(file, text)?;
        let raw = parse_raw(file, text)?;
        let mut properties = Map::new();
        properties.insert(CONTRACT_PROPERTY.into(), CONTRACT_FORMAT.into());
        if let Some(skew) = raw.max_event_time_skew_secs {
            properties.insert(SKEW_PROPERTY.into(), skew.to_string().into());
        }
        if let Some(enrich) = &raw.enrich {
            let text = serde_json::to_string(enrich).map_err(|e| ContractError::Parse {
                file: file.to_owned(),
                reason: e.to_string(),
            })?;
            properties.insert(ENRICH_PROPERTY.into(), text.into());
        }
        let rules: Vec<Value> = raw
            .fields
            .iter()
            .map(|(name, rule)| field_rule(name, rule))
            .collect();
        Ok(RegisteredContract {
            subject: raw.subject,
            schema_file: raw.schema,
            fields: DataContract {
                metadata: Some(json!({ "properties": properties })),
                rule_set: Some(json!({ "domainRules": rules })),
            },
        })
    }

    /// The contract these fields carry for the schema named `subject`, if they carry one.
    ///
    /// # Errors
    /// [`ContractError::Parse`] naming what is wrong: a field rule with an unknown or
    /// unreadable parameter, two rules for one field, a format this code does not know.
    pub fn contract(&self, subject: &str) -> Result<Option<Contract>, ContractError> {
        let file = format!("registered contract of {subject}");
        let bad = |reason: String| ContractError::Parse {
            file: file.clone(),
            reason,
        };
        let properties = match self.metadata.as_ref().and_then(|m| m.get("properties")) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => return Err(bad("metadata.properties is not an object".into())),
        };
        let property = |name: &str| -> Result<Option<&str>, ContractError> {
            match properties.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(bad(format!("property {name} is not a string"))),
            }
        };
        if let Some(unknown) = properties.keys().find(|k| {
            k.starts_with("riffle.")
                && ![CONTRACT_PROPERTY, SKEW_PROPERTY, ENRICH_PROPERTY].contains(&k.as_str())
        }) {
            return Err(bad(format!(
                "unknown property {unknown} (known: {CONTRACT_PROPERTY}, {SKEW_PROPERTY}, \
                 {ENRICH_PROPERTY})"
            )));
        }
        let rules = field_rules(self.rule_set.as_ref()).map_err(&bad)?;
        let riffle_properties = properties.keys().any(|k| k.starts_with("riffle."));
        match property(CONTRACT_PROPERTY)? {
            None if rules.is_empty() && !riffle_properties => return Ok(None),
            None if rules.is_empty() => {
                return Err(bad(format!(
                    "riffle.* properties without the {CONTRACT_PROPERTY} property"
                )));
            }
            None => {
                return Err(bad(format!(
                    "{FIELD_RULE_TYPE} rules without the {CONTRACT_PROPERTY} property"
                )));
            }
            Some(CONTRACT_FORMAT) => {}
            Some(other) => {
                return Err(bad(format!(
                    "{CONTRACT_PROPERTY} {other:?} is not a format this version reads \
                     ({CONTRACT_FORMAT:?})"
                )));
            }
        }
        let max_event_time_skew_secs = property(SKEW_PROPERTY)?
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| bad(format!("{SKEW_PROPERTY} {s:?} is not whole seconds")))
            })
            .transpose()?;
        let enrich = property(ENRICH_PROPERTY)?
            .map(|s| serde_json::from_str(s).map_err(|e| bad(format!("{ENRICH_PROPERTY}: {e}"))))
            .transpose()?;
        let mut fields = BTreeMap::new();
        for (name, rule) in rules {
            if fields.insert(name.clone(), rule).is_some() {
                return Err(bad(format!("two {FIELD_RULE_TYPE} rules for field {name}")));
            }
        }
        let raw = RawContract {
            subject: subject.to_owned(),
            schema: String::new(),
            max_event_time_skew_secs,
            fields,
            enrich,
        };
        Contract::compile(&file, raw).map(Some)
    }
}

/// `value` without members that say nothing, or `None` when nothing is left.
fn canonical(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(members) => {
            let kept: Map<String, Value> = members
                .iter()
                .filter(|(k, v)| !(k.as_str() == "disabled" && **v == Value::Bool(false)))
                .filter_map(|(k, v)| canonical(v).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(canonical).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => Some(other.clone()),
    }
}

fn field_rule(name: &str, rule: &RawFieldRule) -> Value {
    let mut params = Map::new();
    params.insert("field".into(), name.into());
    if rule.required {
        params.insert("required".into(), "true".into());
    }
    for (key, bound) in [("min", rule.min), ("max", rule.max)] {
        if let Some(v) = bound {
            params.insert(key.into(), number(v).into());
        }
    }
    if let Some(pattern) = &rule.pattern {
        params.insert("pattern".into(), pattern.as_str().into());
    }
    if let Some(allowed) = &rule.allowed {
        params.insert(
            "allowed".into(),
            Value::from(allowed.clone()).to_string().into(),
        );
    }
    json!({
        "name": name,
        "kind": "CONDITION",
        "mode": "WRITE",
        "type": FIELD_RULE_TYPE,
        "params": params,
    })
}

/// A bound as text that reads back to the same f64 (`1` for 1.0, `0.01`).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        ryu::Buffer::new().format(v).to_owned()
    }
}

/// The enabled field rules of a rule set, by field.
fn field_rules(rule_set: Option<&Value>) -> Result<Vec<(String, RawFieldRule)>, String> {
    let rules = match rule_set.and_then(|r| r.get("domainRules")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(rules)) => rules,
        Some(_) => return Err("ruleSet.domainRules is not an array".into()),
    };
    let mut out = Vec::new();
    for rule in rules {
        if rule.get("type").and_then(Value::as_str) != Some(FIELD_RULE_TYPE)
            || rule.get("disabled").and_then(Value::as_bool) == Some(true)
        {
            continue;
        }
        let name = rule.get("name").and_then(Value::as_str).unwrap_or("?");
        let params = match rule.get("params") {
            Some(Value::Object(p)) => p,
            _ => return Err(format!("rule {name}: no params")),
        };
        let text = |key: &str| -> Result<Option<&str>, String> {
            match params.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("rule {name}: param {key} is not a string")),
            }
        };
        if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
            return Err(format!(
                "rule {name}: unknown param {unknown} (known: {})",
                PARAMS.join(", ")
            ));
        }
        let field = text("field")?.ok_or_else(|| format!("rule {name}: no field param"))?;
        let required = match text("required")? {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("rule {name}: required {other:?} is not a boolean")),
        };
        let bound = |key: &str| -> Result<Option<f64>, String> {
            text(key)?
                .map(|s| match s.parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(v),
                    _ => Err(format!("rule {name}: {key} {s:?} is not a finite number")),
                })
                .transpose()
        };
        let allowed = text("allowed")?
            .map(|s| {
                serde_json::from_str::<Vec<String>>(s).map_err(|e| {
                    format!("rule {name}: allowed is not a JSON array of strings: {e}")
                })
            })
            .transpose()?;
        out.push((
            field.to_owned(),
            RawFieldRule {
                required,
                min: bound("min")?,
                max: bound("max")?,
                pattern: text("pattern")?.map(str::to_owned),
                allowed,
            },
        ));
    }
    Ok(out)
}

/// How `new` rejects events that `old` accepts: a field newly required, a bound raised, a
/// pattern added or changed, allowed values removed, a smaller skew limit. A producer whose
/// events passed yesterday would see them rejected, so the registry's compatibility gate
/// treats each as breaking. Loosening and enrichment changes are not listed.
pub fn tightenings(old: &Contract, new: &Contract) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(limit) = new.max_event_time_skew_ms
        && old.max_event_time_skew_ms.is_none_or(|was| limit < was)
    {
        found.push(format!(
            "event time skew limit lowered to {} s",
            limit / 1000
        ));
    }
    for rule in &new.fields {
        let was = old.fields.iter().find(|r| r.name() == rule.name());
        found.extend(
            rule.tighter_than(was)
                .into_iter()
                .map(|what| format!("field {}: {what}", rule.name())),
        );
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::BUNDLED_CONTRACTS;

    fn registered(file: &str, text: &str) -> (RegisteredContract, Contract) {
        let reg = DataContract::from_file(file, text).unwrap();
        // Through JSON text, as the registry stores and serves it.
        let back: DataContract =
            serde_json::from_str(&serde_json::to_string(&reg.fields).unwrap()).unwrap();
        let contract = back.contract(&reg.subject).unwrap().unwrap();
        (reg, contract)
    }

    #[test]
    fn every_bundled_contract_reads_back_as_itself() {
        for (file, text) in BUNDLED_CONTRACTS {
            let from_file = Contract::parse(file, text).unwrap();
            let (reg, back) = registered(file, text);
            assert_eq!(reg.subject, from_file.subject);
            assert_eq!(back.subject, from_file.subject);
            assert_eq!(
                back.max_event_time_skew_ms,
                from_file.max_event_time_skew_ms
            );
            assert_eq!(back.enrich, from_file.enrich, "{file}");
            assert_eq!(back.fields.len(), from_file.fields.len(), "{file}");
            for (a, b) in back.fields.iter().zip(&from_file.fields) {
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{file}");
            }
            assert!(tightenings(&from_file, &back).is_empty(), "{file}");
        }
    }

    #[test]
    fn spelled_out_defaults_and_nested_empties_normalize_away() {
        let sent = DataContract {
            metadata: Some(json!({"properties": {"owner": "a"}, "tags": {"f": []}})),
            rule_set: Some(json!({"domainRules": [
                {"name": "r", "type": FIELD_RULE_TYPE, "disabled": false, "doc": null,
                 "params": {"field": "a"}, "tags": []}
            ]})),
        };
        let plain = DataContract {
            metadata: Some(json!({"properties": {"owner": "a"}})),
            rule_set: Some(json!({"domainRules": [
                {"name": "r", "type": FIELD_RULE_TYPE, "params": {"field": "a"}}
            ]})),
        };
        assert_eq!(sent.normalized(), plain.normalized());
        assert_eq!(plain.normalized(), plain);
    }

    #[test]
    fn empty_contract_fields_normalize_to_none() {
        let empty = DataContract {
            metadata: Some(json!({"properties": {}, "tags": null, "sensitive": []})),
            rule_set: Some(json!({})),
        };
        assert!(empty.normalized().is_empty());
        assert!(
            DataContract {
                metadata: Some(Value::Null),
                rule_set: None
            }
            .normalized()
            .is_empty()
        );
        let some = DataContract {
            metadata: Some(json!({"properties": {"owner": "a"}, "tags": {}})),
            rule_set: Some(json!({"domainRules": [], "migrationRules": [{"name": "m"}]})),
        };
        let kept = some.normalized();
        assert_eq!(kept.metadata, Some(json!({"properties": {"owner": "a"}})));
        assert_eq!(
            kept.rule_set,
            Some(json!({"migrationRules": [{"name": "m"}]}))
        );
    }

    #[test]
    fn bounds_keep_their_value_through_text() {
        for v in [0.01, 1.0, 100.0, -40.5, 1e20, 0.1 + 0.2, f64::MAX] {
            assert_eq!(number(v).parse::<f64>().unwrap(), v, "{v}");
        }
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.01), "0.01");
    }

    #[test]
    fn a_schema_without_contract_fields_has_no_contract() {
        assert!(DataContract::default().contract("a.B").unwrap().is_none());
        let others = DataContract {
            metadata: Some(json!({"properties": {"owner": "team-a"}})),
            rule_set: Some(json!({"domainRules": [
                {"name": "cel", "kind": "CONDITION", "type": "CEL", "expr": "true"}
            ]})),
        };
        assert!(others.contract("a.B").unwrap().is_none());
    }

    #[test]
    fn broken_contract_fields_say_what_is_wrong() {
        let rule = |params: Value| DataContract {
            metadata: Some(json!({"properties": {CONTRACT_PROPERTY: "1"}})),
            rule_set: Some(json!({"domainRules": [
                {"name": "r", "kind": "CONDITION", "type": FIELD_RULE_TYPE, "params": params}
            ]})),
        };
        let cases = [
            (
                rule(json!({"field": "a", "minimum": "1"})),
                "unknown param minimum",
            ),
            (
                rule(json!({"field": "a", "min": "one"})),
                "not a finite number",
            ),
            (
                rule(json!({"field": "a", "max": "inf"})),
                "not a finite number",
            ),
            (
                rule(json!({"field": "a", "required": "yes"})),
                "not a boolean",
            ),
            (
                rule(json!({"field": "a", "allowed": "EUR"})),
                "allowed is not a JSON array",
            ),
            (rule(json!({"field": "a", "pattern": "("})), "bad pattern"),
            (rule(json!({"min": "1"})), "no field param"),
            (rule(json!({"field": "a", "min": 1})), "is not a string"),
            (
                rule(json!({"field": "a", "min": "5", "max": "1"})),
                "min 5 above max 1",
            ),
            (
                DataContract {
                    metadata: Some(json!({"properties": {
                        CONTRACT_PROPERTY: "1", "riffle.max_event_time_skew_sec": "60"
                    }})),
                    rule_set: None,
                },
                "unknown property riffle.max_event_time_skew_sec",
            ),
            (
                DataContract {
                    metadata: Some(json!({"properties": {ENRICH_PROPERTY: "{}"}})),
                    rule_set: None,
                },
                "riffle.* properties without the riffle.contract property",
            ),
            (
                DataContract {
                    metadata: Some(json!({"properties": {
                        CONTRACT_PROPERTY: "1", SKEW_PROPERTY: "-5"
                    }})),
                    rule_set: None,
                },
                "skew limit -5 is negative",
            ),
            (
                DataContract {
                    metadata: Some(json!({"properties": {
                        CONTRACT_PROPERTY: "1",
                        ENRICH_PROPERTY: "{\"agg_key\":\"k\",\"metric\":{\"product\":[]},\"window_secs\":0}"
                    }})),
                    rule_set: None,
                },
                "window_secs must be at least 1",
            ),
            (
                DataContract {
                    metadata: Some(json!({"properties": {CONTRACT_PROPERTY: "7"}})),
                    rule_set: None,
                },
                "not a format this version reads",
            ),
            (
                DataContract {
                    metadata: None,
                    rule_set: rule(json!({"field": "a"})).rule_set,
                },
                "without the riffle.contract property",
            ),
            (
                DataContract {
                    metadata: Some(json!({"properties": {
                        CONTRACT_PROPERTY: "1", ENRICH_PROPERTY: "{\"agg_key\": 3}"
                    }})),
                    rule_set: None,
                },
                "riffle.enrich",
            ),
        ];
        for (fields, expected) in cases {
            let err = fields.contract("a.B").unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
        let twice = DataContract {
            metadata: Some(json!({"properties": {CONTRACT_PROPERTY: "1"}})),
            rule_set: Some(json!({"domainRules": [
                {"name": "r1", "type": FIELD_RULE_TYPE, "params": {"field": "a"}},
                {"name": "r2", "type": FIELD_RULE_TYPE, "params": {"field": "a"}},
                {"name": "off", "type": FIELD_RULE_TYPE, "disabled": true, "params": {"x": "y"}}
            ]})),
        };
        let err = twice.contract("a.B").unwrap_err().to_string();
        assert!(err.contains("two RIFFLE_FIELD rules for field a"), "{err}");
    }

    #[test]
    fn tightening_a_contract_is_named_and_loosening_is_not() {
        let base = r#"{"subject":"a.B","schema":"events/b.avsc","max_event_time_skew_secs":60,
            "fields":{"n":{"min":1,"max":10},"c":{"allowed":["X","Y"]},"s":{}}}"#;
        let tighter = r#"{"subject":"a.B","schema":"events/b.avsc","max_event_time_skew_secs":30,
            "fields":{"n":{"min":2,"max":9,"required":true},"c":{"allowed":["X"]},
            "s":{"pattern":"^s"},"t":{"required":true}}}"#;
        let looser = r#"{"subject":"a.B","schema":"events/b.avsc",
            "fields":{"n":{"min":0},"c":{"allowed":["X","Y","Z"]}}}"#;
        let old = Contract::parse("base", base).unwrap();
        let found = tightenings(&old, &Contract::parse("tighter", tighter).unwrap());
        for expected in [
            "event time skew limit lowered to 30 s",
            "field n: newly required",
            "field n: min raised to 2",
            "field n: max lowered to 9",
            "field c: allowed values removed: [\"Y\"]",
            "field s: pattern ^s added",
            "field t: newly required",
        ] {
            assert!(
                found.iter().any(|f| f == expected),
                "{expected:?} not in {found:?}"
            );
        }
        assert_eq!(found.len(), 7, "{found:?}");
        assert!(tightenings(&old, &Contract::parse("looser", looser).unwrap()).is_empty());
    }
}
