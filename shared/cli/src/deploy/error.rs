//! Why `riffle deploy` stopped. Every message names the stack, file or operation involved and,
//! where there is one, the next thing to do.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong deploying (or planning) the stacks.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// `--env` does not fit into stack and resource names.
    #[error("invalid environment name {name:?}: {why}")]
    InvalidEnv {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        why: String,
    },
    /// A stack name on the command line that no template stands for.
    #[error("unknown stack {name:?}: the stacks are {}", valid.join(", "))]
    UnknownStack {
        /// The name given.
        name: String,
        /// The names that exist (`platform` and each template under infra/services/).
        valid: Vec<String>,
    },
    /// A template file that should be there is not.
    #[error("template {} not found (is --infra the repository's infra/ folder?)", .0.display())]
    TemplateMissing(PathBuf),
    /// A template could not be read or is not a CloudFormation template we can use.
    #[error("template {}: {message}", file.display())]
    Template {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Services import each other's exports in a circle: no order deploys them.
    #[error("the service templates import each other's exports in a cycle: {}", .0.join(", "))]
    ImportCycle(Vec<String>),
    /// A `--param` that none of the selected stacks declares (a typo would otherwise be
    /// ignored silently).
    #[error("--param {key}: no selected stack's template declares a parameter {key}")]
    UnknownParam {
        /// The parameter name.
        key: String,
    },
    /// A template parameter with no default and no value from anywhere.
    #[error("stack {stack}: parameter {param} has no default and no value; {hint}")]
    MissingParam {
        /// The stack.
        stack: String,
        /// The parameter.
        param: String,
        /// How to give it one.
        hint: String,
    },
    /// A service stack is to be deployed but nobody said where its code goes.
    #[error(
        "stack {stack} needs its function's code in S3: pass --code-bucket BUCKET (the zip is uploaded there), or --plan to only show the changes"
    )]
    NoCodeBucket {
        /// The service stack.
        stack: String,
    },
    /// The function's zip has not been built.
    #[error("no zip for {service} at {}: run `make package` first", path.display())]
    ZipMissing {
        /// The service.
        service: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A local file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The template is over CloudFormation's inline limit and there is no bucket to pass it by
    /// URL through.
    #[error(
        "template {} is {size} bytes, over CloudFormation's {limit}-byte TemplateBody limit: pass --code-bucket BUCKET so it is uploaded to S3 and passed by URL",
        file.display()
    )]
    TemplateTooLarge {
        /// The file.
        file: PathBuf,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No region in the environment: every AWS call would fail.
    #[error("no AWS region: set AWS_REGION (or a profile's region through AWS_PROFILE)")]
    NoRegion,
    /// No credentials in the environment.
    #[error(
        "no AWS credentials: {0} (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role is available)"
    )]
    NoCredentials(String),
    /// An AWS call failed.
    #[error("{operation} ({stack}): {message}")]
    Aws {
        /// The API operation (CreateChangeSet, ...).
        operation: &'static str,
        /// The stack, bucket or object it was about.
        stack: String,
        /// The service's code and message, or the SDK's chain of causes.
        message: String,
    },
    /// The stack is in a state no change set can be made from.
    #[error("stack {stack} is {status}: {advice}")]
    StackBlocked {
        /// The stack.
        stack: String,
        /// Its status.
        status: String,
        /// What to do about it.
        advice: String,
    },
    /// CloudFormation refused the change set (not for want of changes).
    #[error("stack {stack}: change set {change_set} failed: {reason}")]
    ChangeSetFailed {
        /// The stack.
        stack: String,
        /// The change set.
        change_set: String,
        /// CloudFormation's reason.
        reason: String,
    },
    /// Something took longer than allowed.
    #[error(
        "stack {stack}: {what} still not done after {}s (raise {flag}); it goes on in CloudFormation, look at the stack's events",
        waited.as_secs()
    )]
    Timeout {
        /// The stack.
        stack: String,
        /// What was awaited.
        what: &'static str,
        /// The limit.
        waited: Duration,
        /// The option that sets it.
        flag: &'static str,
    },
    /// The operator answered no.
    #[error("stack {0}: not executed (declined); the stacks after it were not deployed")]
    Declined(String),
    /// Nobody can be asked and `--yes` was not given.
    #[error(
        "refusing to change stacks without confirmation: stdin is not a terminal; pass --yes to deploy, or --plan to only show the changes"
    )]
    NotConfirmed,
    /// The stack operation ended in failure (CloudFormation rolled it back).
    #[error("stack {stack} ended {status}{}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(), render_failed(failed))]
    StackFailed {
        /// The stack.
        stack: String,
        /// Its final status.
        status: String,
        /// Its status reason.
        reason: Option<String>,
        /// The failed resources' events, formatted.
        failed: Vec<String>,
    },
}

fn render_failed(failed: &[String]) -> String {
    if failed.is_empty() {
        return String::new();
    }
    let mut out = String::from("; failed resources:");
    for line in failed {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out
}
