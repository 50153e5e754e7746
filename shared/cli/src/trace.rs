//! `riffle trace`: where one event went, stage by stage, from the X-Ray segment documents
//! its stages sent; or the slowest events of a recent span of time.
//!
//! Reads the documents the local X-Ray daemon kept (the local twin: `riffle-dev demo`
//! leaves them under `.riffle/demo/aws/xray/`). On AWS the same documents come from X-Ray
//! (GetTraceSummaries filtered on `annotation.event_id`, then BatchGetTraces); that reader
//! is not built yet, so `--store` must name a file of documents (one per line).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use riffle_trace::store::{self, TraceError};

/// `riffle trace`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["event_id", "slowest"])))]
pub struct TraceArgs {
    /// The event to follow (its envelope's event id).
    pub event_id: Option<String>,
    /// Instead of one event: the N slowest complete events (put to last effect).
    #[arg(long, value_name = "N", conflicts_with = "event_id")]
    pub slowest: Option<usize>,
    /// With --slowest: only events whose first stage ran in the last this many minutes.
    #[arg(long, value_name = "MINUTES", requires = "slowest")]
    pub since: Option<u64>,
    /// The file of segment documents (default: the local demo's X-Ray daemon store).
    #[arg(long, env = "RIFFLE_TRACE_STORE")]
    pub store: Option<PathBuf>,
}

/// Runs `riffle trace`.
pub fn main(args: &TraceArgs) -> ExitCode {
    crate::report(run(args))
}

/// The text `riffle trace` prints.
///
/// # Errors
/// The store cannot be read, or the event is in no trace.
pub fn run(args: &TraceArgs) -> Result<String, TraceError> {
    let path = match &args.store {
        Some(path) => path.clone(),
        None => default_store(),
    };
    let segments = store::read(&path)?;
    if let Some(n) = args.slowest {
        // Events whose first stage ran in the window, their whole paths.
        let from = args.since.map_or(f64::MIN, |minutes| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
                - minutes as f64 * 60.0
        });
        let paths = store::slowest_since(&segments, n, from);
        if paths.is_empty() {
            return Ok(format!(
                "no complete traces in {} (events traced, but none through all of its stages yet)\n",
                path.display()
            ));
        }
        return Ok(paths
            .iter()
            .map(store::render)
            .collect::<Vec<_>>()
            .join("\n"));
    }
    let event_id = args.event_id.as_deref().unwrap_or_default();
    Ok(store::render(&store::path(&segments, event_id)?))
}

/// Where `riffle-dev demo`'s X-Ray daemon keeps its documents.
fn default_store() -> PathBuf {
    let root = riffle_plan::project_root().unwrap_or_else(|_| PathBuf::from("."));
    root.join(".riffle/demo/aws/xray")
        .join(riffle_trace::collector::SEGMENTS_FILE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_and_missing_stores_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("riffle-trace-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("segments.jsonl");
        std::fs::write(
            &store,
            concat!(
                r#"{"name":"riffle-validator","id":"aa7bff8f694a84b0","trace_id":"1-6b1563e3-f7006f55a1b31f307f30865d","start_time":10.0,"end_time":10.2,"annotations":{"event_id":"e-1","stage":"validator","outcome":"rejected","reason":"pattern_mismatch"}}"#,
                "\n",
                "half a line that a writer had not finished",
            ),
        )
        .unwrap();
        let args = |event: &str| TraceArgs {
            event_id: Some(event.to_owned()),
            slowest: None,
            since: None,
            store: Some(store.clone()),
        };
        let text = run(&args("e-1")).unwrap();
        assert!(text.contains("rejected (pattern_mismatch)"), "{text}");
        let unknown = run(&args("e-2")).unwrap_err().to_string();
        assert!(unknown.contains("no trace names event e-2"), "{unknown}");
        let missing = run(&TraceArgs {
            store: Some(dir.join("none.jsonl")),
            ..args("e-1")
        })
        .unwrap_err()
        .to_string();
        assert!(missing.contains("cannot read"), "{missing}");
        let slowest = run(&TraceArgs {
            event_id: None,
            slowest: Some(3),
            ..args("e-1")
        })
        .unwrap();
        assert!(slowest.contains("e-1"), "{slowest}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
