//! X-Ray's API as the source of segment documents, where no local collector kept them (on
//! AWS; locally, moto's X-Ray when the collector forwards to it): one event's segments
//! ([`events`]: GetTraceSummaries filtered on its `event_id` annotation, then BatchGetTraces),
//! or every trace of a window ([`recent`], for the slowest events). BatchGetTraces returns
//! the documents the stages sent, so they become the same [`Segment`]s the collector's file
//! gives ([`store::parse`]) and [`store`]'s path reader works on either.
//!
//! X-Ray indexes a trace a little while after its segments arrive (up to a minute or so), by
//! the trace's start (the time in its id), and keeps it 30 days.

use std::collections::HashSet;

use aws_sdk_xray::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_xray::operation::get_trace_summaries::GetTraceSummariesError;
use aws_sdk_xray::primitives::DateTime;

pub use aws_sdk_xray::Client;

pub use crate::window::Window;

use crate::keys;
use crate::store::{self, Segment, TraceError};

/// BatchGetTraces takes at most this many trace ids a call.
pub const BATCH_GET_TRACES_MAX_IDS: usize = 5;
/// The most traces one read fetches. GetTraceSummaries pages from the end of the window
/// backwards, so a capped read holds the window's most recent traces.
pub const MAX_TRACES: usize = 1_000;
/// GetTraceSummaries' longest FilterExpression.
const FILTER_EXPRESSION_MAX: usize = 2_000;
/// BatchGetTraces calls in flight at once: a capped read is 200 calls, which one after the
/// other take seconds; a few at once stay well inside X-Ray's request rate.
const BATCH_GET_TRACES_CONCURRENCY: usize = 4;
/// The error code moto's X-Ray answers every filter expression with ("Not implemented yet").
const FILTER_REFUSED_CODE: &str = "InternalFailure";

/// `annotation.event_id = "<id>"`, the id's quotes and backslashes escaped.
///
/// # Errors
/// [`TraceError::BadEventId`]: an empty id, control characters (a filter string cannot carry
/// them), or an id too long for a filter expression.
pub fn filter_expression(event_id: &str) -> Result<String, TraceError> {
    let bad = |why| {
        Err(TraceError::BadEventId {
            event_id: event_id.to_owned(),
            why,
        })
    };
    if event_id.is_empty() {
        return bad("it is empty");
    }
    if event_id.chars().any(char::is_control) {
        return bad("it holds control characters, which a filter expression cannot carry");
    }
    let escaped = event_id.replace('\\', "\\\\").replace('"', "\\\"");
    let expression = format!("annotation.{} = \"{escaped}\"", keys::EVENT_ID);
    if expression.len() > FILTER_EXPRESSION_MAX {
        return bad("it is longer than an X-Ray filter expression may be");
    }
    Ok(expression)
}

/// The segments of `event_id`'s traces that started in `window`. Only segments annotated
/// with the event are kept, whatever the service's filter did.
///
/// # Errors
/// [`TraceError::BadEventId`], [`TraceError::NotInWindow`], or [`TraceError::Api`].
pub async fn events(
    client: &Client,
    event_id: &str,
    window: Window,
) -> Result<Vec<Segment>, TraceError> {
    let filter = filter_expression(event_id)?;
    let (found, scanned) = match trace_ids(client, window, Some(&filter)).await {
        Ok(found) => (found, None),
        // moto's X-Ray implements no filter expression and fails every one: read the window
        // unfiltered instead, and match the annotation below as for any reply. On AWS this
        // happens only after the SDK's retries of a real internal failure.
        Err(e) if e.code() == Some(FILTER_REFUSED_CODE) => {
            let all = trace_ids(client, window, None).await.map_err(summaries)?;
            let n = all.ids.len();
            (all, Some(n))
        }
        Err(e) => return Err(summaries(e)),
    };
    let mine: Vec<Segment> = segments(client, &found.ids)
        .await?
        .into_iter()
        .filter(|s| s.annotation(keys::EVENT_ID).as_deref() == Some(event_id))
        .collect();
    if mine.is_empty() {
        return Err(TraceError::NotInWindow {
            event_id: event_id.to_owned(),
            window: window.to_string(),
            scanned,
            capped: found.capped,
        });
    }
    Ok(mine)
}

/// What [`recent`] read.
#[derive(Debug, Clone)]
pub struct Recent {
    /// Every segment of the traces read.
    pub segments: Vec<Segment>,
    /// How many traces were read.
    pub traces: usize,
    /// Whether the read stopped at [`MAX_TRACES`]: the window holds older traces not read.
    pub capped: bool,
}

/// Every trace that started in `window`, the most recent [`MAX_TRACES`] of them.
///
/// # Errors
/// [`TraceError::Api`].
pub async fn recent(client: &Client, window: Window) -> Result<Recent, TraceError> {
    let found = trace_ids(client, window, None).await.map_err(summaries)?;
    Ok(Recent {
        segments: segments(client, &found.ids).await?,
        traces: found.ids.len(),
        capped: found.capped,
    })
}

/// Trace ids from GetTraceSummaries, at most [`MAX_TRACES`].
#[derive(Debug, Default)]
struct TraceIds {
    ids: Vec<String>,
    capped: bool,
}

async fn trace_ids(
    client: &Client,
    window: Window,
    filter: Option<&str>,
) -> Result<TraceIds, SdkError<GetTraceSummariesError>> {
    let mut pages = client
        .get_trace_summaries()
        // Whole seconds, widened outwards: moto drops the fractions, which would leave out
        // a trace that ended in the window's last second.
        .start_time(DateTime::from_secs(window.from_secs().floor() as i64))
        .end_time(DateTime::from_secs(window.to_secs().ceil() as i64))
        .set_filter_expression(filter.map(str::to_owned))
        .into_paginator()
        .send();
    let mut seen = HashSet::new();
    let mut found = TraceIds::default();
    while let Some(page) = pages.next().await {
        for id in page?.trace_summaries().iter().filter_map(|s| s.id()) {
            if found.ids.len() == MAX_TRACES {
                found.capped = true;
                return Ok(found);
            }
            if seen.insert(id.to_owned()) {
                found.ids.push(id.to_owned());
            }
        }
    }
    Ok(found)
}

fn summaries(e: SdkError<GetTraceSummariesError>) -> TraceError {
    TraceError::Api {
        operation: "GetTraceSummaries",
        source: Box::new(e),
    }
}

/// The documents of `ids`' traces, [`BATCH_GET_TRACES_MAX_IDS`] a call, a few calls at once.
async fn segments(client: &Client, ids: &[String]) -> Result<Vec<Segment>, TraceError> {
    let mut calls = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for chunk in ids.chunks(BATCH_GET_TRACES_MAX_IDS) {
        if calls.len() == BATCH_GET_TRACES_CONCURRENCY
            && let Some(done) = calls.join_next().await
        {
            out.extend(joined(done)?);
        }
        calls.spawn(batch_get(client.clone(), chunk.to_vec()));
    }
    while let Some(done) = calls.join_next().await {
        out.extend(joined(done)?);
    }
    Ok(out)
}

fn joined(
    done: Result<Result<Vec<Segment>, TraceError>, tokio::task::JoinError>,
) -> Result<Vec<Segment>, TraceError> {
    done.map_err(|e| TraceError::Api {
        operation: "BatchGetTraces",
        source: Box::new(e),
    })?
}

/// One BatchGetTraces call (and its next pages).
async fn batch_get(client: Client, ids: Vec<String>) -> Result<Vec<Segment>, TraceError> {
    let mut pages = client
        .batch_get_traces()
        .set_trace_ids(Some(ids))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| TraceError::Api {
            operation: "BatchGetTraces",
            source: Box::new(e),
        })?;
        let documents = page.traces().iter().flat_map(|t| t.segments());
        out.extend(
            documents
                .filter_map(|s| s.document())
                .filter_map(store::parse),
        );
    }
    Ok(out)
}
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn event_ids_are_quoted_escaped_or_refused() {
        assert_eq!(
            filter_expression("0192f0c2-7d1e-7b3a-9c4f-2b6d8e1a5f00").unwrap(),
            r#"annotation.event_id = "0192f0c2-7d1e-7b3a-9c4f-2b6d8e1a5f00""#
        );
        assert_eq!(
            filter_expression(r#"a"b\c"#).unwrap(),
            r#"annotation.event_id = "a\"b\\c""#
        );
        for bad in ["", "a\nb", "tab\there", &"x".repeat(FILTER_EXPRESSION_MAX)] {
            let e = filter_expression(bad).unwrap_err();
            assert!(matches!(e, TraceError::BadEventId { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_missing_event_names_its_window_and_the_indexing_delay() {
        let window = Window::resolve(
            None,
            None,
            Some(15),
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        let e = TraceError::NotInWindow {
            event_id: "e-9".into(),
            window: window.to_string(),
            scanned: Some(MAX_TRACES),
            capped: true,
        };
        let text = e.to_string();
        for part in [
            "event e-9",
            "2027-01-15T07:45:00Z to 2027-01-15T08:00:00Z",
            "not sampled",
            "up to a minute",
            "1000 most recent",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(e.retryable());
    }
}
