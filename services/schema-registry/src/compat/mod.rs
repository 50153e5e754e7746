//! Schema compatibility: may a new Avro schema follow a subject's existing ones at a
//! compatibility level?
//!
//! Pure: schema texts in, a list of reasons out (empty means compatible). Texts reach it only
//! after [`crate::schema::parse`] accepted them. Layout:
//! - `level`: [`check`], what a level asks for: which existing versions a new schema is
//!   compared with, and in which directions;
//! - `resolve`: [`can_read`], Avro's schema-resolution rules between one reader and one
//!   writer schema;
//! - `model`: a schema's JSON read into the types the rules compare, with names, namespaces
//!   and aliases resolved;
//! - `tests`: the unit tests of all three, on whole schema texts.

mod level;
mod model;
mod resolve;
#[cfg(test)]
mod tests;

pub use level::{CompatError, check};
pub use resolve::can_read;

/// Whether the checks can read `text` (a schema apache-avro accepted). The checks read the
/// text as sent, which apache-avro reads more leniently (it passes over a field entry that is
/// not an object, for one), so registration asks this too: a schema stored that the checks
/// cannot read would make every later registration under its subject fail.
///
/// # Errors
/// What the checks could not read.
pub fn readable(text: &str) -> Result<(), String> {
    model::Parsed::parse(text).map(|_| ())
}
