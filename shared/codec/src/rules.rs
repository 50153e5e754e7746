//! Per-subject contracts (`schemas/rules/<subject>.json`): the validation rules the validator
//! enforces beyond the schema, and how the enricher derives the view key and metric.
//!
//! Contracts are parsed once at start-up; regexes compile once; checks borrow the record.

use std::collections::HashMap;

use regex::Regex;
use serde::Deserialize;

use crate::CompiledSchema;
use crate::datum::{Field, Record};

include!(concat!(env!("OUT_DIR"), "/contracts.rs"));

/// Why a contract file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// Not valid JSON, or not the contract shape.
    #[error("contract {file}: {reason}")]
    Parse {
        /// The file name.
        file: String,
        /// What serde said.
        reason: String,
    },
    /// A `pattern` that is not a regular expression.
    #[error("contract {file}: field `{field}`: bad pattern: {reason}")]
    Pattern {
        /// The file name.
        file: String,
        /// The field with the pattern.
        field: String,
        /// What the regex compiler said.
        reason: String,
    },
}

/// A contract as written: a file of `schemas/rules/`, or read back from the registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContract {
    pub(crate) subject: String,
    pub(crate) schema: String,
    #[serde(default)]
    pub(crate) max_event_time_skew_secs: Option<i64>,
    #[serde(default)]
    pub(crate) fields: std::collections::BTreeMap<String, RawFieldRule>,
    #[serde(default)]
    pub(crate) enrich: Option<EnrichSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFieldRule {
    #[serde(default)]
    pub(crate) required: bool,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) pattern: Option<String>,
    pub(crate) allowed: Option<Vec<String>>,
}

pub(crate) fn parse_raw(file: &str, text: &str) -> Result<RawContract, ContractError> {
    serde_json::from_str(text).map_err(|e| ContractError::Parse {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

/// What one field must satisfy when present (non-null).
#[derive(Debug)]
pub struct FieldRule {
    name: String,
    required: bool,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<Regex>,
    allowed: Option<Vec<String>>,
}

/// How the enricher turns an event of this subject into a view contribution.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSpec {
    /// Reference data to join, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Lookup>,
    /// View key template: `{name}` is replaced by a reference attribute or a payload field.
    pub agg_key: String,
    /// How the aggregated value is computed.
    pub metric: MetricSpec,
    /// Tumbling window length.
    pub window_secs: u32,
    /// How long after its window's end an event still counts (ADR 0021): once the enricher's
    /// event-time watermark passes the window's end plus this, the window is final and later
    /// events of it are archived as late and left out of the view. Unset: the default,
    /// [`DEFAULT_ALLOWED_LATENESS_SECS`] (left out of the registered form, so contracts
    /// registered before the field existed keep their fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness_secs: Option<u32>,
}

/// Allowed lateness of a subject whose contract names none: two minutes, far more than the
/// disorder between producers sharing a shard (their clocks and batching), far less than the
/// hour of event-time skew the validator accepts.
pub const DEFAULT_ALLOWED_LATENESS_SECS: u32 = 120;

/// A join against the reference table: item `pk = key_prefix + payload[field]`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// Payload field holding the reference id.
    pub field: String,
    /// Prefix of the reference item's key.
    pub key_prefix: String,
}

/// The metric is the product of these numeric payload fields (a single field is itself).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Fields multiplied together.
    pub product: Vec<String>,
}

/// The contract of one subject.
#[derive(Debug)]
pub struct Contract {
    /// Registry subject.
    pub subject: String,
    /// Schema file under `schemas/`.
    pub schema_file: String,
    /// Largest accepted |ingest_time - event_time|.
    pub max_event_time_skew_ms: Option<i64>,
    /// Field rules in file order.
    pub fields: Vec<FieldRule>,
    /// Enrichment, if the subject is aggregated.
    pub enrich: Option<EnrichSpec>,
}

/// Which rule a record broke: a stable, machine-readable code for rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// A required field is null, empty or absent from the writer schema.
    Missing,
    /// Below `min`.
    BelowMin,
    /// Above `max`.
    AboveMax,
    /// A string that does not match `pattern`.
    Pattern,
    /// A value outside `allowed`.
    NotAllowed,
    /// A rule of the wrong kind for the field's type (e.g. `min` on a string).
    WrongType,
    /// Event time too far from ingest time.
    EventTimeSkew,
}

impl ViolationKind {
    /// The code written into reject messages.
    pub fn code(self) -> &'static str {
        match self {
            ViolationKind::Missing => "missing_field",
            ViolationKind::BelowMin => "below_min",
            ViolationKind::AboveMax => "above_max",
            ViolationKind::Pattern => "pattern_mismatch",
            ViolationKind::NotAllowed => "not_allowed",
            ViolationKind::WrongType => "wrong_type",
            ViolationKind::EventTimeSkew => "event_time_skew",
        }
    }
}

/// A broken rule, with enough detail for a human.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// The field, when the rule is about one.
    pub field: Option<String>,
    /// What was found.
    pub detail: String,
}

/// A contract's field rules resolved against one writer schema: the position of each rule's
/// field, so checking a record of that schema indexes instead of looking names up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPlan {
    schema_id: u32,
    positions: Vec<Option<usize>>,
}

impl Contract {
    /// Parses one contract file.
    ///
    /// # Errors
    /// Bad JSON, unknown keys, or a bad pattern.
    pub fn parse(file: &str, text: &str) -> Result<Contract, ContractError> {
        Contract::compile(file, parse_raw(file, text)?)
    }

    /// Compiles a contract read from a file or from the registry (`file` names it in errors).
    pub(crate) fn compile(file: &str, raw: RawContract) -> Result<Contract, ContractError> {
        let bad = |reason: String| ContractError::Parse {
            file: file.to_string(),
            reason,
        };
        if let Some(skew) = raw.max_event_time_skew_secs.filter(|s| *s < 0) {
            return Err(bad(format!("the event time skew limit {skew} is negative")));
        }
        if raw.enrich.as_ref().is_some_and(|e| e.window_secs == 0) {
            return Err(bad("enrich.window_secs must be at least 1".into()));
        }
        for (name, rule) in &raw.fields {
            if let (Some(min), Some(max)) = (rule.min, rule.max)
                && min > max
            {
                return Err(bad(format!("field `{name}`: min {min} above max {max}")));
            }
        }
        let mut fields = Vec::with_capacity(raw.fields.len());
        for (name, rule) in raw.fields {
            let pattern = match rule.pattern {
                Some(p) => Some(Regex::new(&p).map_err(|e| ContractError::Pattern {
                    file: file.to_string(),
                    field: name.clone(),
                    reason: e.to_string(),
                })?),
                None => None,
            };
            fields.push(FieldRule {
                name,
                required: rule.required,
                min: rule.min,
                max: rule.max,
                pattern,
                allowed: rule.allowed,
            });
        }
        Ok(Contract {
            subject: raw.subject,
            schema_file: raw.schema,
            max_event_time_skew_ms: raw.max_event_time_skew_secs.map(|s| s.saturating_mul(1000)),
            fields,
            enrich: raw.enrich,
        })
    }

    /// Checks a decoded payload and its envelope times; the first broken rule wins.
    ///
    /// # Errors
    /// The [`Violation`].
    pub fn check(
        &self,
        record: &Record<'_>,
        event_time: i64,
        ingest_time: i64,
    ) -> Result<(), Violation> {
        self.check_skew(event_time, ingest_time)?;
        self.fields
            .iter()
            .try_for_each(|rule| rule.check(record.get(&rule.name)))
    }

    fn check_skew(&self, event_time: i64, ingest_time: i64) -> Result<(), Violation> {
        if let Some(max) = self.max_event_time_skew_ms {
            let skew = ingest_time.saturating_sub(event_time).saturating_abs();
            if skew > max {
                return Err(Violation {
                    kind: ViolationKind::EventTimeSkew,
                    field: None,
                    detail: format!("event time is {skew} ms from ingest time, limit {max} ms"),
                });
            }
        }
        Ok(())
    }

    /// Resolves the field rules against `schema`, once per schema.
    pub fn plan(&self, schema: &CompiledSchema) -> CheckPlan {
        CheckPlan {
            schema_id: schema.id(),
            positions: self
                .fields
                .iter()
                .map(|rule| schema.field_index(&rule.name))
                .collect(),
        }
    }

    /// [`Contract::check`] through a [`CheckPlan`] of this contract. A plan made for another
    /// schema than the record's is not used: the check falls back to looking names up.
    ///
    /// # Errors
    /// The [`Violation`].
    pub fn check_planned(
        &self,
        plan: &CheckPlan,
        record: &Record<'_>,
        event_time: i64,
        ingest_time: i64,
    ) -> Result<(), Violation> {
        if plan.schema_id != record.schema().id() || plan.positions.len() != self.fields.len() {
            return self.check(record, event_time, ingest_time);
        }
        self.check_skew(event_time, ingest_time)?;
        self.fields
            .iter()
            .zip(&plan.positions)
            .try_for_each(|(rule, position)| rule.check(position.and_then(|p| record.field(p))))
    }
}

impl FieldRule {
    /// The field the rule is about.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this rule refuses that `was` (the same field's rule before, if any) accepted.
    pub(crate) fn tighter_than(&self, was: Option<&FieldRule>) -> Vec<String> {
        let mut found = Vec::new();
        if self.required && !was.is_some_and(|w| w.required) {
            found.push("newly required".to_owned());
        }
        if let Some(min) = self.min
            && was.and_then(|w| w.min).is_none_or(|old| min > old)
        {
            found.push(format!("min raised to {min}"));
        }
        if let Some(max) = self.max
            && was.and_then(|w| w.max).is_none_or(|old| max < old)
        {
            found.push(format!("max lowered to {max}"));
        }
        if let Some(pattern) = &self.pattern {
            match was.and_then(|w| w.pattern.as_ref()) {
                None => found.push(format!("pattern {} added", pattern.as_str())),
                Some(old) if old.as_str() != pattern.as_str() => found.push(format!(
                    "pattern changed from {} to {}",
                    old.as_str(),
                    pattern.as_str()
                )),
                Some(_) => {}
            }
        }
        if let Some(allowed) = &self.allowed {
            match was.and_then(|w| w.allowed.as_ref()) {
                None => found.push(format!("allowed values {allowed:?} added")),
                Some(old) => {
                    let removed: Vec<&String> =
                        old.iter().filter(|v| !allowed.contains(v)).collect();
                    if !removed.is_empty() {
                        found.push(format!("allowed values removed: {removed:?}"));
                    }
                }
            }
        }
        found
    }

    fn check(&self, value: Option<Field<'_>>) -> Result<(), Violation> {
        let fail = |kind, detail: String| {
            Err(Violation {
                kind,
                field: Some(self.name.clone()),
                detail,
            })
        };
        let value = match value {
            None | Some(Field::Null) if self.required => {
                return fail(ViolationKind::Missing, "absent".into());
            }
            Some(Field::Str("")) if self.required => {
                return fail(ViolationKind::Missing, "empty".into());
            }
            None | Some(Field::Null) => return Ok(()),
            Some(v) => v,
        };
        if self.min.is_some() || self.max.is_some() {
            let Some(n) = value.as_f64() else {
                return fail(ViolationKind::WrongType, "min/max on a non-number".into());
            };
            if let Some(min) = self.min.filter(|min| n < *min || n.is_nan()) {
                return fail(ViolationKind::BelowMin, format!("{n} < {min}"));
            }
            if let Some(max) = self.max.filter(|max| n > *max) {
                return fail(ViolationKind::AboveMax, format!("{n} > {max}"));
            }
        }
        if let Some(pattern) = &self.pattern {
            let Some(s) = value.as_str() else {
                return fail(ViolationKind::WrongType, "pattern on a non-string".into());
            };
            if !pattern.is_match(s) {
                return fail(
                    ViolationKind::Pattern,
                    format!("{s:?} !~ /{}/", pattern.as_str()),
                );
            }
        }
        if let Some(allowed) = &self.allowed {
            let rendered = value.render().unwrap_or_default();
            if !allowed.contains(&rendered) {
                return fail(
                    ViolationKind::NotAllowed,
                    format!("{rendered:?} not in {allowed:?}"),
                );
            }
        }
        Ok(())
    }
}

impl EnrichSpec {
    /// The reference id to look up for this record, if the subject joins reference data.
    pub fn lookup_key(&self, record: &Record<'_>) -> Option<String> {
        let lookup = self.lookup.as_ref()?;
        let id = record.get(&lookup.field)?.render()?;
        Some(format!("{}{id}", lookup.key_prefix))
    }

    /// Fills the `agg_key` template from reference attributes first, then payload fields;
    /// a name found in neither becomes `unknown`, so the event still counts somewhere visible.
    pub fn agg_key(&self, record: &Record<'_>, attributes: &HashMap<String, String>) -> String {
        self.agg_key_with(attributes, |_, name| {
            record.get(name).and_then(|f| f.render())
        })
    }

    /// The payload values of the `agg_key` template's names, in template order, for
    /// [`EnrichSpec::agg_key_from`] once the reference attributes are known (so the payload is
    /// read once, before the reference lookup).
    pub fn agg_key_fields(&self, record: &Record<'_>) -> Vec<Option<String>> {
        let mut values = Vec::new();
        self.agg_key_with(&HashMap::new(), |_, name| {
            values.push(record.get(name).and_then(|f| f.render()));
            None
        });
        values
    }

    /// [`EnrichSpec::agg_key`] from the values [`EnrichSpec::agg_key_fields`] took.
    pub fn agg_key_from(
        &self,
        fields: &[Option<String>],
        attributes: &HashMap<String, String>,
    ) -> String {
        self.agg_key_with(attributes, |i, _| fields.get(i).cloned().flatten())
    }

    /// Fills the template; `field(i, name)` gives the payload value of the `i`th name.
    fn agg_key_with(
        &self,
        attributes: &HashMap<String, String>,
        mut field: impl FnMut(usize, &str) -> Option<String>,
    ) -> String {
        let mut out = String::with_capacity(self.agg_key.len() + 16);
        let mut rest = self.agg_key.as_str();
        let mut index = 0;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            let name = &after[..close];
            match attributes.get(name) {
                Some(v) => out.push_str(v),
                None => match field(index, name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str("unknown"),
                },
            }
            index += 1;
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The metric: product of the named numeric fields; `None` if one is missing or not numeric.
    pub fn metric(&self, record: &Record<'_>) -> Option<f64> {
        self.metric
            .product
            .iter()
            .try_fold(1.0, |acc, name| record.get(name)?.as_f64().map(|v| acc * v))
    }

    /// The allowed lateness, in millis.
    pub fn allowed_lateness_ms(&self) -> i64 {
        i64::from(
            self.allowed_lateness_secs
                .unwrap_or(DEFAULT_ALLOWED_LATENESS_SECS),
        ) * 1000
    }

    /// The event-time watermark at which the window starting at `window_start` is final: its
    /// end plus the allowed lateness.
    pub fn closes_at(&self, window_start: i64) -> i64 {
        closes_at(window_start, self.window_secs, self.allowed_lateness_ms())
    }

    /// Start of the tumbling window holding `event_time` (epoch millis).
    pub fn window_start(&self, event_time: i64) -> i64 {
        let len = i64::from(self.window_secs.max(1)) * 1000;
        // Event times are the producer's: near i64::MIN the window's start is below what an
        // i64 holds, and the earliest representable time stands in for it.
        event_time.div_euclid(len).saturating_mul(len)
    }
}

/// The event-time watermark at which a window of `window_secs` starting at `window_start`
/// is final, given `lateness_ms` of allowed lateness (saturating: a window near the end of
/// time never closes).
pub fn closes_at(window_start: i64, window_secs: u32, lateness_ms: i64) -> i64 {
    window_start
        .saturating_add(i64::from(window_secs) * 1000)
        .saturating_add(lateness_ms)
}

/// Every contract bundled from `schemas/rules/`, by subject.
///
/// # Errors
/// The first contract that does not parse (a build-time mistake; tests catch it).
pub fn bundled() -> Result<HashMap<String, Contract>, ContractError> {
    BUNDLED_CONTRACTS
        .iter()
        .map(|(file, text)| Contract::parse(file, text).map(|c| (c.subject.clone(), c)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::CompiledSchema;
    use crate::datum::read_record;

    const SENSOR: &str = include_str!("../../../schemas/events/sensor_reading.avsc");

    fn sensor(device: &str, value: f64, battery: Option<f32>) -> Vec<u8> {
        use apache_avro::types::Value;
        let schema = apache_avro::Schema::parse_str(SENSOR).unwrap();
        let v = Value::Record(vec![
            ("device_id".into(), Value::String(device.into())),
            ("kind".into(), Value::Enum(0, "TEMPERATURE".into())),
            ("value".into(), Value::Double(value)),
            (
                "battery".into(),
                Value::Union(
                    u32::from(battery.is_some()),
                    Box::new(battery.map_or(Value::Null, Value::Float)),
                ),
            ),
            ("read_at".into(), Value::TimestampMillis(0)),
            ("tags".into(), Value::Map(HashMap::new())),
        ]);
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(v)
            .unwrap()
    }

    #[test]
    fn bundled_contracts_parse_and_name_existing_schemas() {
        let all = bundled().unwrap();
        assert!(all.len() >= 3);
        for c in all.values() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../schemas")
                .join(&c.schema_file);
            let text = std::fs::read_to_string(&path).unwrap();
            let schema = CompiledSchema::parse(1, &text).unwrap();
            assert_eq!(schema.full_name(), Some(c.subject.as_str()));
            for rule in &c.fields {
                assert!(
                    schema.field_index(&rule.name).is_some(),
                    "{}: {}",
                    c.subject,
                    rule.name
                );
            }
        }
    }

    #[test]
    fn checks_ranges_patterns_and_skew() {
        let all = bundled().unwrap();
        let contract = &all["com.riffle.iot.SensorReading"];
        let schema = CompiledSchema::parse(1, SENSOR).unwrap();
        let ok = sensor("dev-0001", 21.5, Some(0.5));
        assert_eq!(
            contract.check(&read_record(&schema, &ok).unwrap(), 0, 1000),
            Ok(())
        );

        let cases = [
            (sensor("dev-1", 21.5, None), ViolationKind::Pattern),
            (sensor("", 21.5, None), ViolationKind::Missing),
            (sensor("dev-0001", 5000.0, None), ViolationKind::AboveMax),
            (sensor("dev-0001", f64::NAN, None), ViolationKind::BelowMin),
            (sensor("dev-0001", 1.0, Some(1.5)), ViolationKind::AboveMax),
        ];
        let plan = contract.plan(&schema);
        let other_schema = contract.plan(&CompiledSchema::parse(2, SENSOR).unwrap());
        for (bytes, kind) in cases {
            let record = read_record(&schema, &bytes).unwrap();
            let err = contract.check(&record, 0, 0).unwrap_err();
            assert_eq!(err.kind, kind, "{err:?}");
            for plan in [&plan, &other_schema] {
                assert_eq!(
                    contract.check_planned(plan, &record, 0, 0),
                    Err(err.clone())
                );
            }
        }
        let record = read_record(&schema, &ok).unwrap();
        assert_eq!(contract.check_planned(&plan, &record, 0, 1000), Ok(()));
        let skew = contract.check(&record, 0, 3_600_001).unwrap_err();
        assert_eq!(skew.kind, ViolationKind::EventTimeSkew);
        assert_eq!(
            contract.check_planned(&plan, &record, 0, 3_600_001),
            Err(skew)
        );
    }

    #[test]
    fn derives_key_metric_and_window() {
        let all = bundled().unwrap();
        let spec = all["com.riffle.iot.SensorReading"].enrich.clone().unwrap();
        let schema = CompiledSchema::parse(1, SENSOR).unwrap();
        let bytes = sensor("dev-0042", 3.0, None);
        let record = read_record(&schema, &bytes).unwrap();
        assert_eq!(spec.lookup_key(&record).as_deref(), Some("device#dev-0042"));
        let attrs = HashMap::from([("site".to_string(), "berlin".to_string())]);
        assert_eq!(
            spec.agg_key(&record, &attrs),
            "sensors:site=berlin:kind=TEMPERATURE"
        );
        assert_eq!(
            spec.agg_key(&record, &HashMap::new()),
            "sensors:site=unknown:kind=TEMPERATURE"
        );
        let fields = spec.agg_key_fields(&record);
        assert_eq!(fields, [None, Some("TEMPERATURE".to_string())]);
        for attributes in [attrs, HashMap::new()] {
            assert_eq!(
                spec.agg_key_from(&fields, &attributes),
                spec.agg_key(&record, &attributes)
            );
        }
        assert_eq!(spec.metric(&record), Some(3.0));
        assert_eq!(spec.window_start(125_000), 120_000);
        assert_eq!(spec.window_start(-1), -60_000);
        // A producer's extreme event time does not overflow (it would panic in debug builds
        // and wrap to a window in the future in release ones).
        assert_eq!(spec.window_start(i64::MIN), i64::MIN);
        let start = spec.window_start(i64::MAX);
        assert!(i64::MAX - start < 60_000);
    }

    #[test]
    fn bad_contracts_are_errors() {
        assert!(Contract::parse("x.json", "{").is_err());
        assert!(Contract::parse("x.json", r#"{"subject":"a","schema":"b","oops":1}"#).is_err());
        let bad = r#"{"subject":"a","schema":"b","fields":{"f":{"pattern":"("}}}"#;
        assert!(matches!(
            Contract::parse("x.json", bad),
            Err(ContractError::Pattern { .. })
        ));
    }
}
