//! `riffle schema gate`: the CI check that no committed or pending schema change breaks its
//! subject's compatibility.
//!
//! Production's registry has seen every committed version of each schema, in commit order.
//! The gate rebuilds that registry privately (the local emulators, provisioned from the
//! templates, and the real `schema-registry` binary, as `riffle demo` runs them), replays the
//! history of `schemas/` into it, each schema with its subject's contract as it was at that
//! commit (ADR 0020), and checks the working tree's files against the result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use riffle_codec::registered::DataContract;
use riffle_local::Emulators;
use riffle_registry_client::{
    ClientError, CompatibilityLevel, INCOMPATIBLE_SCHEMA, RegistryClient,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::pipeline::{PipelineError, REGISTRY, bin_dir};
use riffle_cli::schema::{SchemaError, SchemaFile, avsc_files, check_files, explain, indent};

/// How long the registry gets to announce its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it gets to exit once its stdin closes.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One committed version of one schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The commit (full hash).
    pub commit: String,
    /// The file, relative to the repository root.
    pub path: PathBuf,
    /// The file's text at that commit.
    pub text: String,
    /// The subject's contract file (`rules/<subject>.json`) at that commit, if it had one:
    /// registered with the schema, as `riffle schema register` does (ADR 0020).
    pub contract: Option<(PathBuf, String)>,
}

/// Runs the gate and prints its report; `Ok(true)` when every change is compatible.
///
/// # Errors
/// Not in a git repository, an unknown `base`, or the emulators or registry not starting.
pub async fn run(
    base: &str,
    level: CompatibilityLevel,
    repo: Option<PathBuf>,
) -> Result<bool, SchemaError> {
    let repo = match repo {
        Some(dir) => dir,
        None => std::env::current_dir()
            .map_err(|e| SchemaError::Git(format!("no current directory: {e}")))?,
    };
    let root = PathBuf::from(git(&repo, &["rev-parse", "--show-toplevel"])?.trim());
    let commit = resolve(&root, base)?;
    let files = avsc_files(&root.join("schemas"), true)?;
    if files.is_empty() {
        println!(
            "schema gate: no .avsc files under {}",
            root.join("schemas").display()
        );
        return Ok(true);
    }
    let mut history = Vec::new();
    let mut current = Vec::with_capacity(files.len());
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap_or(file);
        let mut read = SchemaFile::read(file)?;
        let contract = riffle_cli::schema::contract_path(file, &read.subject)
            .and_then(|p| p.strip_prefix(&root).ok().map(Path::to_path_buf));
        history.extend(committed_versions(
            &root,
            &commit,
            rel,
            contract.as_deref(),
        )?);
        // Paths as the history shows them, relative to the repository.
        if let Ok(rel) = file.strip_prefix(&root) {
            read.path = rel.to_path_buf();
        }
        current.push(read);
    }

    let short = commit.get(..10).unwrap_or(&commit);
    println!(
        "schema gate: {} schema files, {} committed versions up to {short}; level {level}",
        files.len(),
        history.len()
    );
    let local = LocalRegistry::start().await?;
    let outcome = gate(&local.client, level, &history, &current).await;
    local.stop().await;
    let (report, ok) = outcome?;
    print!("{report}");
    println!(
        "schema gate: {}",
        if ok {
            "every change is compatible"
        } else {
            "INCOMPATIBLE changes (see above)"
        }
    );
    Ok(ok)
}

/// Replays `history` into `client`'s registry and checks `current` against it. Returns the
/// report and whether everything was compatible.
///
/// # Errors
/// The registry failing (not refusing).
pub async fn gate(
    client: &RegistryClient,
    level: CompatibilityLevel,
    history: &[Committed],
    current: &[SchemaFile],
) -> Result<(String, bool), SchemaError> {
    let fail = |source| SchemaError::Registry {
        url: client.base_url().to_owned(),
        source,
    };
    client.set_config(None, level).await.map_err(fail)?;
    let mut out = String::new();
    let mut ok = true;
    let _ = writeln!(out, "history:");
    for version in history {
        let short = version.commit.get(..10).unwrap_or(&version.commit);
        let mut file = match SchemaFile::from_text(&version.path, version.text.clone()) {
            Ok(file) => file,
            Err(e) => {
                // Not a schema at that commit: production could not have registered it.
                let _ = writeln!(out, "  skip  {short} {e}");
                continue;
            }
        };
        if let Some((path, text)) = &version.contract {
            match DataContract::from_file(&path.display().to_string(), text) {
                Ok(registered) => file.contract = Some((path.clone(), registered.fields)),
                Err(e) => {
                    // As production would have been refused it: the schema goes in bare.
                    let _ = writeln!(out, "  note  {short} {e}: registered without it");
                }
            }
        }
        match client
            .register_with(&file.subject, &file.text, &file.contract_fields())
            .await
        {
            Ok(id) => {
                let _ = writeln!(
                    out,
                    "  ok    {short} {} -> {} (id {id})",
                    version.path.display(),
                    file.subject
                );
            }
            Err(e) if e.error_code() == Some(INCOMPATIBLE_SCHEMA) => {
                ok = false;
                let _ = writeln!(
                    out,
                    "  FAIL  {short} {} -> {}: committed change is incompatible (production \
                     refuses it)",
                    version.path.display(),
                    file.subject
                );
                let answer = client
                    .check_compatibility_with(
                        &file.subject,
                        &file.text,
                        &file.contract_fields(),
                        riffle_registry_client::VersionRef::Latest,
                    )
                    .await
                    .map_err(fail)?;
                for m in answer.messages {
                    let _ = writeln!(out, "        {m}");
                }
                out.push_str(&indent(&explain(client, &file).await?, "        "));
            }
            Err(e @ ClientError::Api { .. }) if e.status().is_some_and(|s| s < 500) => {
                let _ = writeln!(
                    out,
                    "  skip  {short} {} -> {}: refused: {e}",
                    version.path.display(),
                    file.subject
                );
            }
            Err(e) => return Err(fail(e)),
        }
    }
    let _ = writeln!(out, "working tree:");
    let mut checks = String::new();
    let current_ok = check_files(client, current, &mut checks).await?;
    out.push_str(&indent(&checks, "  "));
    Ok((out, ok && current_ok))
}

/// Every committed version of `rel` reachable from `commit`, oldest first, with its
/// subject's contract file `contract` as it was then: a commit that changed only the
/// contract is a version too, as its registration would be.
///
/// # Errors
/// git failing.
pub fn committed_versions(
    root: &Path,
    commit: &str,
    rel: &Path,
    contract: Option<&Path>,
) -> Result<Vec<Committed>, SchemaError> {
    let rel_text = rel.to_string_lossy();
    let contract_text = contract.map(|c| c.to_string_lossy().into_owned());
    let mut args = vec!["log", "--reverse", "--format=%H", commit, "--", &rel_text];
    if let Some(c) = &contract_text {
        args.push(c);
    }
    let log = git(root, &args)?;
    let mut out = Vec::new();
    for sha in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // The commit that deleted the file has no text of it: nothing to register.
        let Ok(text) = git(root, &["show", &format!("{sha}:{rel_text}")]) else {
            continue;
        };
        let contract = contract
            .zip(contract_text.as_deref())
            .and_then(|(path, c)| {
                git(root, &["show", &format!("{sha}:{c}")])
                    .ok()
                    .map(|text| (path.to_path_buf(), text))
            });
        out.push(Committed {
            commit: sha.to_owned(),
            path: rel.to_path_buf(),
            text,
            contract,
        });
    }
    Ok(out)
}

/// The full hash `rev` names.
fn resolve(root: &Path, rev: &str) -> Result<String, SchemaError> {
    git(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map(|s| s.trim().to_owned())
    .map_err(|_| {
        SchemaError::Git(format!(
            "{rev} does not name a commit in {}",
            root.display()
        ))
    })
}

fn git(dir: &Path, args: &[&str]) -> Result<String, SchemaError> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SchemaError::Git(format!("cannot run git: {e}")))?;
    if !output.status.success() {
        return Err(SchemaError::Git(format!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    String::from_utf8(output.stdout)
        .map_err(|e| SchemaError::Git(format!("git {} printed non-UTF-8: {e}", args.join(" "))))
}

/// The emulators and one registry process, private to this gate run.
struct LocalRegistry {
    emulators: Emulators,
    child: Child,
    client: RegistryClient,
    state_dir: PathBuf,
}

/// A local failure of the gate's own registry or emulators.
fn gate_error(e: impl std::fmt::Display) -> SchemaError {
    SchemaError::Gate(e.to_string())
}

impl LocalRegistry {
    async fn start() -> Result<LocalRegistry, SchemaError> {
        let process = |reason: String| {
            SchemaError::Gate(
                PipelineError::Process {
                    service: REGISTRY.into(),
                    reason,
                }
                .to_string(),
            )
        };
        let binary = bin_dir().join(REGISTRY);
        if !binary.is_file() {
            return Err(process(format!(
                "binary {} not found; build it first (`cargo build -p riffle-schema-registry`, \
                 or set RIFFLE_BIN_DIR)",
                binary.display()
            )));
        }
        let project = riffle_plan::project_root().map_err(gate_error)?;
        let state_dir = project
            .join(".riffle")
            .join("schema-gate")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| process(format!("cannot create {}: {e}", state_dir.display())))?;

        let emulators = Emulators::start(&state_dir.join("aws"))
            .await
            .map_err(gate_error)?;
        let sdk = emulators.sdk_config().await;
        let deployment = riffle_local::provision(&sdk, &project.join("infra"))
            .await
            .map_err(gate_error)?;
        let log_path = state_dir.join("schema-registry.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| process(format!("log file {}: {e}", log_path.display())))?;
        let mut child = Command::new(&binary)
            .envs(emulators.env())
            // A private registry: whatever the caller's shell says about auth is for the
            // registry it talks to, not this one.
            .envs(riffle_local::local_registry_env(
                deployment.service_env(REGISTRY).map_err(gate_error)?,
            ))
            .env("RIFFLE_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| process(format!("spawn {}: {e}", binary.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| process("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("LISTENING ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(url)) = announced else {
            let _ = child.kill().await;
            emulators.shutdown().await;
            return Err(process(format!(
                "did not come up within {START_TIMEOUT:?}; see {}",
                log_path.display()
            )));
        };
        let client = RegistryClient::new(&url).map_err(|source| SchemaError::Registry {
            url: url.clone(),
            source,
        })?;
        Ok(LocalRegistry {
            emulators,
            child,
            client,
            state_dir,
        })
    }

    async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        self.emulators.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
