//! Where the repository is: its templates and schemas are read from there.

use std::path::{Path, PathBuf};

use crate::error::PlanError;

/// The repository root: `RIFFLE_ROOT`, else the nearest ancestor of the current directory
/// holding a workspace `Cargo.toml` with `infra/` and `schemas/`, else this crate's
/// workspace at build time.
pub fn project_root() -> Result<PathBuf, PlanError> {
    if let Some(root) = std::env::var_os("RIFFLE_ROOT") {
        let root = PathBuf::from(root);
        return if is_project_root(&root) {
            Ok(root)
        } else {
            Err(PlanError::ProjectRoot(format!(
                "RIFFLE_ROOT={} is not the Riffle repository",
                root.display()
            )))
        };
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Some(root) = cwd.ancestors().find(|d| is_project_root(d))
    {
        return Ok(root.to_path_buf());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if is_project_root(&built) {
        return std::fs::canonicalize(&built).map_err(PlanError::io("resolving project root"));
    }
    Err(PlanError::ProjectRoot(
        "not in the repository and the build-time checkout is gone".to_owned(),
    ))
}

fn is_project_root(dir: &Path) -> bool {
    dir.join("infra").is_dir()
        && dir.join("schemas").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml"))
            .map(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
            .unwrap_or(false)
}
