//! The walk that finds the changes: both schemas side by side from the root, records field by
//! field (matched by name, then by alias), enums by symbol, unions branch by branch, array
//! items and map values. Each pair of records is compared once, so recursive types end.

use std::collections::HashSet;

use serde_json::Value;

use super::Change;
use super::model::{
    Schema, default_of, field_name, fields_of, full_name, kind, namespace_of, render_type, strings,
};

/// The differences from `old` to `new` (schemas as JSON), in field order.
pub(super) fn changes(old: Value, new: Value) -> Vec<Change> {
    let (old, new) = (Schema::new(old), Schema::new(new));
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
    out.changes
}

/// The two schemas side by side and the changes found so far.
struct Differ<'a> {
    old: &'a Schema,
    new: &'a Schema,
    changes: Vec<Change>,
    /// Record pairs already compared: recursive types end here.
    seen: HashSet<(String, String)>,
}

impl Differ<'_> {
    /// Compares the types at `path`. At the `top` (the root record) field paths have no
    /// prefix and a new name is not a type change: [`changes`] reports it as a rename.
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
            ("enum", "enum") => self.compare_symbols(path, old_def, new_def),
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

    /// Enum symbols only the old type has, then those only the new one has.
    fn compare_symbols(&mut self, path: &str, old: &Value, new: &Value) {
        let (os, ns) = (strings(old, "symbols"), strings(new, "symbols"));
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

    fn type_changed(&mut self, path: &str, from: String, to: String) {
        self.changes.push(Change::TypeChanged {
            path: path.to_owned(),
            from,
            to,
        });
    }

    /// Compares two records field by field: each new field is matched to an old one by name,
    /// then by alias; old fields left unmatched were removed.
    fn compare_fields(
        &mut self,
        path: &str,
        top: bool,
        old_ns: &str,
        old: &Value,
        new_ns: &str,
        new: &Value,
    ) {
        let (old_fields, new_fields) = (fields_of(old), fields_of(new));
        let at = |field: &str| {
            if top {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        let mut matched_old = HashSet::new();
        for nf in &new_fields {
            let new_name = field_name(nf);
            let found = old_fields
                .iter()
                .find(|of| field_name(of) == new_name)
                .or_else(|| {
                    let al = strings(nf, "aliases");
                    old_fields.iter().find(|of| al.contains(&field_name(of)))
                });
            let ty = nf.get("type").cloned().unwrap_or(Value::Null);
            match found {
                None => self.changes.push(Change::Added {
                    path: at(&new_name),
                    ty: render_type(&ty, new_ns),
                    default: default_of(nf),
                }),
                Some(of) => {
                    let old_name = field_name(of);
                    matched_old.insert(old_name.clone());
                    if old_name != new_name {
                        self.changes.push(Change::FieldRenamed {
                            from: at(&old_name),
                            to: at(&new_name),
                        });
                    }
                    let old_ty = of.get("type").cloned().unwrap_or(Value::Null);
                    self.compare_types(&at(&new_name), old_ns, &old_ty, new_ns, &ty, false);
                    if default_of(of) != default_of(nf) {
                        self.changes.push(Change::DefaultChanged {
                            path: at(&new_name),
                            from: default_of(of),
                            to: default_of(nf),
                        });
                    }
                }
            }
        }
        for of in &old_fields {
            let old_name = field_name(of);
            if !matched_old.contains(&old_name) {
                self.changes.push(Change::Removed {
                    path: at(&old_name),
                    ty: render_type(&of.get("type").cloned().unwrap_or(Value::Null), old_ns),
                });
            }
        }
    }
}
