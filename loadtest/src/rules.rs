//! The generator's own reading of `schemas/rules/*.json`.
//!
//! The ground truth must not be computed by the code it checks, so this module reads the same
//! data files independently: which fields carry which rules (to break exactly one of them), the
//! event-time skew limit, and how the view key, metric and window are derived.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;
use serde::Deserialize;

use crate::LoadError;

#[derive(Debug, Deserialize)]
struct RawRules {
    subject: String,
    #[serde(default)]
    max_event_time_skew_secs: Option<i64>,
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
    #[serde(default)]
    enrich: Option<RawEnrich>,
}

#[derive(Debug, Deserialize)]
struct RawField {
    #[serde(default)]
    required: bool,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawEnrich {
    #[serde(default)]
    lookup: Option<RawLookup>,
    agg_key: String,
    metric: RawMetric,
    window_secs: u32,
}

#[derive(Debug, Deserialize)]
struct RawLookup {
    field: String,
    key_prefix: String,
}

#[derive(Debug, Deserialize)]
struct RawMetric {
    product: Vec<String>,
}

/// What the rules of one field say, as far as generating events needs to know.
#[derive(Debug)]
pub(crate) struct FieldRules {
    pub name: String,
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<Regex>,
}

/// One subject's rules file, read for the generator.
#[derive(Debug)]
pub(crate) struct SubjectRules {
    pub subject: String,
    pub max_skew_ms: Option<i64>,
    pub fields: Vec<FieldRules>,
    /// Reference join: payload field and key prefix.
    pub lookup: Option<(String, String)>,
    pub agg_key: String,
    pub metric_product: Vec<String>,
    pub window_ms: i64,
}

impl SubjectRules {
    pub fn parse(file: &str, text: &str) -> Result<Self, LoadError> {
        let bad = |reason: String| LoadError::Rules {
            file: file.to_string(),
            reason,
        };
        let raw: RawRules = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let enrich = raw
            .enrich
            .ok_or_else(|| bad("no `enrich` section: the subject is not aggregated".into()))?;
        let mut fields = Vec::with_capacity(raw.fields.len());
        for (name, rule) in raw.fields {
            let pattern = match rule.pattern {
                Some(p) => Some(Regex::new(&p).map_err(|e| bad(format!("{name}: {e}")))?),
                None => None,
            };
            fields.push(FieldRules {
                name,
                required: rule.required,
                min: rule.min,
                max: rule.max,
                pattern,
            });
        }
        Ok(SubjectRules {
            subject: raw.subject,
            max_skew_ms: raw.max_event_time_skew_secs.map(|s| s.saturating_mul(1000)),
            fields,
            lookup: enrich.lookup.map(|l| (l.field, l.key_prefix)),
            agg_key: enrich.agg_key,
            metric_product: enrich.metric.product,
            window_ms: i64::from(enrich.window_secs.max(1)) * 1000,
        })
    }

    /// Start of the tumbling window that `event_time` falls in.
    pub fn window_start(&self, event_time: i64) -> i64 {
        event_time.div_euclid(self.window_ms) * self.window_ms
    }

    /// Whether `value` would pass the field's pattern (true if it has none).
    pub fn pattern_accepts(&self, field: &str, value: &str) -> bool {
        self.fields
            .iter()
            .find(|f| f.name == field)
            .and_then(|f| f.pattern.as_ref())
            .is_none_or(|p| p.is_match(value))
    }
}

/// Fills `{name}` placeholders: reference attributes first, then the payload's fields, and
/// `unknown` for a name in neither (the rules files' meaning of a missing reference).
pub(crate) fn fill_template(
    template: &str,
    attributes: Option<&HashMap<String, String>>,
    payload_field: impl Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        let value = attributes
            .and_then(|a| a.get(name).cloned())
            .or_else(|| payload_field(name))
            .unwrap_or_else(|| "unknown".to_string());
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fills_from_attributes_then_payload_then_unknown() {
        let attrs = HashMap::from([("site".to_string(), "oslo".to_string())]);
        let payload = |n: &str| (n == "kind").then(|| "HUMIDITY".to_string());
        assert_eq!(
            fill_template("sensors:site={site}:kind={kind}", Some(&attrs), payload),
            "sensors:site=oslo:kind=HUMIDITY"
        );
        assert_eq!(
            fill_template("sensors:site={site}:kind={kind}", None, payload),
            "sensors:site=unknown:kind=HUMIDITY"
        );
        assert_eq!(fill_template("a{b", None, payload), "a{b");
    }

    #[test]
    fn windows_are_tumbling_and_floor_negative_times() {
        let rules = SubjectRules::parse(
            "x.json",
            r#"{"subject":"s","schema":"x","fields":{},"enrich":{"agg_key":"k","metric":{"product":[]},"window_secs":60}}"#,
        )
        .unwrap();
        assert_eq!(rules.window_start(125_000), 120_000);
        assert_eq!(rules.window_start(-1), -60_000);
        assert!(SubjectRules::parse("x.json", "{}").is_err());
        assert!(SubjectRules::parse("x.json", r#"{"subject":"s"}"#).is_err());
    }
}
