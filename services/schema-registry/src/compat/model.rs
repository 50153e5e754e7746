//! The schema model the compatibility rules compare: a schema's JSON read into its root
//! [`Type`] and its named types by full name.
//!
//! Read from the JSON itself rather than a library's parsed type so that names, namespaces
//! and aliases resolve exactly as documented here: a name without a dot takes the enclosing
//! namespace, an alias without a dot takes its type's namespace, and a reference looks in the
//! enclosing namespace first, then takes the name as written. Logical types are dropped:
//! resolution reads them as their underlying type.

use std::collections::HashMap;

use serde_json::Value;

/// A type in a schema, with named types replaced by their full name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Type {
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
pub(super) struct Field {
    pub(super) name: String,
    pub(super) aliases: Vec<String>,
    pub(super) ty: Type,
    pub(super) has_default: bool,
}

#[derive(Debug)]
pub(super) enum Definition {
    Record(Vec<Field>),
    Enum {
        symbols: Vec<String>,
        default: Option<String>,
    },
    Fixed(u64),
}

#[derive(Debug)]
pub(super) struct Named {
    pub(super) full_name: String,
    /// Aliases as full names (an alias without a dot takes the type's namespace).
    pub(super) aliases: Vec<String>,
    pub(super) definition: Definition,
}

/// A schema as the checks see it: its root type and its named types by full name.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) root: Type,
    pub(super) named: HashMap<String, Named>,
}

impl Parsed {
    pub(super) fn parse(text: &str) -> Result<Parsed, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut named = HashMap::new();
        let root = parse_type(&json, None, &mut named)?;
        Ok(Parsed { root, named })
    }

    /// The type's kind as messages name it (`int`, `record`, ...).
    pub(super) fn kind(&self, ty: &Type) -> &'static str {
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

pub(super) fn simple_name(full_name: &str) -> &str {
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
    let definition = parse_definition(kind, object, inner_namespace.as_deref(), named)?;
    if let Some(entry) = named.get_mut(&full_name) {
        entry.definition = definition;
    }
    Ok(Type::Named(full_name))
}

/// The body of a named type: an enum's symbols, a fixed's size or a record's fields (whose
/// types are read in `namespace`, the record's own).
fn parse_definition(
    kind: &str,
    object: &serde_json::Map<String, Value>,
    namespace: Option<&str>,
    named: &mut HashMap<String, Named>,
) -> Result<Definition, String> {
    Ok(match kind {
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
            let fields = object
                .get("fields")
                .and_then(Value::as_array)
                .ok_or("a record without fields")?;
            Definition::Record(
                fields
                    .iter()
                    .map(|field| parse_field(field, namespace, named))
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

fn parse_field(
    field: &Value,
    namespace: Option<&str>,
    named: &mut HashMap<String, Named>,
) -> Result<Field, String> {
    let name = field
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a field without a name")?;
    let ty = field.get("type").ok_or("a field without a type")?;
    Ok(Field {
        name: name.to_owned(),
        aliases: strings(field.get("aliases")),
        ty: parse_type(ty, namespace, named)?,
        has_default: field.get("default").is_some(),
    })
}
