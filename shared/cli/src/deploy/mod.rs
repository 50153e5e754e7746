//! `riffle deploy --env NAME [STACK...]`: the platform and the service stacks created or updated
//! through CloudFormation change sets, one stack at a time.
//!
//! Per stack (the platform first, then the services in the order their imports need):
//! DescribeStacks decides CREATE or UPDATE (a REVIEW_IN_PROGRESS stack left by an unexecuted
//! CREATE change set is still new); a change set is made and its changes shown; `--plan` deletes
//! it again (and the empty stack a CREATE change set made) and goes on to the next stack;
//! otherwise, once confirmed, it is executed and the stack's events are printed as they come
//! until the stack settles. A failure prints the failed resources' events and stops: later
//! stacks may import what the failed one was to export. CloudFormation rolls a failed update
//! back (the change set is executed with rollback on); a failed creation is left
//! ROLLBACK_COMPLETE, and the next deploy says to delete it.
//!
//! Stack names carry the environment (`riffle-dev-platform`); templates that declare an `Env`
//! parameter get it. Service stacks get their code as `CodeS3Bucket`/`CodeS3Key`: the zip
//! `make package` built, uploaded content-addressed ([`code`]).
//!
//! Layout: [`target`] (environment names, which stacks, their templates, the order),
//! [`params`] (a change set's parameters), [`code`] (the function zips), [`changeset`] and
//! [`events`] (the pure reading of change sets, stack statuses and events), [`stack`] (the
//! CloudFormation calls), `error` ([`DeployError`]). This file is the command and the flow.

pub mod changeset;
pub mod code;
mod error;
pub mod events;
pub mod params;
pub mod stack;
pub mod target;

pub use changeset::Change;
pub use error::DeployError;
pub use target::EnvName;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_cloudformation::config::ProvideCredentials as _;
use aws_sdk_cloudformation::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use clap::Args;
use tokio::time::Instant;

use changeset::{Settled, change_set_name, render_changes};
use code::{CodeInput, code_params};
use events::{EventLog, Existing, Phase, phase};
use params::{ParamSources, ParamValue, merge, parse_duration, parse_param, render_params};
use stack::{Created, Stack, TemplateSource};
use target::{Target, TemplateInfo};

/// CloudFormation's limit on an inline template (`TemplateBody`); larger ones go by S3 URL.
pub const TEMPLATE_BODY_MAX: usize = 51_200;

/// `riffle deploy`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Stacks are riffle-<env>-platform and riffle-<env>-<service>; the platform always goes first. \
Service stacks take their code from target/lambda/arm64/<service>.zip (`make package`), \
uploaded to s3://<code-bucket>/<service>/<sha256>.zip, so an unchanged build changes nothing. \
A failed update is rolled back by CloudFormation; the failed resources' events are printed and \
the command exits non-zero. Credentials, region and endpoints come from the standard AWS \
variables (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL).")]
pub struct DeployArgs {
    /// The environment: lowercase letters, digits and '-', a letter first, at most 16
    /// characters. It goes into every stack name.
    #[arg(long, value_name = "NAME", value_parser = EnvName::parse)]
    pub env: EnvName,
    /// Which stacks: `platform` and service names (the files under infra/services/).
    /// None: all of them.
    #[arg(value_name = "STACK")]
    pub stacks: Vec<String>,
    /// Only show what would change: every change set is deleted again, no code is uploaded.
    #[arg(long)]
    pub plan: bool,
    /// Execute without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// A template parameter, for every selected stack that declares it (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// The bucket the functions' zips (and templates over 51,200 bytes) are uploaded to.
    /// Required to deploy a service stack; a plan without it names a placeholder.
    #[arg(long, value_name = "BUCKET")]
    pub code_bucket: Option<String>,
    /// The templates folder (default: infra/ of this checkout).
    #[arg(long, value_name = "DIR")]
    pub infra: Option<PathBuf>,
    /// How long CloudFormation may take to compute a change set.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub changeset_timeout: Duration,
    /// How long one stack's create or update may take (CloudFormation goes on after it).
    #[arg(long, value_name = "DURATION", default_value = "60m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often to ask CloudFormation for news while waiting.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub poll: Duration,
}

/// Whether to execute a change set once it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// `--yes`.
    Yes,
    /// Ask on the terminal, once per stack.
    Ask,
}

/// Everything one deploy needs, independent of the command line (tests build it directly).
#[derive(Debug, Clone)]
pub struct Request {
    /// The environment.
    pub env: EnvName,
    /// The stacks asked for (empty: all).
    pub stacks: Vec<String>,
    /// `--plan`.
    pub plan: bool,
    /// Execute without asking, or ask.
    pub approval: Approval,
    /// `--param`.
    pub params: BTreeMap<String, String>,
    /// `--code-bucket`.
    pub code_bucket: Option<String>,
    /// The templates folder.
    pub infra: PathBuf,
    /// Where `target/lambda/` is (the repository root).
    pub root: PathBuf,
    /// Change set computation limit.
    pub changeset_timeout: Duration,
    /// Stack operation limit.
    pub timeout: Duration,
    /// Poll interval.
    pub poll: Duration,
}

impl Request {
    /// From the command line, in this checkout.
    ///
    /// # Errors
    /// Not in the repository (and no `--infra`), or confirmation needed where nobody can give
    /// it.
    pub fn from_args(args: DeployArgs) -> Result<Request, crate::OpsError> {
        let approval = if args.yes || args.plan {
            Approval::Yes
        } else if std::io::stdin().is_terminal() {
            Approval::Ask
        } else {
            return Err(DeployError::NotConfirmed.into());
        };
        let root = riffle_plan::project_root()?;
        Ok(Request {
            env: args.env,
            stacks: args.stacks,
            plan: args.plan,
            approval,
            params: args.params.into_iter().collect(),
            code_bucket: args.code_bucket,
            infra: args.infra.unwrap_or_else(|| root.join("infra")),
            root,
            changeset_timeout: args.changeset_timeout,
            timeout: args.timeout,
            poll: args.poll,
        })
    }
}

/// What happened to one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The template and parameters match the stack.
    NoChanges,
    /// `--plan`: these would change.
    Planned(Vec<Change>),
    /// `--plan`: CloudFormation cannot compute it before this export of a stack planned
    /// earlier in the run exists (deploy that one first).
    Awaits(String),
    /// `--plan`: CloudFormation refused the change set, for this reason.
    PlanFailed(String),
    /// Executed and settled in this status.
    Deployed {
        /// CREATE_COMPLETE or UPDATE_COMPLETE.
        status: String,
        /// What changed.
        changes: Vec<Change>,
    },
}

/// One stack's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackReport {
    /// The stack's name.
    pub stack: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Runs `riffle deploy`.
pub async fn main(args: DeployArgs) -> ExitCode {
    let outcome = async {
        let request = Request::from_args(args)?;
        let sdk = riffle_aws::sdk_config().await;
        let reports = deploy(&sdk, &request, &mut |line| println!("{line}")).await?;
        print!("{}", render_summary(&reports, request.plan));
        let failed = reports
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::PlanFailed(_)))
            .count();
        if failed > 0 {
            return Err(crate::OpsError::Usage(format!(
                "{failed} stacks could not be planned (reasons above)"
            )));
        }
        Ok::<_, crate::OpsError>(String::new())
    }
    .await;
    crate::report(outcome)
}

/// The export a change set failed for want of, when a stack planned earlier in this run
/// exports it: CloudFormation resolves `Fn::ImportValue` while computing a change set, so a
/// service cannot be planned against a platform that is itself only planned.
pub fn awaits_export(reason: &str, planned_exports: &BTreeSet<String>) -> Option<String> {
    let (_, rest) = reason.split_once("No export named ")?;
    let export = rest.split_whitespace().next()?;
    planned_exports.contains(export).then(|| export.to_owned())
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::NoChanges => "no changes".to_owned(),
        Outcome::Planned(c) => format!("{} changes", c.len()),
        Outcome::Awaits(export) => {
            format!("cannot be planned before {export} exists: deploy the stacks above first")
        }
        Outcome::PlanFailed(reason) => format!("change set failed: {reason}"),
        Outcome::Deployed { status, changes } => format!("{status} ({} changes)", changes.len()),
    }
}

/// The closing summary, one line per stack.
pub fn render_summary(reports: &[StackReport], plan: bool) -> String {
    let mut out = String::from(if plan {
        "plan (nothing was changed):\n"
    } else {
        "deployed:\n"
    });
    for r in reports {
        out.push_str(&format!("  {:<36} {}\n", r.stack, outcome_text(&r.outcome)));
    }
    out
}

/// Deploys (or plans) the requested stacks in order, printing progress through `out`. A deploy
/// stops at the first stack that fails; a plan goes on and reports each stack's outcome.
///
/// # Errors
/// No region or credentials, a bad request (unknown stack, `--param` or template), an AWS call
/// failing, a change set or stack operation failing, a timeout, or the operator declining.
pub async fn deploy(
    sdk: &SdkConfig,
    request: &Request,
    out: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<StackReport>, DeployError> {
    let all = target::catalogue(&request.infra)?;
    let selected = target::select(&all, &request.stacks)?;
    let mut infos = Vec::with_capacity(selected.len());
    for t in &selected {
        infos.push(TemplateInfo::load(&t.template)?);
    }
    let declared: Vec<_> = infos.iter().map(|i| &i.parameters).collect();
    if let Some(key) = params::undeclared(&request.params, &declared) {
        return Err(DeployError::UnknownParam {
            key: key.to_owned(),
        });
    }
    // The platform first, whatever the services' imports say: they all read its exports.
    let (platform, services): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .zip(infos)
        .partition(|(t, _)| t.name == target::PLATFORM);
    let services = {
        let refs: Vec<_> = services.iter().map(|(t, i)| (t.clone(), i)).collect();
        let order = target::deploy_order(&refs, |t: &Target| t.name.clone())?;
        order
            .into_iter()
            .filter_map(|t| services.iter().find(|(s, _)| s.name == t.name).cloned())
            .collect::<Vec<_>>()
    };

    // Checked before the first stack changes: a missing zip found after the platform was
    // updated would leave the environment half deployed for nothing.
    if !request.plan {
        for (t, info) in &services {
            if takes_code(info, request) {
                code_ready(request, &t.name)?;
            }
        }
    }
    if request.code_bucket.is_none()
        && let Some((t, info)) = platform
            .iter()
            .chain(&services)
            .find(|(_, i)| i.body.len() > TEMPLATE_BODY_MAX)
    {
        return Err(DeployError::TemplateTooLarge {
            file: t.template.clone(),
            size: info.body.len(),
            limit: TEMPLATE_BODY_MAX,
        });
    }

    preflight(sdk).await?;
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let s3 = riffle_aws::s3_client(sdk);
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let ctx = Context {
        request,
        cfn: &cfn,
        s3: &s3,
        region: &region,
    };
    let mut reports = Vec::new();
    // Exports of the stacks planned so far (or waiting themselves): a later stack importing
    // one cannot be planned until they are deployed, which is expected rather than a failure.
    let mut planned_exports = BTreeSet::new();
    for (target, info) in platform.iter().chain(&services) {
        let report = ctx
            .deploy_stack(target, info, &planned_exports, out)
            .await?;
        if matches!(report.outcome, Outcome::Planned(_) | Outcome::Awaits(_)) {
            // Exports are read as written (`riffle-${Env}-KeyArn`); CloudFormation's reasons
            // name them resolved.
            planned_exports.extend(info.exports.iter().map(|e| request.env.resolve(e)));
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Whether the deploy supplies this stack's code (it declares `CodeS3Key` and no `--param`
/// sets it).
fn takes_code(info: &TemplateInfo, request: &Request) -> bool {
    info.parameters.contains_key("CodeS3Key") && !request.params.contains_key("CodeS3Key")
}

/// A service's code can be deployed: there is a bucket and a zip.
fn code_ready(request: &Request, service: &str) -> Result<(), DeployError> {
    if request.code_bucket.is_none() && !request.params.contains_key("CodeS3Bucket") {
        return Err(DeployError::NoCodeBucket {
            stack: request.env.stack_name(service),
        });
    }
    let path = code::zip_path(&request.root, service);
    if !path.is_file() {
        return Err(DeployError::ZipMissing {
            service: service.to_owned(),
            path,
        });
    }
    Ok(())
}

/// Fails early, with the fix, when no AWS call could succeed.
async fn preflight(sdk: &SdkConfig) -> Result<(), DeployError> {
    if sdk.region().is_none() {
        return Err(DeployError::NoRegion);
    }
    let Some(provider) = sdk.credentials_provider() else {
        return Err(DeployError::NoCredentials(
            "no credentials provider configured".into(),
        ));
    };
    provider
        .provide_credentials()
        .await
        .map_err(|e| DeployError::NoCredentials(DisplayErrorContext(&e).to_string()))?;
    Ok(())
}

/// An AWS failure with its operation and subject: the service's code and message when it
/// answered, else the SDK's chain of causes (no connection, timeout, ...).
pub(crate) fn aws_error<E, R>(
    operation: &'static str,
    stack: &str,
    e: SdkError<E, R>,
) -> DeployError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let message = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(&e).to_string(),
    };
    DeployError::Aws {
        operation,
        stack: stack.to_owned(),
        message,
    }
}

struct Context<'a> {
    request: &'a Request,
    cfn: &'a aws_sdk_cloudformation::Client,
    s3: &'a aws_sdk_s3::Client,
    region: &'a str,
}

impl Context<'_> {
    async fn deploy_stack(
        &self,
        target: &Target,
        info: &TemplateInfo,
        planned_exports: &BTreeSet<String>,
        out: &mut (dyn FnMut(&str) + Send),
    ) -> Result<StackReport, DeployError> {
        let req = self.request;
        let name = req.env.stack_name(&target.name);
        let stack = Stack {
            cfn: self.cfn,
            name: &name,
        };
        out(&format!("== {name} ({})", target.template.display()));
        let existing = stack.existing().await?;
        let previous = match &existing {
            Existing::Blocked { status, advice } => {
                return Err(DeployError::StackBlocked {
                    stack: name.clone(),
                    status: status.clone(),
                    advice: advice.clone(),
                });
            }
            Existing::Ready { params } => Some(params),
            Existing::Absent | Existing::Review => None,
        };

        let mut derived = BTreeMap::new();
        derived.insert(
            "Env".to_owned(),
            ParamValue::Value(req.env.as_str().to_owned()),
        );
        if takes_code(info, req) {
            derived.extend(self.code(target, &name, &existing, out).await?);
        }
        let params = merge(ParamSources {
            stack: &name,
            declared: &info.parameters,
            explicit: &req.params,
            derived: &derived,
            previous,
        })?;
        if !params.is_empty() {
            out(&format!("parameters: {}", render_params(&params)));
        }
        let template = self.template_source(target, &name, info).await?;

        let change_set = change_set_name(SystemTime::now());
        let new = existing.is_new();
        // Only a stack this run creates is deleted with its change set; a REVIEW_IN_PROGRESS
        // one found here may hold someone else's change sets.
        let created_stack = existing == Existing::Absent;
        let created = stack
            .create_change_set(&change_set, new, &template, &params)
            .await?;
        // A refused CreateChangeSet made no change set to clean up.
        let made_change_set = created == Created::ChangeSet;
        let settled = match created {
            Created::NoChanges => Settled::NoChanges,
            Created::Refused(reason) => Settled::Failed(reason),
            Created::ChangeSet => {
                stack
                    .wait_change_set(&change_set, req.changeset_timeout, req.poll)
                    .await?
            }
        };
        let changes = match settled {
            Settled::Ready(changes) => changes,
            Settled::NoChanges => {
                // A FAILED change set stays listed on the stack until deleted.
                if made_change_set {
                    self.discard(&stack, &change_set, created_stack).await;
                }
                out("no changes");
                return Ok(StackReport {
                    stack: name,
                    outcome: Outcome::NoChanges,
                });
            }
            Settled::Failed(reason) => {
                if made_change_set {
                    self.discard(&stack, &change_set, created_stack).await;
                }
                // A plan goes on to the next stack: the operator wants the whole picture.
                if req.plan {
                    let outcome = match awaits_export(&reason, planned_exports) {
                        Some(export) => Outcome::Awaits(export),
                        None => Outcome::PlanFailed(reason),
                    };
                    out(&outcome_text(&outcome));
                    return Ok(StackReport {
                        stack: name,
                        outcome,
                    });
                }
                return Err(DeployError::ChangeSetFailed {
                    stack: name,
                    change_set,
                    reason,
                });
            }
        };
        out(&format!(
            "change set {change_set} ({}):",
            if new { "create" } else { "update" }
        ));
        out(render_changes(&changes).trim_end());

        if req.plan {
            self.discard(&stack, &change_set, created_stack).await;
            return Ok(StackReport {
                stack: name,
                outcome: Outcome::Planned(changes),
            });
        }
        if req.approval == Approval::Ask && !confirm(&name, &change_set).await {
            self.discard(&stack, &change_set, created_stack).await;
            return Err(DeployError::Declined(name));
        }
        let status = self.execute(&stack, &change_set, out).await?;
        Ok(StackReport {
            stack: name,
            outcome: Outcome::Deployed { status, changes },
        })
    }

    /// The code parameters of a service stack, uploading the zip first unless planning.
    async fn code(
        &self,
        target: &Target,
        stack: &str,
        existing: &Existing,
        out: &mut (dyn FnMut(&str) + Send),
    ) -> Result<BTreeMap<String, ParamValue>, DeployError> {
        let req = self.request;
        let zip_path = code::zip_path(&req.root, &target.name);
        let zip = code::read_zip(&zip_path)?;
        let sha = zip.as_deref().map(code::sha256_hex);
        let bucket = req
            .code_bucket
            .as_deref()
            .or(req.params.get("CodeS3Bucket").map(String::as_str));
        let plan = code_params(CodeInput {
            service: &target.name,
            stack,
            bucket,
            zip_sha256: sha.as_deref(),
            zip_path: &zip_path,
            exists: matches!(existing, Existing::Ready { .. }),
            plan: req.plan,
        })?;
        if let Some(note) = &plan.note {
            out(&format!("note: {note}"));
        }
        if let (Some((bucket, key)), Some(bytes)) = (&plan.upload, zip) {
            let uploaded = code::upload(self.s3, bucket, key, bytes).await?;
            out(&format!(
                "code: s3://{bucket}/{key} ({})",
                if uploaded {
                    "uploaded"
                } else {
                    "already there"
                }
            ));
        }
        Ok(plan.params)
    }

    /// Inline, or through the code bucket when over CloudFormation's inline limit.
    async fn template_source(
        &self,
        target: &Target,
        stack: &str,
        info: &TemplateInfo,
    ) -> Result<TemplateSource, DeployError> {
        if info.body.len() <= TEMPLATE_BODY_MAX {
            return Ok(TemplateSource::Body(info.body.clone()));
        }
        let Some(bucket) = &self.request.code_bucket else {
            return Err(DeployError::TemplateTooLarge {
                file: target.template.clone(),
                size: info.body.len(),
                limit: TEMPLATE_BODY_MAX,
            });
        };
        let key = format!(
            "templates/{stack}/{}.yaml",
            code::sha256_hex(info.body.as_bytes())
        );
        code::upload(self.s3, bucket, &key, info.body.clone().into_bytes()).await?;
        Ok(TemplateSource::Url(format!(
            "https://{bucket}.s3.{}.amazonaws.com/{key}",
            self.region
        )))
    }

    /// Deletes a change set that will not be executed, and the empty stack its CREATE made.
    /// Best effort: what is left over is harmless and visible in the console.
    async fn discard(&self, stack: &Stack<'_>, change_set: &str, created_stack: bool) {
        if created_stack {
            // Deleting the REVIEW_IN_PROGRESS stack deletes its change sets too.
            let _ = stack.delete().await;
        } else {
            let _ = stack.delete_change_set(change_set).await;
        }
    }

    /// Executes and waits, printing events as they arrive; the final status.
    async fn execute(
        &self,
        stack: &Stack<'_>,
        change_set: &str,
        out: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, DeployError> {
        let req = self.request;
        let mut log = EventLog::default();
        log.mark_seen(&stack.recent_events(&log).await?);
        if let Err(e) = stack.execute(change_set).await {
            // Some failures surface here rather than as events (emulators validate
            // resources synchronously); print whatever events there are all the same.
            for e in log.take_new(&stack.recent_events(&log).await.unwrap_or_default()) {
                out(&e.line());
            }
            if let Ok(Some((status, _, _))) = stack.describe().await {
                out(&format!("{}: now {status}", stack.name));
            }
            return Err(e);
        }
        out(&format!("executing {change_set} on {}", stack.name));
        let deadline = Instant::now() + req.timeout;
        loop {
            for e in log.take_new(&stack.recent_events(&log).await?) {
                out(&e.line());
            }
            let (status, reason, _) = stack.describe().await?.ok_or_else(|| DeployError::Aws {
                operation: "DescribeStacks",
                stack: stack.name.to_owned(),
                message: "the stack disappeared while deploying".into(),
            })?;
            match phase(&status) {
                Phase::InProgress => {}
                Phase::Succeeded => {
                    out(&format!("{}: {status}", stack.name));
                    return Ok(status);
                }
                Phase::Failed => {
                    // Events that landed between the last listing and the status.
                    for e in log.take_new(&stack.recent_events(&log).await?) {
                        out(&e.line());
                    }
                    return Err(DeployError::StackFailed {
                        stack: stack.name.to_owned(),
                        status,
                        reason,
                        failed: log.failures(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Timeout {
                    stack: stack.name.to_owned(),
                    what: "the stack operation",
                    waited: req.timeout,
                    flag: "--timeout",
                });
            }
            tokio::time::sleep(req.poll).await;
        }
    }
}

/// Asks on the terminal; anything but y/yes is no.
async fn confirm(stack: &str, change_set: &str) -> bool {
    let question = format!("execute {change_set} on {stack}? [y/N] ");
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        print!("{question}");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok()
            && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_export_of_a_planned_stack_is_waited_for_not_failed() {
        // The platform's export as its template writes it, resolved for the environment as
        // CloudFormation names it in its reason.
        let env = EnvName::parse("dev").unwrap();
        let planned = BTreeSet::from([env.resolve("riffle-${Env}-KeyArn")]);
        assert_eq!(
            awaits_export("No export named riffle-dev-KeyArn found.", &planned),
            Some("riffle-dev-KeyArn".into())
        );
        assert_eq!(
            awaits_export("FAILED: No export named riffle-dev-KeyArn found", &planned),
            Some("riffle-dev-KeyArn".into())
        );
        // Exported by nobody in this run: a real failure (a typo, a stack never deployed,
        // another environment's export).
        assert_eq!(
            awaits_export("No export named riffle-dev-KyeArn found.", &planned),
            None
        );
        assert_eq!(
            awaits_export("No export named riffle-staging-KeyArn found.", &planned),
            None
        );
        assert_eq!(awaits_export("Template format error", &planned), None);
    }

    #[test]
    fn the_summary_says_what_each_stack_did() {
        let add = Change {
            action: "Add".into(),
            logical_id: "Queue".into(),
            resource_type: "AWS::SQS::Queue".into(),
            replacement: None,
        };
        let reports = [
            StackReport {
                stack: "riffle-dev-platform".into(),
                outcome: Outcome::NoChanges,
            },
            StackReport {
                stack: "riffle-dev-validator".into(),
                outcome: Outcome::Deployed {
                    status: "UPDATE_COMPLETE".into(),
                    changes: vec![add],
                },
            },
        ];
        assert_eq!(
            render_summary(&reports, false),
            "deployed:
  riffle-dev-platform                  no changes
  riffle-dev-validator                 UPDATE_COMPLETE (1 changes)
"
        );
    }
}
