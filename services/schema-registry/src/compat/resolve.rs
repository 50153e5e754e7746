//! Avro's schema-resolution rules, applied to two schemas rather than to data: can a reader
//! schema read everything a writer schema may have written?
//!
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
//! already being compared is assumed compatible, which is what stops the descent. A pair
//! compared to the end is not compared again: a schema whose records each use the next one
//! twice would otherwise cost 2^depth comparisons (a 2 KB schema could hold a core for
//! minutes); an incompatible pair met again is reported once more by reference to where it
//! was found.
//!
//! Each reason names the rule and the path where it failed (`/fields/lines/items/...`), in
//! the words of Confluent's messages, so people can find the field.

use std::collections::{HashMap, HashSet};

use super::model::{Definition, Field, Named, Parsed, Type, simple_name};

/// Why `reader` cannot read data written with `writer`; empty when it can.
pub fn can_read(reader: &str, writer: &str) -> Result<Vec<String>, String> {
    Ok(resolve(&Parsed::parse(reader)?, &Parsed::parse(writer)?))
}

/// [`can_read`] for schemas already read, so a level check reads each text once however many
/// directions and versions it compares.
pub(super) fn resolve(reader: &Parsed, writer: &Parsed) -> Vec<String> {
    let mut walk = Walk {
        reader,
        writer,
        assumed: HashSet::new(),
        finished: HashMap::new(),
        finished_log: Vec::new(),
        messages: Vec::new(),
    };
    walk.types(&reader.root, &writer.root, "");
    walk.messages
}

/// One reader/writer comparison under way: the reasons found so far, and the named-type
/// pairs on the current path.
struct Walk<'a> {
    reader: &'a Parsed,
    writer: &'a Parsed,
    /// (reader, writer) named-type pairs being compared further up: assumed compatible.
    assumed: HashSet<(String, String)>,
    /// (reader, writer) named-type pairs compared to the end: `None` when compatible, else
    /// the path where they were found not to be.
    finished: HashMap<(String, String), Option<String>>,
    /// The keys of `finished` in the order they were added, so a failed trial can take back
    /// its own.
    finished_log: Vec<(String, String)>,
    messages: Vec<String>,
}

impl Walk<'_> {
    /// Whether `reader` reads `writer`, without recording why not (for union branches).
    fn reads(&mut self, reader: &Type, writer: &Type, path: &str) -> bool {
        let before = self.messages.len();
        let finished_before = self.finished_log.len();
        self.types(reader, writer, path);
        let ok = self.messages.len() == before;
        self.messages.truncate(before);
        if !ok {
            // Verdicts reached in a failed trial may rest on a pair it assumed compatible and
            // then found not to be; its messages are dropped, so its verdicts go too.
            for key in self.finished_log.drain(finished_before..) {
                self.finished.remove(&key);
            }
        }
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

    /// Two named types: the same kind, matching names, then their definitions. A pair
    /// already being compared further up is taken as compatible (recursive types).
    fn named(&mut self, r: &str, w: &str, reader_ty: &Type, writer_ty: &Type, path: &str) {
        let (reader, writer) = (self.reader, self.writer);
        let (Some(rn), Some(wn)) = (reader.named.get(r), writer.named.get(w)) else {
            return self.mismatch(reader_ty, writer_ty, path);
        };
        let key = (r.to_owned(), w.to_owned());
        if self.assumed.contains(&key) {
            return;
        }
        if let Some(verdict) = self.finished.get(&key) {
            if let Some(first) = verdict {
                self.messages.push(format!(
                    "TYPE_MISMATCH at {}: reader {} cannot read writer {}, as at {}",
                    at(path),
                    rn.full_name,
                    wn.full_name,
                    at(first)
                ));
            }
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
        let before = self.messages.len();
        match (&rn.definition, &wn.definition) {
            (Definition::Record(reader_fields), Definition::Record(writer_fields)) => {
                self.record(reader_fields, writer_fields, path);
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
            ) => self.enum_symbols(rn, reader_symbols, default.is_some(), writer_symbols, path),
            (Definition::Fixed(reader_size), Definition::Fixed(writer_size)) => {
                self.fixed_size(rn, *reader_size, *writer_size, path);
            }
            _ => self.mismatch(reader_ty, writer_ty, path),
        }
        self.assumed.remove(&key);
        let verdict = (self.messages.len() > before).then(|| path.to_owned());
        self.finished_log.push(key.clone());
        self.finished.insert(key, verdict);
    }

    /// Every reader field finds its writer field (by name or alias) or has a default; writer
    /// fields the reader lacks are skipped, so they are not looked at.
    fn record(&mut self, reader_fields: &[Field], writer_fields: &[Field], path: &str) {
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

    /// The reader knows every writer symbol, or has a default symbol to read unknown ones as.
    fn enum_symbols(
        &mut self,
        reader: &Named,
        reader_symbols: &[String],
        reader_has_default: bool,
        writer_symbols: &[String],
        path: &str,
    ) {
        let missing: Vec<&str> = writer_symbols
            .iter()
            .filter(|s| !reader_symbols.contains(s))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() && !reader_has_default {
            self.messages.push(format!(
                "MISSING_ENUM_SYMBOLS at {}: reader enum {} lacks writer symbols [{}] and has no default",
                at(path),
                reader.full_name,
                missing.join(", ")
            ));
        }
    }

    fn fixed_size(&mut self, reader: &Named, reader_size: u64, writer_size: u64, path: &str) {
        if reader_size != writer_size {
            self.messages.push(format!(
                "FIXED_SIZE_MISMATCH at {}: reader fixed {} has size {reader_size}, writer's has {writer_size}",
                at(path),
                reader.full_name
            ));
        }
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
