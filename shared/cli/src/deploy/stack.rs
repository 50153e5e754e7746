//! Change sets and stacks, the CloudFormation side: every call `riffle deploy` makes, each
//! error naming its operation and stack. The decisions are in [`super::changeset`] and
//! [`super::events`].

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{Capability, ChangeSetType, Parameter};
use tokio::time::Instant;

use super::DeployError;
use super::aws_error;
use super::changeset::{Change, ChangeSetState, Settled, change_set_state, is_no_changes};
use super::events::{Event, EventLog, Existing, existing};
use super::params::ParamValue;

/// Pages of events read per poll at most: a poll every few seconds sees a few events, and a
/// stack with thousands of old ones must not be read back to its birth.
const EVENT_PAGES_MAX: usize = 10;

/// How the template reaches CloudFormation.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    /// Inline (`TemplateBody`, up to 51,200 bytes).
    Body(String),
    /// From S3 (`TemplateURL`), for larger templates.
    Url(String),
}

/// What CreateChangeSet said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The change set is being computed.
    ChangeSet,
    /// Refused outright because nothing changes (some emulators do this instead of a FAILED
    /// change set).
    NoChanges,
    /// Refused outright for a reason a FAILED change set would give (a missing import).
    Refused(String),
}

/// One stack of one environment.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    /// The client.
    pub cfn: &'a Client,
    /// The stack's name.
    pub name: &'a str,
}

/// The stack's status, status reason and parameter names, or `None` when there is no stack.
pub type Described = Option<(String, Option<String>, BTreeSet<String>)>;

impl Stack<'_> {
    /// DescribeStacks: the stack as it is.
    ///
    /// # Errors
    /// The call failed for another reason than "does not exist".
    pub async fn describe(&self) -> Result<Described, DeployError> {
        let out = match self
            .cfn
            .describe_stacks()
            .stack_name(self.name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.code() == Some("ValidationError")
                    && e.message().is_some_and(|m| m.contains("does not exist")) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(aws_error("DescribeStacks", self.name, e)),
        };
        let Some(stack) = out.stacks().first() else {
            return Ok(None);
        };
        let status = stack
            .stack_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let params = stack
            .parameters()
            .iter()
            .filter_map(|p| p.parameter_key().map(str::to_owned))
            .collect();
        Ok(Some((
            status,
            stack.stack_status_reason().map(str::to_owned),
            params,
        )))
    }

    /// The stack as the deploy sees it.
    ///
    /// # Errors
    /// As [`Stack::describe`].
    pub async fn existing(&self) -> Result<Existing, DeployError> {
        Ok(match self.describe().await? {
            None => Existing::Absent,
            Some((status, _, params)) => existing(self.name, &status, params),
        })
    }

    /// CreateChangeSet.
    ///
    /// # Errors
    /// Refused for another reason than "no changes".
    pub async fn create_change_set(
        &self,
        change_set: &str,
        new: bool,
        template: &TemplateSource,
        params: &[(String, ParamValue)],
    ) -> Result<Created, DeployError> {
        let mut call = self
            .cfn
            .create_change_set()
            .stack_name(self.name)
            .change_set_name(change_set)
            .change_set_type(if new {
                ChangeSetType::Create
            } else {
                ChangeSetType::Update
            })
            // The service stacks create IAM roles; NAMED_IAM covers named and unnamed ones, so a
            // template that starts naming its roles needs no new flag.
            .capabilities(Capability::CapabilityNamedIam)
            .description("riffle deploy");
        call = match template {
            TemplateSource::Body(body) => call.template_body(body),
            TemplateSource::Url(url) => call.template_url(url),
        };
        for (key, value) in params {
            let p = Parameter::builder().parameter_key(key);
            let p = match value {
                ParamValue::Value(v) => p.parameter_value(v),
                ParamValue::UsePrevious => p.use_previous_value(true),
            };
            call = call.parameters(p.build());
        }
        match call.send().await {
            Ok(_) => Ok(Created::ChangeSet),
            Err(e) if e.message().is_some_and(is_no_changes) => Ok(Created::NoChanges),
            // Said by the call rather than by a FAILED change set: the same for the caller.
            Err(e) if e.message().is_some_and(|m| m.contains("No export named")) => {
                Ok(Created::Refused(e.message().unwrap_or_default().to_owned()))
            }
            Err(e) => Err(aws_error("CreateChangeSet", self.name, e)),
        }
    }

    /// DescribeChangeSet until it is computed; when ready, with all its changes.
    ///
    /// # Errors
    /// A call failed, or it took longer than `timeout`.
    pub async fn wait_change_set(
        &self,
        change_set: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Settled, DeployError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut changes = Vec::new();
            let mut token: Option<String> = None;
            let state = loop {
                let out = self
                    .cfn
                    .describe_change_set()
                    .stack_name(self.name)
                    .change_set_name(change_set)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| aws_error("DescribeChangeSet", self.name, e))?;
                let status = out.status().map(|s| s.as_str()).unwrap_or_default();
                let state = change_set_state(status, out.status_reason());
                changes.extend(out.changes().iter().filter_map(Change::from_sdk));
                match (state, out.next_token()) {
                    (ChangeSetState::Ready, Some(next)) => token = Some(next.to_owned()),
                    (state, _) => break state,
                }
            };
            match state {
                ChangeSetState::Pending => {}
                ChangeSetState::Ready => return Ok(Settled::Ready(changes)),
                ChangeSetState::NoChanges => return Ok(Settled::NoChanges),
                ChangeSetState::Failed(reason) => return Ok(Settled::Failed(reason)),
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Timeout {
                    stack: self.name.to_owned(),
                    what: "computing the change set",
                    waited: timeout,
                    flag: "--changeset-timeout",
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// DeleteChangeSet.
    ///
    /// # Errors
    /// The call failed.
    pub async fn delete_change_set(&self, change_set: &str) -> Result<(), DeployError> {
        self.cfn
            .delete_change_set()
            .stack_name(self.name)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| aws_error("DeleteChangeSet", self.name, e))?;
        Ok(())
    }

    /// DeleteStack, for the empty REVIEW_IN_PROGRESS stack a plan's CREATE change set left.
    ///
    /// # Errors
    /// The call failed.
    pub async fn delete(&self) -> Result<(), DeployError> {
        self.cfn
            .delete_stack()
            .stack_name(self.name)
            .send()
            .await
            .map_err(|e| aws_error("DeleteStack", self.name, e))?;
        Ok(())
    }

    /// ExecuteChangeSet; a failed update rolls back (the default, said out loud here).
    ///
    /// # Errors
    /// The call failed.
    pub async fn execute(&self, change_set: &str) -> Result<(), DeployError> {
        self.cfn
            .execute_change_set()
            .stack_name(self.name)
            .change_set_name(change_set)
            .disable_rollback(false)
            .send()
            .await
            .map_err(|e| aws_error("ExecuteChangeSet", self.name, e))?;
        Ok(())
    }

    /// DescribeStackEvents, newest first, from the newest back to the first one `log` has seen.
    ///
    /// # Errors
    /// The call failed.
    pub async fn recent_events(&self, log: &EventLog) -> Result<Vec<Event>, DeployError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..EVENT_PAGES_MAX {
            let page = self
                .cfn
                .describe_stack_events()
                .stack_name(self.name)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| aws_error("DescribeStackEvents", self.name, e))?;
            let events: Vec<Event> = page.stack_events().iter().map(Event::from_sdk).collect();
            let reached_seen = events.iter().any(|e| log.has_seen(e));
            out.extend(events);
            match page.next_token() {
                Some(next) if !reached_seen => token = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }
}
