//! What a compatibility level asks of a new schema: which existing versions it is compared
//! with (the latest, or every one for the transitive levels) and in which directions
//! (backward: the new schema reads old data; forward: old schemas read new data).

use riffle_codec::compatibility::CompatibilityLevel;

use super::model::Parsed;
use super::resolve::resolve;

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
    let against = versions_to_check(level, existing);
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

/// The versions of `existing` (oldest first) that `level` compares a new schema with: all of
/// them when transitive, else the latest alone.
fn versions_to_check<'a, 'b>(level: CompatibilityLevel, existing: &'a [&'b str]) -> &'a [&'b str] {
    if level.is_transitive() {
        return existing;
    }
    match existing.split_last() {
        Some((last, _)) => std::slice::from_ref(last),
        None => &[],
    }
}
