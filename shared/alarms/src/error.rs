//! Why the alarms could not be read out of the templates.

use std::path::PathBuf;

use riffle_plan::PlanError;

/// Everything that can go wrong reading the alarms. Evaluating them cannot fail: whatever
/// could make it fail is rejected here, once, when the templates are read.
#[derive(Debug, thiserror::Error)]
pub enum AlarmsError {
    /// The templates could not be read (a file, its YAML, an intrinsic that does not
    /// resolve, a property that is missing or not a number).
    #[error(transparent)]
    Plan(#[from] PlanError),

    /// An alarm says something this crate cannot evaluate the way CloudWatch would.
    #[error("template {}, alarm {resource}: {message}", file.display())]
    Alarm {
        /// The template file.
        file: PathBuf,
        /// The alarm's logical id.
        resource: String,
        /// What is not understood.
        message: String,
    },
}

impl AlarmsError {
    /// Never: the templates are files in the repository, and reading them again gives the
    /// same answer until someone edits them.
    pub fn retryable(&self) -> bool {
        false
    }
}
