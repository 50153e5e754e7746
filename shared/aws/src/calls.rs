//! The AWS calls a batch makes, for the trace spans of its records (ADR 0013): each traced
//! record shows, under its stage's span, the PutRecords, DynamoDB, S3 and SQS calls its batch
//! made while the record was in hand, with their times and failures.
//!
//! A handler runs its batch inside [`recorded`] with a fresh [`CallLog`]; an interceptor on
//! every client this crate builds ([`CallRecorder`]) appends each call the task makes (SDK
//! retries included, as one call) to the log in scope. The log is a tokio task-local, so two
//! batches handled at once in one process (the local event source mapping reads several
//! shards) keep their calls apart; [`carried`] takes the log into a spawned task. With no
//! log in scope (tracing off), the interceptor does nothing but look.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// One call as the SDK made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The service (`DynamoDB`, `Kinesis`, `S3`, `SQS`).
    pub service: String,
    /// The operation (`PutRecords`, `GetItem`, ...).
    pub operation: String,
    /// When the call began.
    pub start: SystemTime,
    /// When it ended (after the SDK's own retries).
    pub end: SystemTime,
    /// How it failed, if it did (the kind only: an error's message may hold data).
    pub error: Option<String>,
    /// Calls DynamoDB refused because their condition did not hold: Riffle's optimistic
    /// writes ask for exactly that answer when another writer came first, so it is an
    /// outcome, not a failure.
    pub conditions_not_met: u32,
    /// Calls this stands for: 1, or more once [`CallLog::take_grouped`] folded a batch's
    /// calls of one operation together.
    pub count: u32,
}

/// The calls of one batch. Clones share the calls.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<Call>>>);

impl CallLog {
    /// An empty log.
    pub fn new() -> Self {
        CallLog::default()
    }

    /// Every call so far, oldest first; the log is empty after.
    pub fn take(&self) -> Vec<Call> {
        let mut calls = std::mem::take(&mut *lock(&self.0));
        calls.sort_by_key(|c| c.start);
        calls
    }

    /// Every call so far folded per (service, operation), in the order each first began:
    /// from the first one's start to the last one's end, failed if any failed, with how many
    /// they were. A batch writes one view item or archive object per call, dozens of them,
    /// and each traced record gets every call made while it was in hand: folded, a record
    /// carries a handful of child spans, not a batch's worth. The log is empty after.
    pub fn take_grouped(&self) -> Vec<Call> {
        let mut out: Vec<Call> = Vec::new();
        for call in self.take() {
            match out
                .iter_mut()
                .find(|c| c.service == call.service && c.operation == call.operation)
            {
                Some(group) => {
                    group.end = group.end.max(call.end);
                    group.count += call.count;
                    group.conditions_not_met += call.conditions_not_met;
                    if group.error.is_none() {
                        group.error = call.error;
                    }
                }
                None => out.push(call),
            }
        }
        out
    }

    fn push(&self, call: Call) {
        lock(&self.0).push(call);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-push of a plain list.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

tokio::task_local! {
    static LOG: CallLog;
}

/// Runs `future` with `log` (if any) receiving the AWS calls it makes.
pub async fn recorded<F: Future>(log: Option<CallLog>, future: F) -> F::Output {
    match log {
        Some(log) => LOG.scope(log, future).await,
        None => future.await,
    }
}

/// The log in scope for the current task, if any.
pub fn current() -> Option<CallLog> {
    LOG.try_with(CallLog::clone).ok()
}

/// `future` with the current task's log in scope, for a task it is spawned into.
pub fn carried<F: Future>(future: F) -> impl Future<Output = F::Output> {
    recorded(current(), future)
}

/// Start of a call, kept in its config bag between the interceptor's hooks.
#[derive(Debug, Clone, Copy)]
struct Started(SystemTime);

impl aws_smithy_types::config_bag::Storable for Started {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// The interceptor on every client this crate builds: appends each call to the log in scope.
#[derive(Debug, Default)]
pub(crate) struct CallRecorder;

impl Intercept for CallRecorder {
    fn name(&self) -> &'static str {
        "RiffleCallRecorder"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if LOG.try_with(|_| ()).is_ok() {
            cfg.interceptor_state()
                .store_put(Started(SystemTime::now()));
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Started(start)) = cfg.load::<Started>().copied() else {
            return Ok(());
        };
        let (service, operation) = cfg.load::<Metadata>().map_or_else(
            || ("AWS".to_owned(), "call".to_owned()),
            |m| (m.service().to_owned(), m.name().to_owned()),
        );
        let refused = context
            .output_or_error()
            .and_then(|r| r.err())
            .and_then(|e| e.as_operation_error())
            .is_some_and(condition_not_met);
        // The kind of failure only: an operation error's message may hold data.
        let error = match context.output_or_error() {
            _ if refused => None,
            Some(Err(e)) if e.is_operation_error() => Some("service error"),
            Some(Err(e)) if e.is_timeout_error() => Some("timeout"),
            Some(Err(e)) if e.is_connector_error() => Some("connection failed"),
            Some(Err(e)) if e.is_response_error() => Some("unreadable response"),
            Some(Err(_)) => Some("failed"),
            _ => None,
        }
        .map(str::to_owned);
        let call = Call {
            service,
            operation,
            start,
            end: SystemTime::now(),
            error,
            conditions_not_met: u32::from(refused),
            count: 1,
        };
        let _ = LOG.try_with(|log| log.push(call));
        Ok(())
    }
}

/// Whether `error` is DynamoDB refusing a conditional write because its condition did not
/// hold (the operations Riffle writes conditionally).
fn condition_not_met(error: &aws_smithy_runtime_api::client::interceptors::context::Error) -> bool {
    use aws_sdk_dynamodb::operation::{
        delete_item::DeleteItemError, put_item::PutItemError, update_item::UpdateItemError,
    };
    error
        .downcast_ref::<PutItemError>()
        .is_some_and(PutItemError::is_conditional_check_failed_exception)
        || error
            .downcast_ref::<UpdateItemError>()
            .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
        || error
            .downcast_ref::<DeleteItemError>()
            .is_some_and(DeleteItemError::is_conditional_check_failed_exception)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_batch_of_calls_folds_per_operation() {
        let t = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let call = |operation: &str, start: u64, end: u64, error: Option<&str>| Call {
            service: "DynamoDB".into(),
            operation: operation.into(),
            start: t(start),
            end: t(end),
            error: error.map(str::to_owned),
            conditions_not_met: 0,
            count: 1,
        };
        let log = CallLog::new();
        log.push(Call {
            conditions_not_met: 1,
            ..call("PutItem", 20, 25, None)
        });
        log.push(call("GetItem", 0, 3, None));
        log.push(call("PutItem", 21, 40, Some("timeout")));
        log.push(call("BatchGetItem", 10, 12, None));
        log.push(call("PutItem", 22, 30, None));
        let grouped = log.take_grouped();
        let summary: Vec<_> = grouped
            .iter()
            .map(|c| {
                (
                    c.operation.as_str(),
                    c.start,
                    c.end,
                    c.count,
                    c.error.as_deref(),
                    c.conditions_not_met,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("GetItem", t(0), t(3), 1, None, 0),
                ("BatchGetItem", t(10), t(12), 1, None, 0),
                ("PutItem", t(20), t(40), 3, Some("timeout"), 1),
            ]
        );
        assert!(log.take().is_empty());
    }

    #[tokio::test]
    async fn the_log_follows_the_batch_into_its_tasks_and_no_further() {
        let log = CallLog::new();
        let seen = recorded(Some(log.clone()), async {
            let inner = tokio::spawn(carried(async { current().is_some() }));
            let bare = tokio::spawn(async { current().is_some() });
            (inner.await.unwrap(), bare.await.unwrap())
        })
        .await;
        assert_eq!(seen, (true, false));
        assert!(current().is_none());
    }
}
