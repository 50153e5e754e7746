//! `riffle trace`: where one event went, stage by stage, from the X-Ray segment documents
//! its stages sent; or the slowest events of a recent span of time.
//!
//! Two sources of documents (`--source`). `file`: those the local X-Ray daemon kept, one per
//! line (`riffle-dev demo` leaves them under `.riffle/demo/aws/xray/`; `--store` names another
//! file). `xray`: X-Ray's API ([`riffle_trace::xray`]: GetTraceSummaries filtered on the
//! event's `event_id` annotation, then BatchGetTraces) over a window of trace start times
//! (`--from`/`--to`, or `--minutes`; the last hour by default), with the SDK configuration
//! from the environment, as every operator command: X-Ray on AWS, or moto's X-Ray for a local
//! twin whose daemon forwards to it (`Emulators::forward_traces`). Without `--source`: the
//! file when `--store` is given or the local store exists, else X-Ray.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use riffle_trace::store::{self, EventPath, TraceError};
use riffle_trace::xray::{self, Window};

/// Where `riffle trace` reads segment documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// The local X-Ray daemon's file (--store).
    File,
    /// X-Ray's API, over a window of time.
    Xray,
}

/// `riffle trace`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["event_id", "slowest"])))]
pub struct TraceArgs {
    /// The event to follow (its envelope's event id).
    pub event_id: Option<String>,
    /// Instead of one event: the N slowest complete events (put to last effect).
    #[arg(long, value_name = "N", conflicts_with = "event_id")]
    pub slowest: Option<usize>,
    /// With --slowest: only events whose first stage ran in the last this many minutes
    /// (with --source xray and no --from/--minutes, also the window read).
    #[arg(long, value_name = "MINUTES", requires = "slowest")]
    pub since: Option<u64>,
    /// Where the documents come from [default: file when --store is given or the local
    /// store exists, else xray].
    #[arg(long, value_enum)]
    pub source: Option<Source>,
    /// The file of segment documents (default: the local demo's X-Ray daemon store).
    #[arg(long, env = "RIFFLE_TRACE_STORE")]
    pub store: Option<PathBuf>,
    /// With --source xray: the window's start, RFC 3339 (2026-12-01T10:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "minutes")]
    pub from: Option<String>,
    /// With --source xray: the window's end, RFC 3339 [default: now].
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// With --source xray: the window's length before its end [default: 60].
    #[arg(long, value_name = "N")]
    pub minutes: Option<u64>,
}

/// Runs `riffle trace`.
pub async fn main(args: &TraceArgs) -> ExitCode {
    crate::report(run(args).await)
}

/// The text `riffle trace` prints.
///
/// # Errors
/// The documents cannot be read, the window or the id is unusable, or the event is in no
/// trace.
pub async fn run(args: &TraceArgs) -> Result<String, TraceError> {
    match source(args, default_store().exists()) {
        Source::File => {
            let path = args.store.clone().unwrap_or_else(default_store);
            from_file(args, &path)
        }
        Source::Xray => {
            let window = window(args, SystemTime::now())?;
            let sdk = riffle_aws::sdk_config().await;
            from_xray(args, &xray::Client::new(&sdk), window).await
        }
    }
}

/// The source asked for; else the file when one is named or the local store exists (the
/// local twin), else X-Ray (a deployment).
pub fn source(args: &TraceArgs, local_store_exists: bool) -> Source {
    args.source.unwrap_or({
        if args.store.is_some() || local_store_exists {
            Source::File
        } else {
            Source::Xray
        }
    })
}

/// The window X-Ray is asked about; `--since` sets its length when nothing else does.
///
/// # Errors
/// [`TraceError::BadWindow`].
pub fn window(args: &TraceArgs, now: SystemTime) -> Result<Window, TraceError> {
    let minutes = match (args.minutes, &args.from) {
        (None, None) => args.since,
        (minutes, _) => minutes,
    };
    Window::resolve(args.from.as_deref(), args.to.as_deref(), minutes, now)
}

fn from_file(args: &TraceArgs, path: &Path) -> Result<String, TraceError> {
    if args.from.is_some() || args.to.is_some() || args.minutes.is_some() {
        return Err(TraceError::BadWindow(format!(
            "--from, --to and --minutes choose what X-Ray is asked for, and {} is read whole \
             (add --source xray to read X-Ray)",
            path.display()
        )));
    }
    let segments = store::read(path)?;
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
        return Ok(render_all(&paths));
    }
    let event_id = args.event_id.as_deref().unwrap_or_default();
    Ok(store::render(&store::path(&segments, event_id)?))
}

/// `riffle trace` over X-Ray's API in `window`.
///
/// # Errors
/// The id cannot be looked up, X-Ray fails, or holds no trace of the event in the window.
pub async fn from_xray(
    args: &TraceArgs,
    client: &xray::Client,
    window: Window,
) -> Result<String, TraceError> {
    let Some(n) = args.slowest else {
        let event_id = args.event_id.as_deref().unwrap_or_default();
        let segments = xray::events(client, event_id, window).await?;
        return Ok(store::render(&store::path(&segments, event_id)?));
    };
    let recent = xray::recent(client, window).await?;
    let mut out = String::new();
    if recent.capped {
        out.push_str(&format!(
            "read only the {} most recent traces of {window} (the cap); older ones were not \
             read: narrow the window to see them\n",
            recent.traces
        ));
    }
    let paths = store::slowest_since(&recent.segments, n, window.from_secs());
    if paths.is_empty() {
        out.push_str(&format!(
            "no complete traces in X-Ray from {window} ({} traces read; X-Ray indexes a trace up \
             to a minute or so after its stages ran)\n",
            recent.traces
        ));
        return Ok(out);
    }
    out.push_str(&render_all(&paths));
    Ok(out)
}

fn render_all(paths: &[EventPath]) -> String {
    paths
        .iter()
        .map(store::render)
        .collect::<Vec<_>>()
        .join("\n")
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

    #[tokio::test]
    async fn unknown_ids_and_missing_stores_are_clear_errors() {
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
            source: None,
            store: Some(store.clone()),
            from: None,
            to: None,
            minutes: None,
        };
        let text = run(&args("e-1")).await.unwrap();
        assert!(text.contains("rejected (pattern_mismatch)"), "{text}");
        let unknown = run(&args("e-2")).await.unwrap_err().to_string();
        assert!(unknown.contains("no trace names event e-2"), "{unknown}");
        let missing = run(&TraceArgs {
            store: Some(dir.join("none.jsonl")),
            ..args("e-1")
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(missing.contains("cannot read"), "{missing}");
        let slowest = run(&TraceArgs {
            event_id: None,
            slowest: Some(3),
            ..args("e-1")
        })
        .await
        .unwrap();
        assert!(slowest.contains("e-1"), "{slowest}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `riffle trace ARGS` as the command line parses it.
    fn try_parse(line: &[&str]) -> Result<TraceArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            trace: TraceArgs,
        }
        let argv = std::iter::once("riffle-trace").chain(line.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.trace)
    }

    fn parse(line: &[&str]) -> TraceArgs {
        try_parse(line).unwrap()
    }

    #[test]
    fn the_source_defaults_to_the_local_file_else_xray_and_windows_are_for_xray() {
        let plain = parse(&["e-1"]);
        assert_eq!(source(&plain, true), Source::File);
        assert_eq!(source(&plain, false), Source::Xray);
        assert_eq!(
            source(&parse(&["e-1", "--store", "x.jsonl"]), false),
            Source::File
        );
        assert_eq!(
            source(&parse(&["e-1", "--source", "xray"]), true),
            Source::Xray
        );

        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let span = |line: &[&str]| {
            let w = window(&parse(line), now).unwrap();
            (
                w.to.duration_since(w.from).unwrap().as_secs() / 60,
                w.to == now,
            )
        };
        assert_eq!(span(&["e-1"]), (60, true));
        assert_eq!(span(&["e-1", "--minutes", "5"]), (5, true));
        assert_eq!(span(&["--slowest", "3", "--since", "10"]), (10, true));
        assert_eq!(
            span(&["--slowest", "3", "--since", "10", "--minutes", "30"]),
            (30, true)
        );
        assert_eq!(
            span(&[
                "e-1",
                "--from",
                "2027-01-15T07:00:00Z",
                "--to",
                "2027-01-15T07:20:00Z"
            ]),
            (20, false)
        );
        assert!(try_parse(&["e-1", "--from", "2027-01-15T07:00:00Z", "--minutes", "5"]).is_err());
        assert!(try_parse(&["e-1", "--source", "s3"]).is_err());

        let refused = from_file(&parse(&["e-1", "--minutes", "5"]), Path::new("x.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--source xray"), "{refused}");
    }
}
