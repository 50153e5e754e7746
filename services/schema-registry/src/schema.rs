//! Parsing a submitted schema into what the registry keys it by.
//!
//! Two submissions are "the same schema" when their fingerprints match: the SHA-256 of the
//! parsed schema written back out in one fixed form, so whitespace, attribute order and
//! other spellings of one schema share one id.
//!
//! Not the Avro Parsing Canonical Form: it drops defaults, docs and logical types, so a new
//! version that only adds a default (the usual compatible change) would silently get the old
//! id, and readers resolving by that id would never see the default.

use apache_avro::Schema;
use riffle_codec::registered::DataContract;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// DynamoDB's hard limit on one item (name and value bytes of all attributes).
pub const DYNAMODB_MAX_ITEM_BYTES: usize = 400 * 1024;

/// Largest schema text accepted: one item holds the text plus keys of up to
/// [`crate::MAX_SUBJECT_BYTES`] and a few small attributes, so leave generous headroom.
pub const MAX_SCHEMA_BYTES: usize = DYNAMODB_MAX_ITEM_BYTES - 16 * 1024;

/// The only schema type this registry speaks; others are refused rather than stored unchecked.
pub const AVRO: &str = "AVRO";

/// A schema that parsed, with the keys the registry stores it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSchema {
    /// The text as first submitted: it keeps docs and defaults, which readers need.
    pub text: String,
    /// The schema in one fixed form: the parsed schema serialized back to JSON, keeping
    /// everything that changes how data is read (defaults, logical types, aliases, order).
    pub normalized: String,
    /// Lower-case hex SHA-256 of `normalized`.
    pub fingerprint: String,
    /// Always [`AVRO`] for now; stored so other types can slot in later.
    pub schema_type: String,
    /// The data-contract fields (`metadata`, `ruleSet`) registered with the schema.
    pub contract: DataContract,
}

/// Refuses a schema with a value that takes no bytes yet holds more values than the stages'
/// readers allow a short body (`riffle_codec::datum::MIN_STEP_BUDGET`): records of nulls
/// nested so that each uses the next twice make a record of a few bytes cost 2^depth steps
/// to read. Nothing a producer means holds thousands of nulls in no bytes.
///
/// Counted on the registry's own parse: compiling the schema as the stages do would keep it
/// for the life of the process (they compile each schema id once), and the registry checks
/// every schema it is sent (the registry fuzz target grew to 2 GiB that way).
fn refuse_empty_blowups(schema: &Schema) -> Result<()> {
    let Ok(values) = riffle_codec::datum::largest_empty_value_of(schema) else {
        // The registry's own parse accepted it; the stages will say what they cannot read.
        return Ok(());
    };
    let limit = riffle_codec::datum::MIN_STEP_BUDGET as u64;
    if values > limit {
        return Err(Error::InvalidSchema(format!(
            "a value of this schema holds {values} values in zero bytes (records of nulls \
             nested in one another); readers take at most {limit}"
        )));
    }
    Ok(())
}

/// Parses `text` as a schema of `schema_type` (`None` means Avro, as the API defines).
pub fn parse(text: &str, schema_type: Option<&str>) -> Result<ParsedSchema> {
    parse_with(text, schema_type, &DataContract::default())
}

/// [`parse`] with data-contract fields. Confluent's clients may send contract fields of their
/// own (tags, CEL rules), which are kept as sent; Riffle's own must read as a contract of the
/// schema's record (ADR 0020), checked here so a broken rule is refused at registration
/// instead of rejecting every event later. The fields count in the fingerprint: the same
/// schema with another contract is a new version, as in Confluent's registry.
pub fn parse_with(
    text: &str,
    schema_type: Option<&str>,
    contract: &DataContract,
) -> Result<ParsedSchema> {
    let schema_type = schema_type.unwrap_or(AVRO);
    if !schema_type.eq_ignore_ascii_case(AVRO) {
        return Err(Error::InvalidSchema(format!(
            "schema type {schema_type} is not supported; only {AVRO} is"
        )));
    }
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(Error::InvalidSchema(format!(
            "schema is {} bytes, more than the {MAX_SCHEMA_BYTES} this registry stores",
            text.len()
        )));
    }
    let schema = Schema::parse_str(text).map_err(|e| Error::InvalidSchema(e.to_string()))?;
    crate::compat::readable(text).map_err(Error::InvalidSchema)?;
    refuse_empty_blowups(&schema)?;
    let normalized = serde_json::to_string(&schema)
        .map_err(|e| Error::InvalidSchema(format!("schema cannot be written back: {e}")))?;
    if !contract.is_empty() {
        check_contract(&schema, contract)?;
    }
    let fingerprint = fingerprint(&normalized, contract);
    Ok(ParsedSchema {
        text: text.to_owned(),
        normalized,
        fingerprint,
        schema_type: AVRO.to_owned(),
        contract: contract.clone(),
    })
}

/// The fingerprint of a schema in its fixed form with contract fields: SHA-256 of the schema,
/// then, when there are contract fields, a newline and the fields as JSON. serde_json writes
/// object keys sorted, so key order in a request does not matter; the caller passes fields
/// [`DataContract::normalized`], so members that say nothing do not either.
pub fn fingerprint(normalized: &str, contract: &DataContract) -> String {
    let mut digest = Sha256::new();
    digest.update(normalized.as_bytes());
    if !contract.is_empty() {
        // Serializing JSON values to a string cannot fail.
        let fields = serde_json::to_string(contract).unwrap_or_default();
        digest.update(b"\n");
        digest.update(fields.as_bytes());
    }
    hex(&digest.finalize())
}

/// Refuses contract fields that do not read as a contract of `schema`'s record.
fn check_contract(schema: &Schema, contract: &DataContract) -> Result<()> {
    let bad = |why: String| Error::InvalidSchema(format!("contract: {why}"));
    for (name, value) in [
        ("metadata", &contract.metadata),
        ("ruleSet", &contract.rule_set),
    ] {
        if !matches!(value, None | Some(serde_json::Value::Object(_))) {
            return Err(bad(format!("{name} is not an object")));
        }
    }
    let subject = match schema {
        Schema::Record(r) => r.name.fullname(None),
        _ => String::new(),
    };
    match contract.contract(&subject) {
        Ok(Some(_)) if subject.is_empty() => Err(bad("a contract needs a record schema".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const USER: &str = r#"{"type":"record","name":"User","namespace":"riffle","fields":[{"name":"id","type":"long"}]}"#;

    /// Records L1..Ln, each holding the previous one twice (defined, then by name), down to a
    /// record of a null; `extra` fields go on the outermost record.
    pub(crate) fn doubling(depth: usize, extra: &str) -> String {
        let mut schema =
            r#"{"type":"record","name":"L0","fields":[{"name":"n","type":"null"}]}"#.to_owned();
        for level in 1..=depth {
            let more = if level == depth { extra } else { "" };
            schema = format!(
                r#"{{"type":"record","name":"L{level}","fields":[{{"name":"a","type":{schema}}},{{"name":"b","type":"L{}"}}{more}]}}"#,
                level - 1
            );
        }
        schema
    }

    #[test]
    fn schemas_the_compatibility_checks_cannot_read_are_refused() {
        // Found by the registry_requests fuzz target: apache-avro passes over a field entry
        // that is not an object, the compatibility checks do not, so such a schema was
        // stored and every later registration under its subject answered 500.
        let stray = r#"{"type":"record","name":"User","namespace":"riffle","fields":[
            {"name":"id","type":"long"}, 33, {"name":"email","type":"string"}]}"#;
        assert!(Schema::parse_str(stray).is_ok(), "apache-avro reads it");
        let err = parse(stray, None).unwrap_err();
        assert!(matches!(err, Error::InvalidSchema(_)), "{err:?}");
        assert!(err.to_string().contains("without a name"), "{err}");
    }

    #[test]
    fn values_of_nulls_nested_to_blow_up_are_refused_at_once() {
        let started = std::time::Instant::now();
        let err = parse(&doubling(30, ""), None).unwrap_err().to_string();
        assert!(err.contains("in zero bytes"), "{err}");
        // Milliseconds in a release build; a loaded debug build gets room, not minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A few levels are fine.
        assert!(parse(&doubling(6, ""), None).is_ok());
    }

    #[test]
    fn spelling_does_not_change_the_fingerprint() {
        let spaced = r#"{
            "namespace": "riffle", "name": "User", "type": "record",
            "fields": [ { "type": "long", "name": "id" } ]
        }"#;
        let a = parse(USER, None).unwrap();
        let b = parse(spaced, Some("AVRO")).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.normalized, b.normalized);
        assert_ne!(a.text, b.text);
        assert_eq!(a.fingerprint.len(), 64);
    }

    #[test]
    fn different_schemas_differ() {
        let other = USER.replace("\"long\"", "\"int\"");
        assert_ne!(
            parse(USER, None).unwrap().fingerprint,
            parse(&other, None).unwrap().fingerprint
        );
    }

    #[test]
    fn defaults_docs_and_logical_types_make_a_new_schema() {
        let with_default = USER.replace(r#""type":"long"}"#, r#""type":"long","default":0}"#);
        let with_doc = USER.replace(r#""name":"User","#, r#""name":"User","doc":"who","#);
        let timestamp = USER.replace(
            r#""type":"long"}"#,
            r#""type":{"type":"long","logicalType":"timestamp-millis"}}"#,
        );
        let base = parse(USER, None).unwrap().fingerprint;
        for other in [with_default, with_doc, timestamp] {
            assert_ne!(parse(&other, None).unwrap().fingerprint, base, "{other}");
        }
    }

    #[test]
    fn project_schemas_parse() {
        let text = include_str!("../../../schemas/envelope.avsc");
        let parsed = parse(text, None).unwrap();
        assert!(parsed.normalized.contains("\"name\""));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            parse("{\"type\":\"nope\"}", None),
            Err(Error::InvalidSchema(_))
        ));
        assert!(matches!(
            parse("not json", None),
            Err(Error::InvalidSchema(_))
        ));
        assert!(matches!(
            parse(USER, Some("PROTOBUF")),
            Err(Error::InvalidSchema(_))
        ));
        let huge = format!("\"{}\"", "x".repeat(MAX_SCHEMA_BYTES));
        assert!(matches!(parse(&huge, None), Err(Error::InvalidSchema(_))));
    }
}
