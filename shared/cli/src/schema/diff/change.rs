//! [`Change`]: one difference between two schemas at a field path, and the line it reads as.

use std::fmt;

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
