//! A readable field-level difference between two Avro schemas: fields added and removed,
//! types and defaults changed, enum symbols added and removed, nested records followed.
//!
//! Pure over the schemas' JSON. It describes, it does not judge: whether a change is
//! compatible is the registry's call (`riffle schema check`); this says what changed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde_json::Value;

/// Avro's primitive type names; any other bare string names a named type.
const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// One difference, at a dotted field path (`enrichment.category`; `[]` for array items and
/// `{}` for map values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The top-level type was renamed (its subject normally changes with it).
    Renamed {
        /// Old full name.
        from: String,
        /// New full name.
        to: String,
    },
    /// A field only the new schema has.
    Added {
        /// Field path.
        path: String,
        /// Its type, rendered.
        ty: String,
        /// Its default as JSON, if it has one.
        default: Option<String>,
    },
    /// A field only the old schema has.
    Removed {
        /// Field path.
        path: String,
        /// Its type, rendered.
        ty: String,
    },
    /// A field whose new name lists the old one among its aliases.
    FieldRenamed {
        /// Old field path.
        from: String,
        /// New field path.
        to: String,
    },
    /// The same field, another type.
    TypeChanged {
        /// Field path.
        path: String,
        /// Old type, rendered.
        from: String,
        /// New type, rendered.
        to: String,
    },
    /// The same field, another default (or a default given or taken away).
    DefaultChanged {
        /// Field path.
        path: String,
        /// Old default as JSON.
        from: Option<String>,
        /// New default as JSON.
        to: Option<String>,
    },
    /// Enum symbols only the new schema has.
    SymbolsAdded {
        /// Path of the field of that enum type (the enum's name at top level).
        path: String,
        /// The symbols.
        symbols: Vec<String>,
    },
    /// Enum symbols only the old schema has.
    SymbolsRemoved {
        /// Path of the field of that enum type.
        path: String,
        /// The symbols.
        symbols: Vec<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |d: &Option<String>| d.clone().unwrap_or_else(|| "(none)".into());
        match self {
            Change::Renamed { from, to } => write!(f, "~ name     {from} -> {to}"),
            Change::Added { path, ty, default } => match default {
                Some(d) => write!(f, "+ added    {path}: {ty} (default {d})"),
                None => write!(f, "+ added    {path}: {ty} (no default)"),
            },
            Change::Removed { path, ty } => write!(f, "- removed  {path}: {ty}"),
            Change::FieldRenamed { from, to } => write!(f, "~ renamed  {from} -> {to} (alias)"),
            Change::TypeChanged { path, from, to } => {
                write!(f, "~ type     {path}: {from} -> {to}")
            }
            Change::DefaultChanged { path, from, to } => {
                write!(f, "~ default  {path}: {} -> {}", opt(from), opt(to))
            }
            Change::SymbolsAdded { path, symbols } => {
                write!(f, "+ symbols  {path}: {}", symbols.join(", "))
            }
            Change::SymbolsRemoved { path, symbols } => {
                write!(f, "- symbols  {path}: {}", symbols.join(", "))
            }
        }
    }
}

/// Why two schemas could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{which} schema is not JSON: {reason}")]
pub struct NotJson {
    /// `old` or `new`.
    pub which: &'static str,
    /// The parser's message.
    pub reason: String,
}

/// The differences from `old` to `new` (schema texts), in field order.
///
/// # Errors
/// Either text is not JSON. Anything JSON is compared as far as it looks like Avro.
pub fn diff(old: &str, new: &str) -> Result<Vec<Change>, NotJson> {
    let parse = |which, text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| NotJson {
            which,
            reason: e.to_string(),
        })
    };
    let (old, new) = (
        Schema::new(parse("old", old)?),
        Schema::new(parse("new", new)?),
    );
    let mut out = Differ {
        old: &old,
        new: &new,
        changes: Vec::new(),
        seen: HashSet::new(),
    };
    let (o, n) = (old.root.clone(), new.root.clone());
    let (old_name, new_name) = (
        full_name(&o, "").unwrap_or_default(),
        full_name(&n, "").unwrap_or_default(),
    );
    if old_name != new_name && !old_name.is_empty() && !new_name.is_empty() {
        out.changes.push(Change::Renamed {
            from: old_name.clone(),
            to: new_name.clone(),
        });
    }
    let path = if new_name.is_empty() {
        "(root)".into()
    } else {
        new_name
    };
    out.compare_types(&path, "", &o, "", &n, true);
    Ok(out.changes)
}

/// Renders `changes` one per line, or says there are none.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no field-level differences\n".into();
    }
    changes.iter().map(|c| format!("{c}\n")).collect()
}

/// One schema with its named types indexed by full name.
struct Schema {
    root: Value,
    named: BTreeMap<String, (Value, String)>,
}

impl Schema {
    fn new(root: Value) -> Self {
        let mut named = BTreeMap::new();
        index(&root, "", &mut named);
        Schema { root, named }
    }

    /// The definition a type refers to, with the namespace names inside it resolve against.
    fn resolve<'a>(&'a self, ty: &'a Value, ns: &str) -> (&'a Value, String) {
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
fn full_name(ty: &Value, ns: &str) -> Option<String> {
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

fn namespace_of(full: &str) -> String {
    full.rsplit_once('.')
        .map(|(ns, _)| ns.to_owned())
        .unwrap_or_default()
}

fn kind(ty: &Value) -> &str {
    match ty {
        Value::String(s) => s,
        Value::Array(_) => "union",
        Value::Object(o) => o.get("type").and_then(Value::as_str).unwrap_or("?"),
        _ => "?",
    }
}

/// A short readable rendering of a type: named types by name, unions as `a | b`.
fn render_type(ty: &Value, ns: &str) -> String {
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

struct Differ<'a> {
    old: &'a Schema,
    new: &'a Schema,
    changes: Vec<Change>,
    /// Record pairs already compared: recursive types end here.
    seen: HashSet<(String, String)>,
}

impl Differ<'_> {
    fn compare_types(
        &mut self,
        path: &str,
        old_ns: &str,
        old: &Value,
        new_ns: &str,
        new: &Value,
        top: bool,
    ) {
        let (old_def, old_ns) = self.old.resolve(old, old_ns);
        let (new_def, new_ns) = self.new.resolve(new, new_ns);
        let (ok, nk) = (kind(old_def), kind(new_def));
        let shallow_old = render_type(old, &old_ns);
        let shallow_new = render_type(new, &new_ns);
        match (ok, nk) {
            ("record" | "error", "record" | "error") => {
                let names = (
                    full_name(old_def, &old_ns).unwrap_or_default(),
                    full_name(new_def, &new_ns).unwrap_or_default(),
                );
                if !top && names.0 != names.1 {
                    self.type_changed(path, shallow_old, shallow_new);
                    return;
                }
                // Names inside a record resolve against the record's own namespace.
                let (inner_old, inner_new) = (namespace_of(&names.0), namespace_of(&names.1));
                if self.seen.insert(names) {
                    self.compare_fields(path, top, &inner_old, old_def, &inner_new, new_def);
                }
            }
            ("enum", "enum") => {
                let symbols = |v: &Value| -> Vec<String> {
                    v.get("symbols")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let (os, ns) = (symbols(old_def), symbols(new_def));
                let added: Vec<String> = ns.iter().filter(|s| !os.contains(s)).cloned().collect();
                let removed: Vec<String> = os.iter().filter(|s| !ns.contains(s)).cloned().collect();
                if !removed.is_empty() {
                    self.changes.push(Change::SymbolsRemoved {
                        path: path.to_owned(),
                        symbols: removed,
                    });
                }
                if !added.is_empty() {
                    self.changes.push(Change::SymbolsAdded {
                        path: path.to_owned(),
                        symbols: added,
                    });
                }
            }
            ("union", "union") if shallow_old == shallow_new => {
                // Same branches by name: look inside the named and container branches.
                if let (Value::Array(ob), Value::Array(nb)) = (old_def, new_def) {
                    for (o, n) in ob.iter().zip(nb) {
                        if kind(self.old.resolve(o, &old_ns).0) != "null" {
                            self.compare_types(path, &old_ns, o, &new_ns, n, false);
                        }
                    }
                }
            }
            ("array", "array") | ("map", "map") => {
                let (key, suffix) = if ok == "array" {
                    ("items", "[]")
                } else {
                    ("values", "{}")
                };
                if let (Some(o), Some(n)) = (old_def.get(key), new_def.get(key)) {
                    let inner = format!("{path}{suffix}");
                    self.compare_types(&inner, &old_ns, o, &new_ns, n, false);
                }
            }
            _ if shallow_old != shallow_new => self.type_changed(path, shallow_old, shallow_new),
            _ => {}
        }
    }

    fn type_changed(&mut self, path: &str, from: String, to: String) {
        self.changes.push(Change::TypeChanged {
            path: path.to_owned(),
            from,
            to,
        });
    }

    fn compare_fields(
        &mut self,
        path: &str,
        top: bool,
        old_ns: &str,
        old: &Value,
        new_ns: &str,
        new: &Value,
    ) {
        let fields = |v: &Value| -> Vec<Value> {
            v.get("fields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let name = |f: &Value| {
            f.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let aliases = |f: &Value| -> Vec<String> {
            f.get("aliases")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (old_fields, new_fields) = (fields(old), fields(new));
        let at = |field: &str| {
            if top {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        let default = |f: &Value| f.get("default").map(Value::to_string);
        let mut matched_old = HashSet::new();
        for nf in &new_fields {
            let new_name = name(nf);
            let found = old_fields
                .iter()
                .find(|of| name(of) == new_name)
                .or_else(|| {
                    let al = aliases(nf);
                    old_fields.iter().find(|of| al.contains(&name(of)))
                });
            let ty = nf.get("type").cloned().unwrap_or(Value::Null);
            match found {
                None => self.changes.push(Change::Added {
                    path: at(&new_name),
                    ty: render_type(&ty, new_ns),
                    default: default(nf),
                }),
                Some(of) => {
                    let old_name = name(of);
                    matched_old.insert(old_name.clone());
                    if old_name != new_name {
                        self.changes.push(Change::FieldRenamed {
                            from: at(&old_name),
                            to: at(&new_name),
                        });
                    }
                    let old_ty = of.get("type").cloned().unwrap_or(Value::Null);
                    self.compare_types(&at(&new_name), old_ns, &old_ty, new_ns, &ty, false);
                    if default(of) != default(nf) {
                        self.changes.push(Change::DefaultChanged {
                            path: at(&new_name),
                            from: default(of),
                            to: default(nf),
                        });
                    }
                }
            }
        }
        for of in &old_fields {
            let old_name = name(of);
            if !matched_old.contains(&old_name) {
                self.changes.push(Change::Removed {
                    path: at(&old_name),
                    ty: render_type(&of.get("type").cloned().unwrap_or(Value::Null), old_ns),
                });
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ORDER: &str = include_str!("../../../../schemas/events/order_placed.avsc");
    const ENVELOPE: &str = include_str!("../../../../schemas/envelope.avsc");

    /// `ORDER` with its JSON edited by `edit`.
    fn order_with(edit: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(ORDER).unwrap();
        edit(&mut v);
        v.to_string()
    }

    fn fields(v: &mut Value) -> &mut Vec<Value> {
        v["fields"].as_array_mut().unwrap()
    }

    #[test]
    fn identical_schemas_have_no_differences() {
        assert_eq!(diff(ORDER, ORDER).unwrap(), vec![]);
        assert_eq!(diff(ENVELOPE, ENVELOPE).unwrap(), vec![]);
        assert_eq!(render(&[]), "no field-level differences\n");
    }

    #[test]
    fn added_and_removed_fields() {
        let new = order_with(|v| {
            fields(v).retain(|f| f["name"] != "coupon");
            fields(v).push(serde_json::json!({"name": "channel", "type": "string"}));
            fields(v).push(serde_json::json!(
                {"name": "note", "type": ["null", "string"], "default": null}
            ));
        });
        assert_eq!(
            diff(ORDER, &new).unwrap(),
            vec![
                Change::Added {
                    path: "channel".into(),
                    ty: "string".into(),
                    default: None
                },
                Change::Added {
                    path: "note".into(),
                    ty: "null | string".into(),
                    default: Some("null".into())
                },
                Change::Removed {
                    path: "coupon".into(),
                    ty: "null | string".into()
                },
            ]
        );
        let text = render(&diff(ORDER, &new).unwrap());
        assert!(
            text.contains("+ added    channel: string (no default)"),
            "{text}"
        );
        assert!(text.contains("- removed  coupon: null | string"), "{text}");
    }

    #[test]
    fn type_and_default_changes() {
        let new = order_with(|v| {
            for f in fields(v) {
                match f["name"].as_str() {
                    Some("quantity") => f["type"] = "long".into(),
                    Some("attributes") => f["default"] = serde_json::json!({"k": "v"}),
                    Some("placed_at") => f["type"]["logicalType"] = "timestamp-micros".into(),
                    _ => {}
                }
            }
        });
        assert_eq!(
            diff(ORDER, &new).unwrap(),
            vec![
                Change::TypeChanged {
                    path: "quantity".into(),
                    from: "int".into(),
                    to: "long".into()
                },
                Change::TypeChanged {
                    path: "placed_at".into(),
                    from: "long (timestamp-millis)".into(),
                    to: "long (timestamp-micros)".into()
                },
                Change::DefaultChanged {
                    path: "attributes".into(),
                    from: Some("{}".into()),
                    to: Some(r#"{"k":"v"}"#.into())
                },
            ]
        );
    }

    #[test]
    fn enum_symbols_and_field_aliases() {
        let new = order_with(|v| {
            for f in fields(v) {
                if f["name"] == "currency" {
                    f["type"]["symbols"] = serde_json::json!(["EUR", "USD", "CHF"]);
                }
                if f["name"] == "coupon" {
                    f["name"] = "voucher".into();
                    f["aliases"] = serde_json::json!(["coupon"]);
                }
            }
        });
        assert_eq!(
            diff(ORDER, &new).unwrap(),
            vec![
                Change::SymbolsRemoved {
                    path: "currency".into(),
                    symbols: vec!["GBP".into()]
                },
                Change::SymbolsAdded {
                    path: "currency".into(),
                    symbols: vec!["CHF".into()]
                },
                Change::FieldRenamed {
                    from: "coupon".into(),
                    to: "voucher".into()
                },
            ]
        );
    }

    #[test]
    fn nested_records_in_unions_are_followed() {
        let old = r#"{"type":"record","name":"E","namespace":"t","fields":[
            {"name":"enrichment","type":["null",{"type":"record","name":"Enr","fields":[
                {"name":"category","type":"string"}]}],"default":null},
            {"name":"again","type":["null","Enr"],"default":null}]}"#;
        let new = r#"{"type":"record","name":"E","namespace":"t","fields":[
            {"name":"enrichment","type":["null",{"type":"record","name":"Enr","fields":[
                {"name":"category","type":"int"},{"name":"region","type":"string","default":"eu"}]}],"default":null},
            {"name":"again","type":["null","t.Enr"],"default":null}]}"#;
        assert_eq!(
            diff(old, new).unwrap(),
            vec![
                Change::TypeChanged {
                    path: "enrichment.category".into(),
                    from: "string".into(),
                    to: "int".into()
                },
                Change::Added {
                    path: "enrichment.region".into(),
                    ty: "string".into(),
                    default: Some("\"eu\"".into())
                },
            ]
        );
    }

    #[test]
    fn unions_that_change_branches_are_type_changes() {
        let new = order_with(|v| {
            for f in fields(v) {
                if f["name"] == "coupon" {
                    f["type"] = serde_json::json!(["null", "string", "long"]);
                }
            }
        });
        assert_eq!(
            diff(ORDER, &new).unwrap(),
            vec![Change::TypeChanged {
                path: "coupon".into(),
                from: "null | string".into(),
                to: "null | string | long".into()
            }]
        );
    }

    #[test]
    fn recursive_types_terminate_and_renames_show() {
        let node = |name: &str| {
            format!(
                r#"{{"type":"record","name":"{name}","fields":[{{"name":"next","type":["null","{name}"]}}]}}"#
            )
        };
        assert_eq!(diff(&node("Node"), &node("Node")).unwrap(), vec![]);
        assert_eq!(
            diff(&node("Node"), &node("Link")).unwrap(),
            vec![
                Change::Renamed {
                    from: "Node".into(),
                    to: "Link".into()
                },
                Change::TypeChanged {
                    path: "next".into(),
                    from: "null | Node".into(),
                    to: "null | Link".into()
                },
            ]
        );
    }

    #[test]
    fn not_json_is_an_error_naming_the_side() {
        let e = diff(ORDER, "{not json").unwrap_err();
        assert_eq!(e.which, "new");
    }
}
