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
