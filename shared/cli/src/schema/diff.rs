//! A readable field-level difference between two Avro schemas: fields added and removed,
//! types and defaults changed, enum symbols added and removed, nested records followed.
//!
//! Pure over the schemas' JSON. It describes, it does not judge: whether a change is
//! compatible is the registry's call (`riffle schema check`); this says what changed.
//!
//! Layout, one job per file:
//! - this file: the entry points, [`diff`] and [`render`], and [`NotJson`];
//! - `change`: [`Change`], one difference, and how it reads;
//! - `model`: a schema's JSON read as Avro: named types indexed by full name, references
//!   resolved, types rendered the way a person writes them;
//! - `compare`: the walk over both schemas side by side that finds the changes;
//! - `tests`: the unit tests, on the project's schemas and small edits of them.

mod change;
mod compare;
mod model;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use change::Change;

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
    let (old, new) = (parse("old", old)?, parse("new", new)?);
    Ok(compare::changes(old, new))
}

/// Renders `changes` one per line, or says there are none.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no field-level differences\n".into();
    }
    changes.iter().map(|c| format!("{c}\n")).collect()
}
