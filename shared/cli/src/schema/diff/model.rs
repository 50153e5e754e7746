//! A schema's JSON read as Avro, as far as the diff needs: named types indexed by full name
//! with the namespace inside each, references resolved, a type's kind, a type rendered the
//! way a person writes it, and a field's parts. Anything JSON is read as far as it looks like
//! Avro.

use std::collections::BTreeMap;

use serde_json::Value;

/// Avro's primitive type names; any other bare string names a named type.
const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// One schema with its named types indexed by full name.
pub(super) struct Schema {
    /// The schema as parsed.
    pub(super) root: Value,
    /// Full name -> (definition, the namespace names inside it resolve against).
    named: BTreeMap<String, (Value, String)>,
}

impl Schema {
    pub(super) fn new(root: Value) -> Self {
        let mut named = BTreeMap::new();
        index(&root, "", &mut named);
        Schema { root, named }
    }

    /// The definition a type refers to, with the namespace names inside it resolve against.
    pub(super) fn resolve<'a>(&'a self, ty: &'a Value, ns: &str) -> (&'a Value, String) {
        if let Value::String(name) = ty
            && !PRIMITIVES.contains(&name.as_str())
        {
            let qualified = qualify(name, ns);
            if let Some((def, def_ns)) = self.named.get(&qualified).or_else(|| self.named.get(name))
            {
                return (def, def_ns.clone());
            }
        }
        if let Value::Object(o) = ty
            && let Some(inner @ (Value::String(_) | Value::Array(_))) = o.get("type")
            && o.len() == 1
        {
            // `{"type": "string"}` is the same as `"string"`.
            return self.resolve(inner, ns);
        }
        (ty, ns.to_owned())
    }
}

/// Records every named type under its full name, with the namespace inside it.
fn index(ty: &Value, ns: &str, named: &mut BTreeMap<String, (Value, String)>) {
    match ty {
        Value::Array(branches) => branches.iter().for_each(|b| index(b, ns, named)),
        Value::Object(o) => {
            let inner_ns = match full_name(ty, ns) {
                Some(name) => {
                    let inner = namespace_of(&name);
                    named
                        .entry(name)
                        .or_insert_with(|| (ty.clone(), inner.clone()));
                    inner
                }
                None => ns.to_owned(),
            };
            if let Some(Value::Array(fields)) = o.get("fields") {
                for field in fields {
                    if let Some(t) = field.get("type") {
                        index(t, &inner_ns, named);
                    }
                }
            }
            for key in ["items", "values"] {
                if let Some(t) = o.get(key) {
                    index(t, &inner_ns, named);
                }
            }
            if let Some(t @ (Value::Object(_) | Value::Array(_))) = o.get("type") {
                index(t, &inner_ns, named);
            }
        }
        _ => {}
    }
}

/// The full name of a named type definition (record, enum, fixed), if `ty` is one.
pub(super) fn full_name(ty: &Value, ns: &str) -> Option<String> {
    let o = ty.as_object()?;
    let kind = o.get("type")?.as_str()?;
    if !matches!(kind, "record" | "error" | "enum" | "fixed") {
        return None;
    }
    let name = o.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_owned());
    }
    let ns = o.get("namespace").and_then(Value::as_str).unwrap_or(ns);
    Some(qualify(name, ns))
}

fn qualify(name: &str, ns: &str) -> String {
    if name.contains('.') || ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}.{name}")
    }
}

pub(super) fn namespace_of(full: &str) -> String {
    full.rsplit_once('.')
        .map(|(ns, _)| ns.to_owned())
        .unwrap_or_default()
}

pub(super) fn kind(ty: &Value) -> &str {
    match ty {
        Value::String(s) => s,
        Value::Array(_) => "union",
        Value::Object(o) => o.get("type").and_then(Value::as_str).unwrap_or("?"),
        _ => "?",
    }
}

/// A short readable rendering of a type: named types by name, unions as `a | b`.
pub(super) fn render_type(ty: &Value, ns: &str) -> String {
    match ty {
        Value::String(s) if PRIMITIVES.contains(&s.as_str()) => s.clone(),
        Value::String(s) => short(&qualify(s, ns), ns),
        Value::Array(branches) => branches
            .iter()
            .map(|b| render_type(b, ns))
            .collect::<Vec<_>>()
            .join(" | "),
        Value::Object(o) => {
            let k = kind(ty);
            if let Some(name) = full_name(ty, ns) {
                let size = o.get("size").map(|s| format!("({s})")).unwrap_or_default();
                return format!("{k} {}{size}", short(&name, ns));
            }
            let base = match k {
                "array" => format!(
                    "array<{}>",
                    o.get("items").map_or("?".into(), |t| render_type(t, ns))
                ),
                "map" => format!(
                    "map<{}>",
                    o.get("values").map_or("?".into(), |t| render_type(t, ns))
                ),
                other => match o.get("type") {
                    Some(inner @ (Value::Array(_) | Value::Object(_))) => render_type(inner, ns),
                    _ => other.to_owned(),
                },
            };
            match o.get("logicalType").and_then(Value::as_str) {
                Some("decimal") => format!(
                    "{base} (decimal {},{})",
                    o.get("precision").unwrap_or(&Value::Null),
                    o.get("scale").unwrap_or(&Value::from(0))
                ),
                Some(logical) => format!("{base} ({logical})"),
                None => base,
            }
        }
        other => other.to_string(),
    }
}

/// A name relative to the enclosing namespace, as a person would write it.
fn short(full: &str, ns: &str) -> String {
    full.strip_prefix(ns)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|_| !ns.is_empty())
        .unwrap_or(full)
        .to_owned()
}

/// The fields of a record definition, in order; none for anything else.
pub(super) fn fields_of(v: &Value) -> Vec<Value> {
    v.get("fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A field's name; empty when it has none.
pub(super) fn field_name(f: &Value) -> String {
    f.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// A field's default as JSON, if it has one.
pub(super) fn default_of(f: &Value) -> Option<String> {
    f.get("default").map(Value::to_string)
}

/// The strings of the list under `key` (an enum's `symbols`, a field's `aliases`); entries
/// that are not strings are skipped.
pub(super) fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
