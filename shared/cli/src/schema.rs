//! `riffle schema`: the schema registry from a terminal and from CI.
//!
//! - `register` puts schema files into the registry under the project's subject names;
//! - `check` asks the registry whether files may follow what is registered;
//! - `list` shows subjects, versions, ids and compatibility levels;
//! - `diff` shows what changed between two schemas, field by field ([`diff`], pure);
//! - the CI gate (`riffle-dev schema-gate`, in the harness) replays the git history of
//!   `schemas/` into a private local registry and checks
//!   the working tree against it, so an incompatible change fails CI, not production.
//!
//! Subjects follow the project's naming: a schema's subject is its record's full name
//! (`com.riffle.shop.OrderPlaced`), as the contracts in `schemas/rules/` and the envelope's
//! `ENVELOPE_SUBJECT` spell them. Exit codes: 0 fine, 1 incompatible (or refused), 2 could not
//! tell (bad arguments, unreadable file, registry unreachable).

pub mod diff;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use riffle_codec::registered::DataContract;
use riffle_registry_client::{
    ClientError, CompatibilityLevel, INCOMPATIBLE_SCHEMA, RegistryClient, SUBJECT_NOT_FOUND,
    VERSION_NOT_FOUND, VersionRef,
};

/// The environment variable naming the registry when `--registry` is not given.
pub const REGISTRY_URL_ENV: &str = "RIFFLE_REGISTRY_URL";

/// Exit code: something is incompatible, or the registry refused a schema.
pub const EXIT_INCOMPATIBLE: u8 = 1;
/// Exit code: the question could not be answered.
pub const EXIT_ERROR: u8 = 2;

/// Why a schema command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The command line or environment is missing something.
    #[error("{0}")]
    Usage(String),
    /// A schema file could not be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file is not a named Avro schema, so it has no subject.
    #[error("{path}: {reason}")]
    NotASchema {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The registry failed or refused a call.
    #[error("schema registry at {url}: {source}")]
    Registry {
        /// Where the client tried.
        url: String,
        /// What happened.
        #[source]
        source: ClientError,
    },
    /// A git command failed.
    #[error("git: {0}")]
    Git(String),
    /// The gate's local registry or emulators could not start (`riffle-dev schema-gate`).
    #[error("{0}")]
    Gate(String),
}

impl SchemaError {
    /// A registry unreachable or answering 5xx may answer on a later try; everything else
    /// needs someone to change something.
    pub fn retryable(&self) -> bool {
        match self {
            SchemaError::Registry { source, .. } => source.retryable(),
            _ => false,
        }
    }
}

/// `riffle schema ...`
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SchemaCommand,
}

/// Where the registry is. Credentials come from the environment only, so they never show in
/// a process list: RIFFLE_REGISTRY_USER and RIFFLE_REGISTRY_PASSWORD, or RIFFLE_REGISTRY_TOKEN.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Base URL of the schema registry. Credentials come from RIFFLE_REGISTRY_USER and
    /// RIFFLE_REGISTRY_PASSWORD, or RIFFLE_REGISTRY_TOKEN.
    #[arg(long = "registry", value_name = "URL", env = REGISTRY_URL_ENV)]
    pub registry: Option<String>,
}

impl RegistryArgs {
    /// The client for `--registry` (or `RIFFLE_REGISTRY_URL`), with the environment's
    /// credentials.
    ///
    /// # Errors
    /// No URL anywhere, a URL that is not http(s), or ambiguous credentials.
    pub fn client(&self) -> Result<RegistryClient, SchemaError> {
        let url = self
            .registry
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                SchemaError::Usage(format!(
                    "no registry: pass --registry URL or set {REGISTRY_URL_ENV}"
                ))
            })?;
        RegistryClient::from_env_credentials(&url).map_err(|source| SchemaError::Registry {
            url: url.clone(),
            source,
        })
    }
}

/// The `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Register schema files with the registry and print subject, version and id of each.
    ///
    /// Without PATHS: every file under schemas/events/ plus schemas/envelope.avsc. A schema's
    /// subject is its record's full name (e.g. com.riffle.shop.OrderPlaced). Registering a
    /// schema that is already there is a no-op that prints its existing version. A schema's
    /// contract, rules/<subject>.json beside its folder (schemas/rules/ for schemas/events/),
    /// is registered with it as Confluent's metadata and ruleSet, which is how the stages
    /// learn it: no rebuild or redeploy. Exits 1 if the registry refuses any file (e.g.
    /// incompatible, or a contract rule stricter than the latest version's), 2 if it cannot
    /// be asked.
    Register {
        #[command(flatten)]
        registry: RegistryArgs,
        /// Schema files (.avsc).
        paths: Vec<PathBuf>,
    },
    /// Ask the registry whether schema files may be registered, without registering them.
    ///
    /// Each file is checked against its subject under the subject's compatibility level
    /// (against every version for *_TRANSITIVE levels, the latest otherwise); a subject with
    /// nothing registered yet is compatible. Prints the registry's reasons and the field-level
    /// changes for every incompatible file. Exits 0 if all are compatible, 1 if any is not,
    /// 2 if the registry cannot be asked. Without PATHS: as for `register`.
    Check {
        #[command(flatten)]
        registry: RegistryArgs,
        /// Schema files (.avsc).
        paths: Vec<PathBuf>,
    },
    /// List every subject with its compatibility level, versions and schema ids, and the
    /// contract registered with each version (its rules, view key and window).
    List {
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show the field-level differences between two schemas of a subject: fields added or
    /// removed, types and defaults changed, enum symbols added or removed.
    ///
    /// The new side is --file PATH, or --version N, or (neither given) the file under
    /// schemas/ whose subject is SUBJECT. The old side is --against (default: latest).
    Diff {
        #[command(flatten)]
        registry: RegistryArgs,
        /// The subject, e.g. com.riffle.shop.OrderPlaced.
        subject: String,
        /// Compare this schema file.
        #[arg(long, value_name = "PATH", conflicts_with = "version")]
        file: Option<PathBuf>,
        /// Compare this registered version.
        #[arg(long, value_name = "N")]
        version: Option<VersionRef>,
        /// The registered version to compare with: a number or "latest".
        #[arg(long, value_name = "VERSION", default_value = "latest")]
        against: VersionRef,
    },
}

/// Runs a `schema` subcommand, printing results on stdout and errors on stderr.
pub async fn run(args: SchemaArgs) -> ExitCode {
    let outcome = match args.command {
        SchemaCommand::Register { registry, paths } => {
            with_client(&registry, |c| async move {
                register(&c, &default_paths(paths)?).await
            })
            .await
        }
        SchemaCommand::Check { registry, paths } => {
            with_client(&registry, |c| async move {
                check_command(&c, &default_paths(paths)?).await
            })
            .await
        }
        SchemaCommand::List { registry } => {
            with_client(&registry, |c| async move { list(&c).await }).await
        }
        SchemaCommand::Diff {
            registry,
            subject,
            file,
            version,
            against,
        } => {
            with_client(&registry, |c| async move {
                diff_command(&c, &subject, file, version, against).await
            })
            .await
        }
    };
    exit_code(outcome)
}

/// The exit code of a schema command's outcome: 0 compatible, [`EXIT_INCOMPATIBLE`],
/// or [`EXIT_ERROR`] (printed) when the command could not run.
pub fn exit_code(outcome: Result<bool, SchemaError>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INCOMPATIBLE),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn with_client<F, Fut>(args: &RegistryArgs, f: F) -> Result<bool, SchemaError>
where
    F: FnOnce(RegistryClient) -> Fut,
    Fut: std::future::Future<Output = Result<bool, SchemaError>>,
{
    f(args.client()?).await
}

/// A schema file and the subject it registers under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The schema text as in the file.
    pub text: String,
    /// Its subject (the record's full name).
    pub subject: String,
    /// The subject's contract file and what it registers as, when there is one
    /// ([`contract_path`]).
    pub contract: Option<(PathBuf, DataContract)>,
}

/// Where the contract of `subject` is for a schema at `schema_path`: `rules/<subject>.json`
/// beside the schema's folder (`schemas/rules/` for `schemas/events/*.avsc`).
pub fn contract_path(schema_path: &Path, subject: &str) -> Option<PathBuf> {
    // Absolute first: `x.avsc` and `./x.avsc` have no folder above theirs to look in.
    let schema_path = std::path::absolute(schema_path).ok()?;
    let folder = schema_path.parent()?.parent()?;
    Some(folder.join("rules").join(format!("{subject}.json")))
}

impl SchemaFile {
    /// Reads `path` and works out its subject.
    ///
    /// # Errors
    /// An unreadable file, or one that is not a named Avro schema.
    pub fn read(path: &Path) -> Result<SchemaFile, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut file = Self::from_text(path, text)?;
        if let Some(rules) = contract_path(path, &file.subject).filter(|p| p.is_file()) {
            let unreadable = |reason: String| SchemaError::Read {
                path: rules.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&rules).map_err(|e| unreadable(e.to_string()))?;
            let name = rules.display().to_string();
            let registered =
                DataContract::from_file(&name, &text).map_err(|e| unreadable(e.to_string()))?;
            if registered.subject != file.subject {
                return Err(unreadable(format!(
                    "the contract is for {}, the schema is {}",
                    registered.subject, file.subject
                )));
            }
            file.contract = Some((rules, registered.fields));
        }
        Ok(file)
    }

    /// The contract fields to register with the schema (none without a contract file).
    pub fn contract_fields(&self) -> DataContract {
        self.contract
            .as_ref()
            .map(|(_, fields)| fields.clone())
            .unwrap_or_default()
    }

    /// As [`SchemaFile::read`] for text already in hand (e.g. from `git show`).
    ///
    /// # Errors
    /// Text that is not a named Avro schema.
    pub fn from_text(path: &Path, text: String) -> Result<SchemaFile, SchemaError> {
        let subject = subject_of(&text).map_err(|reason| SchemaError::NotASchema {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(SchemaFile {
            path: path.to_path_buf(),
            text,
            subject,
            contract: None,
        })
    }
}

/// The subject of a schema: the full name of its top-level named type, which is how the
/// project names subjects (RecordNameStrategy).
///
/// # Errors
/// Not JSON, or not a named type (a bare primitive or union has no name to go by).
pub fn subject_of(text: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let name = value
        .get("name")
        .and_then(serde_json::Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("not a named Avro schema (no top-level \"name\"), so it has no subject")?;
    if name.contains('.') {
        return Ok(name.to_owned());
    }
    Ok(
        match value
            .get("namespace")
            .and_then(serde_json::Value::as_str)
            .filter(|ns| !ns.is_empty())
        {
            Some(ns) => format!("{ns}.{name}"),
            None => name.to_owned(),
        },
    )
}

/// The files `register` and `check` take without arguments: `schemas/events/*.avsc` and the
/// envelope, in the project around the current directory.
///
/// # Errors
/// Outside the project, or `schemas/events/` unreadable.
pub fn default_schema_files(schemas_dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    let events = schemas_dir.join("events");
    let mut paths = avsc_files(&events, false)?;
    paths.push(schemas_dir.join("envelope.avsc"));
    Ok(paths)
}

fn default_paths(paths: Vec<PathBuf>) -> Result<Vec<SchemaFile>, SchemaError> {
    let paths = if paths.is_empty() {
        let root = riffle_plan::project_root().map_err(|e| {
            SchemaError::Usage(format!(
                "no PATHS given and no project to take them from: {e}"
            ))
        })?;
        default_schema_files(&root.join("schemas"))?
    } else {
        paths
    };
    paths.iter().map(|p| SchemaFile::read(p)).collect()
}

/// The `.avsc` files in `dir` (and below it when `recursive`), sorted.
///
/// # Errors
/// A directory that cannot be read.
pub fn avsc_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, SchemaError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| SchemaError::Read {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    for entry in entries {
        let path = entry
            .map_err(|e| SchemaError::Read {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?
            .path();
        if path.is_dir() {
            if recursive {
                out.extend(avsc_files(&path, true)?);
            }
        } else if path.extension().is_some_and(|e| e == "avsc") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn registry_error(client: &RegistryClient) -> impl Fn(ClientError) -> SchemaError + '_ {
    move |source| SchemaError::Registry {
        url: client.base_url().to_owned(),
        source,
    }
}

/// A registry refusal that concerns only this file: report it and go on with the others.
fn is_refusal(e: &ClientError) -> bool {
    e.status().is_some_and(|s| (400..500).contains(&s))
        && !matches!(
            e,
            ClientError::Unauthorized { .. } | ClientError::Forbidden { .. }
        )
}

async fn register(client: &RegistryClient, files: &[SchemaFile]) -> Result<bool, SchemaError> {
    let fail = registry_error(client);
    let mut all_ok = true;
    for file in files {
        match client
            .register_with(&file.subject, &file.text, &file.contract_fields())
            .await
        {
            Ok(_) => {
                let v = client
                    .lookup_with(&file.subject, &file.text, &file.contract_fields())
                    .await
                    .map_err(&fail)?;
                let contract = match &file.contract {
                    Some((path, _)) => format!(", contract {}", path.display()),
                    None => ", no contract".to_owned(),
                };
                println!(
                    "{}  version {}  id {}  ({}{contract})",
                    v.subject,
                    v.version,
                    v.id,
                    file.path.display()
                );
            }
            Err(e) if is_refusal(&e) => {
                all_ok = false;
                println!("{}  REFUSED  ({})", file.subject, file.path.display());
                println!("    {e}");
                if e.error_code() == Some(INCOMPATIBLE_SCHEMA) {
                    print!("{}", indent(&explain(client, file).await?, "    "));
                }
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(all_ok)
}

/// What a check found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing is registered under the subject yet: anything may come first.
    NewSubject,
    /// Compatible with the versions the level asks for.
    Compatible {
        /// The level applied.
        level: CompatibilityLevel,
    },
    /// Not compatible.
    Incompatible {
        /// The level applied.
        level: CompatibilityLevel,
        /// The registry's reasons, per version checked against (`vN: message`).
        messages: Vec<String>,
    },
}

/// Checks `file` against what its subject holds, under the subject's level.
///
/// # Errors
/// The registry could not be asked.
pub async fn check_file(
    client: &RegistryClient,
    file: &SchemaFile,
) -> Result<Verdict, SchemaError> {
    let fail = registry_error(client);
    let versions = match client.versions(&file.subject).await {
        Ok(v) if v.is_empty() => return Ok(Verdict::NewSubject),
        Ok(v) => v,
        Err(e) if e.error_code() == Some(SUBJECT_NOT_FOUND) => return Ok(Verdict::NewSubject),
        Err(e) => return Err(fail(e)),
    };
    let level = client.config(Some(&file.subject)).await.map_err(&fail)?;
    let targets: Vec<VersionRef> = if level.is_transitive() {
        versions.into_iter().map(VersionRef::Number).collect()
    } else {
        vec![VersionRef::Latest]
    };
    let mut messages = Vec::new();
    let mut compatible = true;
    for target in targets {
        let answer = match client
            .check_compatibility_with(&file.subject, &file.text, &file.contract_fields(), target)
            .await
        {
            Ok(a) => a,
            // Deleted between the two calls: nothing left to be incompatible with.
            Err(e) if matches!(e.error_code(), Some(SUBJECT_NOT_FOUND | VERSION_NOT_FOUND)) => {
                continue;
            }
            Err(e) => return Err(fail(e)),
        };
        if !answer.is_compatible {
            compatible = false;
            let against = match target {
                VersionRef::Latest => "against the latest version".to_owned(),
                VersionRef::Number(n) => format!("against version {n}"),
            };
            if answer.messages.is_empty() {
                messages.push(format!("{against}: incompatible"));
            }
            messages.extend(
                answer
                    .messages
                    .into_iter()
                    .map(|m| format!("{against}: {m}")),
            );
        }
    }
    Ok(if compatible {
        Verdict::Compatible { level }
    } else {
        Verdict::Incompatible { level, messages }
    })
}

/// Checks every file and prints one verdict each; `Ok(true)` when all are compatible.
///
/// # Errors
/// The registry could not be asked.
pub async fn check_files(
    client: &RegistryClient,
    files: &[SchemaFile],
    out: &mut String,
) -> Result<bool, SchemaError> {
    let mut all_ok = true;
    for file in files {
        let where_ = file.path.display();
        match check_file(client, file).await? {
            Verdict::NewSubject => {
                let _ = writeln!(out, "ok    {} ({where_}): new subject", file.subject);
            }
            Verdict::Compatible { level } => {
                let _ = writeln!(out, "ok    {} ({where_}): {level}", file.subject);
            }
            Verdict::Incompatible { level, messages } => {
                all_ok = false;
                let _ = writeln!(
                    out,
                    "FAIL  {} ({where_}): incompatible under {level}",
                    file.subject
                );
                for m in messages {
                    let _ = writeln!(out, "      {m}");
                }
                out.push_str(&indent(&explain(client, file).await?, "      "));
            }
        }
    }
    Ok(all_ok)
}

async fn check_command(client: &RegistryClient, files: &[SchemaFile]) -> Result<bool, SchemaError> {
    let mut out = String::new();
    let ok = check_files(client, files, &mut out).await;
    print!("{out}");
    let ok = ok?;
    println!(
        "{}",
        if ok {
            "all compatible"
        } else {
            "incompatible changes found"
        }
    );
    Ok(ok)
}

/// The field-level changes from the subject's latest version to `file`, for a person
/// reading why a check failed.
pub async fn explain(client: &RegistryClient, file: &SchemaFile) -> Result<String, SchemaError> {
    let latest = match client.version(&file.subject, VersionRef::Latest).await {
        Ok(v) => v,
        Err(e) if e.error_code() == Some(SUBJECT_NOT_FOUND) => return Ok(String::new()),
        Err(e) => return Err(registry_error(client)(e)),
    };
    Ok(match diff::diff(&latest.schema, &file.text) {
        Ok(changes) => format!(
            "changes from version {} (id {}):\n{}",
            latest.version,
            latest.id,
            indent(&diff::render(&changes), "  ")
        ),
        Err(e) => format!("cannot diff: {e}\n"),
    })
}

pub fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

async fn list(client: &RegistryClient) -> Result<bool, SchemaError> {
    let fail = registry_error(client);
    let mut subjects = client.subjects().await.map_err(&fail)?;
    subjects.sort();
    if subjects.is_empty() {
        println!("no subjects registered at {}", client.base_url());
    }
    for subject in subjects {
        let level = client.config(Some(&subject)).await.map_err(&fail)?;
        println!("{subject}  ({level})");
        for v in client.versions(&subject).await.map_err(&fail)? {
            let version = client
                .version(&subject, VersionRef::Number(v))
                .await
                .map_err(&fail)?;
            println!(
                "  version {}  id {}  {}",
                version.version,
                version.id,
                contract_summary(&subject, &version.contract)
            );
        }
    }
    Ok(true)
}

/// One line on the contract registered with a version (ADR 0020): its rules and what the
/// enricher derives, so a producer team sees what its events are held to.
pub fn contract_summary(subject: &str, fields: &DataContract) -> String {
    match fields.contract(subject) {
        Ok(None) => "no contract".to_owned(),
        Ok(Some(c)) => {
            let mut line = format!(
                "contract: {} field rule{}",
                c.fields.len(),
                if c.fields.len() == 1 { "" } else { "s" }
            );
            if let Some(ms) = c.max_event_time_skew_ms {
                let _ = write!(line, ", skew {} s", ms / 1000);
            }
            if let Some(e) = &c.enrich {
                let _ = write!(line, ", key {}, window {} s", e.agg_key, e.window_secs);
            }
            line
        }
        Err(e) => format!("contract unreadable: {e}"),
    }
}

async fn diff_command(
    client: &RegistryClient,
    subject: &str,
    file: Option<PathBuf>,
    version: Option<VersionRef>,
    against: VersionRef,
) -> Result<bool, SchemaError> {
    let fail = registry_error(client);
    let (new_label, new_text) = match (file, version) {
        (Some(path), _) => {
            let file = SchemaFile::read(&path)?;
            if file.subject != subject {
                eprintln!(
                    "note: {} is subject {}, not {subject}",
                    path.display(),
                    file.subject
                );
            }
            (path.display().to_string(), file.text)
        }
        (None, Some(v)) => {
            let found = client.version(subject, v).await.map_err(&fail)?;
            (
                format!("version {} (id {})", found.version, found.id),
                found.schema,
            )
        }
        (None, None) => {
            let file = project_file_for(subject)?.ok_or_else(|| {
                SchemaError::Usage(format!(
                    "no file under schemas/ has subject {subject}; pass --file or --version"
                ))
            })?;
            (file.path.display().to_string(), file.text)
        }
    };
    let old = client.version(subject, against).await.map_err(&fail)?;
    let changes = diff::diff(&old.schema, &new_text).map_err(|e| SchemaError::NotASchema {
        path: PathBuf::from(&new_label),
        reason: e.to_string(),
    })?;
    println!(
        "{subject}: version {} (id {}) -> {new_label}",
        old.version, old.id
    );
    print!("{}", diff::render(&changes));
    Ok(true)
}

/// The schema file under the project's `schemas/` whose subject is `subject`.
fn project_file_for(subject: &str) -> Result<Option<SchemaFile>, SchemaError> {
    let root = riffle_plan::project_root()
        .map_err(|e| SchemaError::Usage(format!("no project to find {subject} in: {e}")))?;
    for path in avsc_files(&root.join("schemas"), true)? {
        // Files that are not schemas cannot be the one asked for.
        if let Ok(file) = SchemaFile::read(&path)
            && file.subject == subject
        {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_full_record_names() {
        assert_eq!(
            subject_of(include_str!("../../../schemas/events/order_placed.avsc")).unwrap(),
            "com.riffle.shop.OrderPlaced"
        );
        assert_eq!(
            subject_of(include_str!("../../../schemas/envelope.avsc")).unwrap(),
            riffle_codec::envelope::ENVELOPE_SUBJECT
        );
        assert_eq!(
            subject_of(r#"{"type":"record","name":"a.b.C","namespace":"x","fields":[]}"#).unwrap(),
            "a.b.C"
        );
        assert_eq!(
            subject_of(r#"{"type":"record","name":"C","fields":[]}"#).unwrap(),
            "C"
        );
        assert!(subject_of(r#""string""#).is_err());
        assert!(subject_of("{").is_err());
    }

    #[test]
    fn subjects_agree_with_the_contracts() {
        let root = riffle_plan::project_root().unwrap();
        for contract in riffle_codec::rules::bundled().unwrap().values() {
            let file = SchemaFile::read(&root.join("schemas").join(&contract.schema_file)).unwrap();
            assert_eq!(file.subject, contract.subject, "{}", contract.schema_file);
        }
    }

    #[test]
    fn default_files_are_the_events_and_the_envelope() {
        let root = riffle_plan::project_root().unwrap();
        let files = default_schema_files(&root.join("schemas")).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"order_placed.avsc".to_owned()), "{names:?}");
        assert!(names.contains(&"envelope.avsc".to_owned()), "{names:?}");
        assert!(!names.contains(&"view_row.avsc".to_owned()), "{names:?}");
    }
}
