//! Schema compatibility: can data written with one Avro schema be read with another?
//!
//! Pure: schema texts in, a list of reasons out (empty means compatible). The rules are
//! Avro's schema resolution, applied to the schemas rather than to data:
//! - records match by (unqualified) name or a reader alias; reader fields find their writer
//!   field by name or by one of the reader field's aliases; a reader field the writer lacks
//!   needs a default; writer fields the reader lacks are skipped;
//! - int promotes to long, float and double; long to float and double; float to double;
//!   string and bytes read each other;
//! - an enum reader must know every writer symbol, unless it has a default symbol;
//! - fixed types match by name and size; arrays by items; maps by values;
//! - every branch of a writer union must resolve against the reader; a non-union writer
//!   resolves against a union reader when some branch reads it;
//! - logical types are read as their underlying type, as resolution does.
//!
//! Recursive types are checked coinductively: a (reader, writer) pair of named types that is
//! already being compared is assumed compatible, which is what stops the descent.
//!
//! The module works on the schema JSON itself rather than a parsed library type, so names,
//! namespaces and aliases are resolved exactly as this module documents. Texts reach it only
//! after [`crate::schema::parse`] accepted them.

use std::collections::{HashMap, HashSet};

use riffle_registry_client::CompatibilityLevel;
use serde_json::Value;

/// A schema text the checks could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// The schema being checked (the caller's fault).
    #[error("new schema: {0}")]
    New(String),
    /// A stored schema (the registry's fault: it accepted the text once).
    #[error("existing schema: {0}")]
    Existing(String),
}

/// Why `new` may not follow `existing` (oldest first) at `level`; empty when it may.
///
/// Non-transitive levels look at the last of `existing` only. Each message names the
/// direction that failed.
pub fn check(
    level: CompatibilityLevel,
    new: &str,
    existing: &[&str],
) -> Result<Vec<String>, CompatError> {
    let against: &[&str] = if level.is_transitive() {
        existing
    } else {
        match existing.split_last() {
            Some((last, _)) => std::slice::from_ref(last),
            None => &[],
        }
    };
    let mut messages = Vec::new();
    if against.is_empty() || level == CompatibilityLevel::None {
        return Ok(messages);
    }
    let new = Parsed::parse(new).map_err(CompatError::New)?;
    for old in against {
        let old = Parsed::parse(old).map_err(CompatError::Existing)?;
        if level.is_backward() {
            for m in resolve(&new, &old) {
                messages.push(format!("BACKWARD (new schema reading old data): {m}"));
            }
        }
        if level.is_forward() {
            for m in resolve(&old, &new) {
                messages.push(format!("FORWARD (old schema reading new data): {m}"));
            }
        }
    }
    Ok(messages)
}

/// Why `reader` cannot read data written with `writer`; empty when it can.
pub fn can_read(reader: &str, writer: &str) -> Result<Vec<String>, String> {
    Ok(resolve(&Parsed::parse(reader)?, &Parsed::parse(writer)?))
}

fn resolve(reader: &Parsed, writer: &Parsed) -> Vec<String> {
    let mut walk = Walk {
        reader,
        writer,
        assumed: HashSet::new(),
        messages: Vec::new(),
    };
    walk.types(&reader.root, &writer.root, "");
    walk.messages
}

/// A type in a schema, with named types replaced by their full name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Type {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(Box<Type>),
    Map(Box<Type>),
    Union(Vec<Type>),
    Named(String),
}

#[derive(Debug)]
struct Field {
    name: String,
    aliases: Vec<String>,
    ty: Type,
    has_default: bool,
}

#[derive(Debug)]
enum Definition {
    Record(Vec<Field>),
    Enum {
        symbols: Vec<String>,
        default: Option<String>,
    },
    Fixed(u64),
}

#[derive(Debug)]
struct Named {
    full_name: String,
    /// Aliases as full names (an alias without a dot takes the type's namespace).
    aliases: Vec<String>,
    definition: Definition,
}

/// A schema as the checks see it: its root type and its named types by full name.
#[derive(Debug)]
struct Parsed {
    root: Type,
    named: HashMap<String, Named>,
}

impl Parsed {
    fn parse(text: &str) -> Result<Parsed, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut named = HashMap::new();
        let root = parse_type(&json, None, &mut named)?;
        Ok(Parsed { root, named })
    }

    fn kind(&self, ty: &Type) -> &'static str {
        match ty {
            Type::Null => "null",
            Type::Boolean => "boolean",
            Type::Int => "int",
            Type::Long => "long",
            Type::Float => "float",
            Type::Double => "double",
            Type::Bytes => "bytes",
            Type::String => "string",
            Type::Array(_) => "array",
            Type::Map(_) => "map",
            Type::Union(_) => "union",
            Type::Named(name) => match self.named.get(name).map(|n| &n.definition) {
                Some(Definition::Record(_)) => "record",
                Some(Definition::Enum { .. }) => "enum",
                Some(Definition::Fixed(_)) => "fixed",
                None => "unknown",
            },
        }
    }
}

fn primitive(name: &str) -> Option<Type> {
    Some(match name {
        "null" => Type::Null,
        "boolean" => Type::Boolean,
        "int" => Type::Int,
        "long" => Type::Long,
        "float" => Type::Float,
        "double" => Type::Double,
        "bytes" => Type::Bytes,
        "string" => Type::String,
        _ => return None,
    })
}

/// `name` qualified by `namespace` unless it has a dot already.
fn qualify(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn namespace_of(full_name: &str) -> Option<&str> {
    full_name.rsplit_once('.').map(|(ns, _)| ns)
}

fn simple_name(full_name: &str) -> &str {
    full_name
        .rsplit_once('.')
        .map_or(full_name, |(_, name)| name)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_type(
    json: &Value,
    namespace: Option<&str>,
    named: &mut HashMap<String, Named>,
) -> Result<Type, String> {
    match json {
        Value::String(name) => {
            if let Some(ty) = primitive(name) {
                return Ok(ty);
            }
            // A reference: the enclosing namespace first, then the name as written.
            let qualified = qualify(name, namespace);
            if named.contains_key(&qualified) {
                Ok(Type::Named(qualified))
            } else if named.contains_key(name.as_str()) {
                Ok(Type::Named(name.clone()))
            } else {
                Err(format!("unknown type {name}"))
            }
        }
        Value::Array(branches) => branches
            .iter()
            .map(|b| parse_type(b, namespace, named))
            .collect::<Result<_, _>>()
            .map(Type::Union),
        Value::Object(object) => {
            let ty = object.get("type").ok_or("a type object without \"type\"")?;
            let Some(kind) = ty.as_str() else {
                // {"type": {...}} or {"type": [...]}: the inner type, with any logical type
                // around it ignored.
                return parse_type(ty, namespace, named);
            };
            match kind {
                "array" => {
                    let items = object.get("items").ok_or("an array without items")?;
                    Ok(Type::Array(Box::new(parse_type(items, namespace, named)?)))
                }
                "map" => {
                    let values = object.get("values").ok_or("a map without values")?;
                    Ok(Type::Map(Box::new(parse_type(values, namespace, named)?)))
                }
                "record" | "error" | "enum" | "fixed" => {
                    parse_named(kind, object, namespace, named)
                }
                // A primitive with attributes (a logical type, say) or a reference.
                other => parse_type(&Value::String(other.to_owned()), namespace, named),
            }
        }
        other => Err(format!("not a schema: {other}")),
    }
}

fn parse_named(
    kind: &str,
    object: &serde_json::Map<String, Value>,
    namespace: Option<&str>,
    named: &mut HashMap<String, Named>,
) -> Result<Type, String> {
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a {kind} without a name"))?;
    let own_namespace = if name.contains('.') {
        None
    } else {
        object
            .get("namespace")
            .and_then(Value::as_str)
            .or(namespace)
    };
    let full_name = qualify(name, own_namespace);
    let inner_namespace = namespace_of(&full_name).map(str::to_owned);
    let aliases = strings(object.get("aliases"))
        .iter()
        .map(|a| qualify(a, inner_namespace.as_deref()))
        .collect();
    // Registered before the fields are read, so a record may refer to itself.
    named.insert(
        full_name.clone(),
        Named {
            full_name: full_name.clone(),
            aliases,
            definition: Definition::Record(Vec::new()),
        },
    );
    let definition = match kind {
        "enum" => Definition::Enum {
            symbols: strings(object.get("symbols")),
            default: object
                .get("default")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        "fixed" => Definition::Fixed(
            object
                .get("size")
                .and_then(Value::as_u64)
                .ok_or("a fixed without a size")?,
        ),
        _ => {
            let mut fields = Vec::new();
            for field in object
                .get("fields")
                .and_then(Value::as_array)
                .ok_or("a record without fields")?
            {
                let field_name = field
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a field without a name")?;
                let ty = field.get("type").ok_or("a field without a type")?;
                fields.push(Field {
                    name: field_name.to_owned(),
                    aliases: strings(field.get("aliases")),
                    ty: parse_type(ty, inner_namespace.as_deref(), named)?,
                    has_default: field.get("default").is_some(),
                });
            }
            Definition::Record(fields)
        }
    };
    if let Some(entry) = named.get_mut(&full_name) {
        entry.definition = definition;
    }
    Ok(Type::Named(full_name))
}

struct Walk<'a> {
    reader: &'a Parsed,
    writer: &'a Parsed,
    /// (reader, writer) named-type pairs being compared further up: assumed compatible.
    assumed: HashSet<(String, String)>,
    messages: Vec<String>,
}

impl Walk<'_> {
    /// Whether `reader` reads `writer`, without recording why not (for union branches).
    fn reads(&mut self, reader: &Type, writer: &Type, path: &str) -> bool {
        let before = self.messages.len();
        self.types(reader, writer, path);
        let ok = self.messages.len() == before;
        self.messages.truncate(before);
        ok
    }

    fn mismatch(&mut self, reader: &Type, writer: &Type, path: &str) {
        self.messages.push(format!(
            "TYPE_MISMATCH at {}: reader type {} cannot read writer type {}",
            at(path),
            self.reader.kind(reader),
            self.writer.kind(writer)
        ));
    }

    fn types(&mut self, reader: &Type, writer: &Type, path: &str) {
        use Type::*;
        match (reader, writer) {
            // Every branch the writer may have written must be readable.
            (_, Union(branches)) => {
                for (i, branch) in branches.iter().enumerate() {
                    if !self.reads(reader, branch, path) {
                        self.messages.push(format!(
                            "MISSING_UNION_BRANCH at {}: reader cannot read writer's union branch {i} ({})",
                            at(path),
                            self.writer.kind(branch)
                        ));
                    }
                }
            }
            (Union(branches), _) => {
                let readable = branches.iter().any(|b| self.reads(b, writer, path));
                if !readable {
                    self.messages.push(format!(
                        "MISSING_UNION_BRANCH at {}: no branch of the reader's union reads writer type {}",
                        at(path),
                        self.writer.kind(writer)
                    ));
                }
            }
            (Null, Null)
            | (Boolean, Boolean)
            | (Int, Int)
            | (Long, Long | Int)
            | (Float, Float | Long | Int)
            | (Double, Double | Float | Long | Int)
            | (Bytes, Bytes | String)
            | (String, String | Bytes) => {}
            (Array(r), Array(w)) => self.types(r, w, &format!("{path}/items")),
            (Map(r), Map(w)) => self.types(r, w, &format!("{path}/values")),
            (Named(r), Named(w)) => self.named(r, w, reader, writer, path),
            _ => self.mismatch(reader, writer, path),
        }
    }

    fn named(&mut self, r: &str, w: &str, reader_ty: &Type, writer_ty: &Type, path: &str) {
        let (reader, writer) = (self.reader, self.writer);
        let (Some(rn), Some(wn)) = (reader.named.get(r), writer.named.get(w)) else {
            return self.mismatch(reader_ty, writer_ty, path);
        };
        let key = (r.to_owned(), w.to_owned());
        if self.assumed.contains(&key) {
            return;
        }
        let same_kind = matches!(
            (&rn.definition, &wn.definition),
            (Definition::Record(_), Definition::Record(_))
                | (Definition::Enum { .. }, Definition::Enum { .. })
                | (Definition::Fixed(_), Definition::Fixed(_))
        );
        if !same_kind {
            return self.mismatch(reader_ty, writer_ty, path);
        }
        if !names_match(rn, wn) {
            self.messages.push(format!(
                "NAME_MISMATCH at {}: reader {} {} does not match writer {} (no alias)",
                at(path),
                reader.kind(reader_ty),
                rn.full_name,
                wn.full_name
            ));
            return;
        }
        self.assumed.insert(key.clone());
        match (&rn.definition, &wn.definition) {
            (Definition::Record(reader_fields), Definition::Record(writer_fields)) => {
                for field in reader_fields {
                    let field_path = format!("{path}/fields/{}", field.name);
                    let found = writer_fields
                        .iter()
                        .find(|wf| wf.name == field.name || field.aliases.contains(&wf.name));
                    match found {
                        Some(wf) => self.types(&field.ty, &wf.ty, &field_path),
                        None if field.has_default => {}
                        None => self.messages.push(format!(
                            "READER_FIELD_MISSING_DEFAULT_VALUE at {}: reader field '{}' has no default and the writer has no such field",
                            at(&field_path),
                            field.name
                        )),
                    }
                }
            }
            (
                Definition::Enum {
                    symbols: reader_symbols,
                    default,
                },
                Definition::Enum {
                    symbols: writer_symbols,
                    ..
                },
            ) => {
                let missing: Vec<&str> = writer_symbols
                    .iter()
                    .filter(|s| !reader_symbols.contains(s))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && default.is_none() {
                    self.messages.push(format!(
                        "MISSING_ENUM_SYMBOLS at {}: reader enum {} lacks writer symbols [{}] and has no default",
                        at(path),
                        rn.full_name,
                        missing.join(", ")
                    ));
                }
            }
            (Definition::Fixed(reader_size), Definition::Fixed(writer_size)) => {
                if reader_size != writer_size {
                    self.messages.push(format!(
                        "FIXED_SIZE_MISMATCH at {}: reader fixed {} has size {reader_size}, writer's has {writer_size}",
                        at(path),
                        rn.full_name
                    ));
                }
            }
            _ => self.mismatch(reader_ty, writer_ty, path),
        }
        // Only pairs on the current path are assumed; a finished pair is checked afresh
        // elsewhere so its messages carry that path too.
        self.assumed.remove(&key);
    }
}

/// Full names equal, unqualified names equal (resolution compares those), or a reader alias
/// naming the writer.
fn names_match(reader: &Named, writer: &Named) -> bool {
    reader.full_name == writer.full_name
        || simple_name(&reader.full_name) == simple_name(&writer.full_name)
        || reader
            .aliases
            .iter()
            .any(|a| *a == writer.full_name || a == simple_name(&writer.full_name))
}

fn at(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use CompatibilityLevel::*;

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"User","namespace":"riffle","fields":[{fields}]}}"#)
    }

    const ID: &str = r#"{"name":"id","type":"long"}"#;

    fn ok(reader: &str, writer: &str) -> bool {
        can_read(reader, writer).unwrap().is_empty()
    }

    #[test]
    fn adding_a_field() {
        let v1 = record(ID);
        let with_default = record(&format!(
            r#"{ID},{{"name":"email","type":["null","string"],"default":null}}"#
        ));
        let without_default = record(&format!(r#"{ID},{{"name":"email","type":"string"}}"#));
        // The new reader fills the missing field from its default...
        assert!(ok(&with_default, &v1));
        // ...and cannot without one.
        let messages = can_read(&without_default, &v1).unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email"),
            "{messages:?}"
        );
        // The old reader skips the new field either way.
        assert!(ok(&v1, &with_default) && ok(&v1, &without_default));
    }

    #[test]
    fn removing_a_field() {
        let v1 = record(&format!(r#"{ID},{{"name":"name","type":"string"}}"#));
        let v1_default = record(&format!(
            r#"{ID},{{"name":"name","type":"string","default":""}}"#
        ));
        let v2 = record(ID);
        // New reader without the field: fine backward.
        assert!(ok(&v2, &v1));
        // Old reader of new data: needs the default it had.
        assert!(!ok(&v1, &v2));
        assert!(ok(&v1_default, &v2));
        assert!(check(Full, &v2, &[&v1_default]).unwrap().is_empty());
        assert_eq!(check(Full, &v2, &[&v1]).unwrap().len(), 1);
    }

    #[test]
    fn numeric_promotions_and_their_reverse() {
        let int = record(r#"{"name":"n","type":"int"}"#);
        let long = record(r#"{"name":"n","type":"long"}"#);
        let float = record(r#"{"name":"n","type":"float"}"#);
        let double = record(r#"{"name":"n","type":"double"}"#);
        assert!(ok(&long, &int) && ok(&float, &int) && ok(&double, &int));
        assert!(ok(&float, &long) && ok(&double, &long) && ok(&double, &float));
        assert!(!ok(&int, &long) && !ok(&long, &float) && !ok(&float, &double));
        let messages = can_read(&int, &long).unwrap();
        assert_eq!(
            messages,
            vec!["TYPE_MISMATCH at /fields/n: reader type int cannot read writer type long"]
        );
        // int -> long is backward compatible but not forward.
        assert!(check(Backward, &long, &[&int]).unwrap().is_empty());
        assert!(!check(Forward, &long, &[&int]).unwrap().is_empty());
        assert!(ok(r#""string""#, r#""bytes""#) && ok(r#""bytes""#, r#""string""#));
        assert!(!ok(r#""string""#, r#""int""#));
        // Logical types read as their underlying type.
        assert!(ok(
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
            r#""int""#
        ));
    }

    #[test]
    fn enum_symbols() {
        let e = |symbols: &str, default: &str| {
            format!(r#"{{"type":"enum","name":"Color","symbols":[{symbols}]{default}}}"#)
        };
        let two = e(r#""RED","GREEN""#, "");
        let three = e(r#""RED","GREEN","BLUE""#, "");
        let three_default = e(r#""RED","GREEN","BLUE""#, r#","default":"RED""#);
        let two_default = e(r#""RED","GREEN""#, r#","default":"RED""#);
        // Symbol added: new reads old; old cannot read BLUE.
        assert!(ok(&three, &two));
        let messages = can_read(&two, &three).unwrap();
        assert!(
            messages[0].starts_with("MISSING_ENUM_SYMBOLS") && messages[0].contains("BLUE"),
            "{messages:?}"
        );
        // A reader default absorbs unknown symbols.
        assert!(ok(&two_default, &three));
        // Symbol removed: the mirror image.
        assert!(!ok(&two, &three_default));
        assert!(ok(&three_default, &two));
    }

    #[test]
    fn unions_widened_and_narrowed() {
        let narrow = record(r#"{"name":"v","type":["null","string"]}"#);
        let wide = record(r#"{"name":"v","type":["null","string","long"]}"#);
        let plain = record(r#"{"name":"v","type":"string"}"#);
        assert!(ok(&wide, &narrow));
        let messages = can_read(&narrow, &wide).unwrap();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("MISSING_UNION_BRANCH at /fields/v")),
            "{messages:?}"
        );
        // Non-union writer against a union reader, and the other way round.
        assert!(ok(&narrow, &plain));
        assert!(!ok(&plain, &narrow));
        // A branch found through promotion.
        assert!(!ok(
            r#"["null","double"]"#,
            r#"{"type":"record","name":"X","fields":[]}"#
        ));
        assert!(ok(r#"["null","double"]"#, r#""int""#));
        assert!(ok(r#""long""#, r#"["int","long"]"#));
    }

    #[test]
    fn renames_through_aliases() {
        let old = r#"{"type":"record","name":"Person","namespace":"a","fields":[{"name":"name","type":"string"}]}"#;
        let renamed_field = r#"{"type":"record","name":"Person","namespace":"a","fields":[{"name":"full_name","type":"string","aliases":["name"]}]}"#;
        let renamed_record = r#"{"type":"record","name":"Human","namespace":"a","aliases":["Person"],"fields":[{"name":"name","type":"string"}]}"#;
        let renamed_bare = r#"{"type":"record","name":"Human","namespace":"a","fields":[{"name":"name","type":"string"}]}"#;
        assert!(ok(renamed_field, old));
        assert!(ok(renamed_record, old));
        // The alias lives on the reader: the old schema cannot read the renamed one.
        assert!(!ok(old, renamed_field));
        assert!(!ok(old, renamed_record));
        let messages = can_read(renamed_bare, old).unwrap();
        assert!(
            messages[0].starts_with("NAME_MISMATCH at /"),
            "{messages:?}"
        );
        // A namespace move keeps the unqualified name: resolution allows it.
        assert!(ok(&old.replace("\"a\"", "\"b\""), old));
    }

    #[test]
    fn nested_records_report_their_path() {
        let v1 = r#"{"type":"record","name":"Order","fields":[
            {"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"id","type":"long"}]}},
            {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"qty","type":"int"}]}}},
            {"name":"tags","type":{"type":"map","values":"Customer"}}]}"#;
        let v2 = v1.replace(
            r#"{"name":"qty","type":"int"}"#,
            r#"{"name":"qty","type":"int"},{"name":"sku","type":"string"}"#,
        );
        let messages = can_read(&v2, v1).unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].contains("/fields/lines/items/fields/sku"),
            "{messages:?}"
        );
        let v3 = v1.replace(r#""type":"long"}]}}"#, r#""type":"int"}]}}"#);
        let messages = can_read(&v3, v1).unwrap();
        // The customer record is used twice: both places are reported.
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("/fields/customer/fields/id"));
        assert!(messages[1].contains("/fields/tags/values/fields/id"));
        assert!(ok(v1, &v3));
    }

    #[test]
    fn recursive_types_terminate() {
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"value","type":"int"},{"name":"next","type":["null","Node"]}]}"#;
        let wider = list.replace(r#""type":"int""#, r#""type":"long""#);
        assert!(ok(list, list));
        assert!(ok(&wider, list));
        assert!(!ok(list, &wider));
    }

    #[test]
    fn unreadable_texts_say_which_side() {
        let good = record(ID);
        assert!(matches!(
            check(Backward, r#""Unknown""#, &[&good]),
            Err(CompatError::New(_))
        ));
        assert!(matches!(
            check(Backward, &good, &["{"]),
            Err(CompatError::Existing(_))
        ));
    }

    #[test]
    fn fixed_by_name_and_size() {
        let f =
            |name: &str, size: u32| format!(r#"{{"type":"fixed","name":"{name}","size":{size}}}"#);
        assert!(ok(&f("Hash", 16), &f("Hash", 16)));
        assert!(!ok(&f("Hash", 32), &f("Hash", 16)));
        assert!(!ok(&f("Other", 16), &f("Hash", 16)));
        assert!(!ok(&f("Hash", 16), r#""bytes""#));
    }

    #[test]
    fn transitive_levels_look_at_every_version() {
        let v1 = record(ID);
        // v2 drops `id` for `name` with a default; v3 adds `id` back without a default.
        let v2 = record(r#"{"name":"name","type":"string","default":""}"#);
        let v3 = record(&format!(
            r#"{ID},{{"name":"name","type":"string","default":""}}"#
        ));
        // v3 reads v2 data? It needs `id`, which v2 lacks and v3 has no default for.
        assert!(!check(Backward, &v3, &[&v1, &v2]).unwrap().is_empty());
        let v4 = record(r#"{"name":"name","type":"string"}"#);
        // v4 reads v2 (latest) but not v1 (no `name` there, no default).
        assert!(check(Backward, &v4, &[&v1, &v2]).unwrap().is_empty());
        let transitive = check(BackwardTransitive, &v4, &[&v1, &v2]).unwrap();
        assert_eq!(transitive.len(), 1, "{transitive:?}");
        assert!(check(None, &v4, &[&v1]).unwrap().is_empty());
        assert!(check(FullTransitive, &v4, &[]).unwrap().is_empty());
    }

    #[test]
    fn project_schemas_read_themselves() {
        for text in [
            include_str!("../../../schemas/envelope.avsc"),
            include_str!("../../../schemas/view_row.avsc"),
            include_str!("../../../schemas/events/order_placed.avsc"),
            include_str!("../../../schemas/events/page_view.avsc"),
            include_str!("../../../schemas/events/sensor_reading.avsc"),
        ] {
            for level in CompatibilityLevel::ALL {
                assert!(check(level, text, &[text]).unwrap().is_empty(), "{text}");
            }
        }
    }
}
