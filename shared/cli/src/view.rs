//! `riffle view query windows | top | series`: the view query API from a terminal, as a
//! table or as JSON, following its pages up to `--limit` entries.
//!
//! The API is found through `--url` or `RIFFLE_QUERY_URL` (`riffle-dev up` prints both it and
//! `RIFFLE_QUERY_TOKEN`). Credentials: `RIFFLE_QUERY_TOKEN` (a bearer token, never on the
//! command line, where `ps` would show it), or `--sigv4` for the function URL on AWS (the SDK's
//! default credentials and region). Exit codes: 0 answered, 1 the API refused or failed
//! (its message is printed), 2 the command could not ask (arguments, connection).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the API is when `--url` is not given.
pub const QUERY_URL_ENV: &str = "RIFFLE_QUERY_URL";
/// The bearer token sent to it.
pub const QUERY_TOKEN_ENV: &str = "RIFFLE_QUERY_TOKEN";
/// The most entries one request asks for (the API's page limit).
const PAGE_MAX: usize = 1000;

/// `riffle view`.
#[derive(Debug, Args)]
pub struct ViewArgs {
    #[command(subcommand)]
    command: ViewCommand,
}

#[derive(Debug, Subcommand)]
enum ViewCommand {
    /// Ask the view query API: one key's windows, a view's top keys, or a series to plot.
    Query(QueryArgs),
}

/// `riffle view query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    what: Query,
    /// The API's URL.
    #[arg(long, global = true, env = QUERY_URL_ENV)]
    url: Option<String>,
    /// Sign requests with SigV4 (the API on AWS: a function URL with IAM auth) instead of
    /// sending RIFFLE_QUERY_TOKEN.
    #[arg(long, global = true, env = "RIFFLE_QUERY_SIGV4")]
    sigv4: bool,
    /// Print the answer as JSON (the API's shape, every page's entries joined).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Query {
    /// One key's windows over a time range, oldest first.
    Windows {
        /// The view key, e.g. orders:category=books.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        range: Range,
        /// At most this many windows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The keys of a view in one window, highest first.
    Top {
        /// The view: the part of its keys before `:`, e.g. orders.
        #[arg(long)]
        view: String,
        /// An instant in the window (RFC 3339, epoch ms, `now`, `-15m`); default: the latest
        /// window with data.
        #[arg(long, allow_hyphen_values = true)]
        at: Option<String>,
        /// What to rank by: count, sum, max, min or mean.
        #[arg(long, default_value = "count")]
        by: String,
        /// At most this many keys.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Per window, the view's keys folded together (or one key's), oldest first.
    Series {
        /// The view: the part of its keys before `:`, e.g. orders.
        #[arg(long)]
        view: String,
        /// One key of the view only.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        range: Range,
        /// At most this many points.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// A time range of window starts.
#[derive(Debug, Args)]
struct Range {
    /// Window starts from (RFC 3339, epoch ms, `now`, or an offset such as -1h); default a
    /// day before `--to`.
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// Window starts before (same forms); default now.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
}

impl Range {
    fn push(&self, params: &mut Vec<(&'static str, String)>) {
        if let Some(from) = &self.from {
            params.push(("from", from.clone()));
        }
        if let Some(to) = &self.to {
            params.push(("to", to.clone()));
        }
    }
}

/// Runs `riffle view ...`.
pub async fn main(args: ViewArgs) -> ExitCode {
    let ViewCommand::Query(query) = args.command;
    match run(&query).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(message)) => {
            eprintln!("riffle view query: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("riffle view query: {message}");
            ExitCode::from(2)
        }
    }
}

enum Failure {
    /// The API answered with an error.
    Refused(String),
    /// The command could not ask.
    Usage(String),
}

async fn run(args: &QueryArgs) -> Result<String, Failure> {
    let base = args.url.as_deref().ok_or_else(|| {
        Failure::Usage(format!(
            "no API to ask: pass --url or set {QUERY_URL_ENV} (`riffle-dev up` prints it)"
        ))
    })?;
    let token = std::env::var(QUERY_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    if !args.sigv4 && token.is_none() {
        return Err(Failure::Usage(format!(
            "no credential: set {QUERY_TOKEN_ENV} (the local twin's, printed by `riffle-dev up`) \
             or pass --sigv4 for the API on AWS"
        )));
    }
    let (path, field, mut params, wanted) = match &args.what {
        Query::Windows { key, range, limit } => {
            let mut p = vec![("key", key.clone())];
            range.push(&mut p);
            ("/v1/windows", "windows", p, *limit)
        }
        Query::Top {
            view,
            at,
            by,
            limit,
        } => {
            let mut p = vec![("view", view.clone()), ("by", by.clone())];
            if let Some(at) = at {
                p.push(("at", at.clone()));
            }
            ("/v1/top", "keys", p, *limit)
        }
        Query::Series {
            view,
            key,
            range,
            limit,
        } => {
            let mut p = vec![("view", view.clone())];
            if let Some(key) = key {
                p.push(("key", key.clone()));
            }
            range.push(&mut p);
            ("/v1/series", "points", p, *limit)
        }
    };
    if wanted == 0 {
        return Err(Failure::Usage("--limit must be at least 1".into()));
    }
    params.push(("limit", wanted.min(PAGE_MAX).to_string()));
    let http = reqwest::Client::new();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut joined;
    let mut entries: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_params = params.clone();
        if let Some(c) = &cursor {
            page_params.push(("cursor", c.clone()));
        }
        let page = get(&http, &url, &page_params, token.as_deref(), args.sigv4).await?;
        entries.extend(page[field].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        joined = page;
        if cursor.is_none() || entries.len() >= wanted {
            break;
        }
    }
    entries.truncate(wanted);
    let mut answer = joined;
    answer[field] = Value::Array(entries);
    if args.json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        ));
    }
    Ok(match &args.what {
        Query::Windows { .. } => windows_table(&answer),
        Query::Top { .. } => top_table(&answer),
        Query::Series { .. } => series_table(&answer),
    })
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
    token: Option<&str>,
    sigv4: bool,
) -> Result<Value, Failure> {
    let url = reqwest::Url::parse_with_params(url, params)
        .map_err(|e| Failure::Usage(format!("{url}: {e}")))?;
    let mut request = http
        .get(url.clone())
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    if sigv4 {
        riffle_registry_client::sign_for_function_url(&mut request)
            .await
            .map_err(|e| Failure::Usage(e.to_string()))?;
    } else if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Failure::Usage(format!("{QUERY_TOKEN_ENV} is not a header value")))?;
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, value);
    }
    let response = http.execute(request).await.map_err(|e| {
        Failure::Usage(format!(
            "cannot reach {}: {e}",
            url.origin().ascii_serialization()
        ))
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| Failure::Refused(format!("{status}, and the answer is not JSON: {e}")))?;
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("no message");
        return Err(Failure::Refused(format!("{status}: {message}")));
    }
    Ok(body)
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_i64() || v.is_u64() => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

const AGGREGATE_HEADER: &str = "       count          sum          min          max         mean";

fn aggregate_columns(out: &mut String, entry: &Value) {
    for field in ["count", "sum", "min", "max", "mean"] {
        let _ = write!(out, " {:>12}", number(&entry[field]));
    }
}

/// `final` when the watermark passed the entry's window end plus its allowed lateness (its
/// numbers will not change), `open` otherwise (ADR 0021).
fn state(entry: &Value) -> &'static str {
    if entry["final"] == Value::Bool(true) {
        "final"
    } else {
        "open"
    }
}

/// The page's watermark, for a header line.
fn watermark(answer: &Value) -> String {
    match answer["watermark"].as_str() {
        Some(w) => format!("watermark {w}"),
        None => "no watermark yet".into(),
    }
}

fn windows_table(answer: &Value) -> String {
    let windows = answer["windows"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{}: {} windows, {}\nwindow start (UTC)       {AGGREGATE_HEADER}  state\n",
        answer["key"].as_str().unwrap_or_default(),
        windows.len(),
        watermark(answer),
    );
    for w in &windows {
        let _ = write!(
            out,
            "{:<25}",
            w["window_start"].as_str().unwrap_or_default()
        );
        aggregate_columns(&mut out, w);
        let _ = write!(out, "  {}", state(w));
        out.push('\n');
    }
    out
}

fn top_table(answer: &Value) -> String {
    let Some(start) = answer["window_start"].as_str() else {
        return format!(
            "{}: no windows with data\n",
            answer["view"].as_str().unwrap_or_default()
        );
    };
    let keys = answer["keys"].as_array().cloned().unwrap_or_default();
    let width = keys
        .iter()
        .filter_map(|k| k["key"].as_str().map(str::len))
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = format!(
        "{}: window {start} ({} s, {}), {} keys{}, by {}\n{:>4}  {:<width$}{AGGREGATE_HEADER}  state\n",
        answer["view"].as_str().unwrap_or_default(),
        number(&answer["window_secs"]),
        watermark(answer),
        number(&answer["total_keys"]),
        if answer["complete"] == Value::Bool(false) {
            " (more; only the first were ranked)"
        } else {
            ""
        },
        answer["by"].as_str().unwrap_or_default(),
        "rank",
        "key",
    );
    for k in &keys {
        let _ = write!(
            out,
            "{:>4}  {:<width$}",
            number(&k["rank"]),
            k["key"].as_str().unwrap_or_default()
        );
        aggregate_columns(&mut out, k);
        let _ = write!(out, "  {}", state(k));
        out.push('\n');
    }
    out
}

fn series_table(answer: &Value) -> String {
    let points = answer["points"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{}{}: {} points, {}\nwindow start (UTC)        keys{AGGREGATE_HEADER}  state\n",
        answer["view"].as_str().unwrap_or_default(),
        answer["key"]
            .as_str()
            .map(|k| format!(" ({k})"))
            .unwrap_or_default(),
        points.len(),
        watermark(answer),
    );
    for p in &points {
        let _ = write!(
            out,
            "{:<25} {:>5}",
            p["window_start"].as_str().unwrap_or_default(),
            number(&p["keys"])
        );
        aggregate_columns(&mut out, p);
        let _ = write!(out, "  {}", state(p));
        if p["complete"] == Value::Bool(false) {
            out.push_str("  (partial)");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_every_entry_and_say_when_there_is_none() {
        let top = serde_json::json!({
            "view": "orders", "by": "count", "window_start": "2026-12-07T00:02:00.000Z",
            "window_secs": 60, "total_keys": 2, "complete": true,
            "keys": [
                {"rank": 1, "key": "orders:category=books", "count": 7, "sum": 10.5, "min": 1.0, "max": 3.0, "mean": 1.5},
                {"rank": 2, "key": "orders:category=toys", "count": 2, "sum": 1.0, "min": 0.5, "max": 0.5, "mean": 0.5},
            ],
        });
        let text = top_table(&top);
        assert!(
            text.starts_with(
                "orders: window 2026-12-07T00:02:00.000Z (60 s, no watermark yet), 2 keys, by count"
            ),
            "{text}"
        );
        assert!(
            text.contains("   1  orders:category=books            7       10.500"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4);
        let empty = serde_json::json!({"view": "orders", "window_start": null, "keys": []});
        assert_eq!(top_table(&empty), "orders: no windows with data\n");
        let series = serde_json::json!({
            "view": "orders", "key": null,
            "points": [{"window_start": "2026-12-07T00:00:00.000Z", "keys": 25, "count": 100, "sum": 1.0, "min": 0.0, "max": 1.0, "mean": 0.01, "complete": false}],
        });
        let text = series_table(&series);
        assert!(
            text.contains("2026-12-07T00:00:00.000Z     25          100"),
            "{text}"
        );
        assert!(text.contains("  open  (partial)"), "{text}");
        let windows = serde_json::json!({
            "key": "orders:category=books", "watermark": "2026-12-07T00:05:00.000Z",
            "windows": [
                {"window_start": "2026-12-07T00:02:00.000Z", "count": 7, "sum": 10.5, "min": 1.0, "max": 3.0, "mean": 1.5, "final": true},
                {"window_start": "2026-12-07T00:04:00.000Z", "count": 1, "sum": 1.0, "min": 1.0, "max": 1.0, "mean": 1.0, "final": false},
            ],
        });
        let text = windows_table(&windows);
        assert!(
            text.starts_with(
                "orders:category=books: 2 windows, watermark 2026-12-07T00:05:00.000Z"
            ),
            "{text}"
        );
        assert!(text.lines().nth(2).unwrap().ends_with("  final"), "{text}");
        assert!(text.lines().nth(3).unwrap().ends_with("  open"), "{text}");
    }
}
