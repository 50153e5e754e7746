//! Why the templates could not be read into a plan, or the repository not found.

use std::path::PathBuf;

/// Everything that can go wrong finding the repository and reading its templates.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The project root (workspace with `infra/` and `schemas/`) was not found.
    #[error("cannot find the Riffle project root: {0} (set RIFFLE_ROOT to the repository)")]
    ProjectRoot(String),

    /// A file could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// A template could not be read or does not say what provisioning needs.
    #[error("template {}{}: {message}", file.display(), resource.as_ref().map(|r| format!(", resource {r}")).unwrap_or_default())]
    Template {
        /// The template file.
        file: PathBuf,
        /// The resource the problem is in, if one.
        resource: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl PlanError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PlanError {
        let context = context.into();
        move |source| PlanError::Io { context, source }
    }
}
