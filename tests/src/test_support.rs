//! What the emulator tests share. A test that cannot set up its fixture has failed, so these
//! helpers panic rather than return errors; waits poll with a deadline, never a fixed sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_kinesis::types::StreamStatus;
use riffle_stage::{KinesisEvent, RejectMessage};

/// A recorded Lambda Kinesis event from the `enriched` stream; tests swap in their own
/// records' data.
pub const ENRICHED_EVENT: &str = include_str!("../fixtures/kinesis_event_enriched.json");

/// How often waits ask again.
const POLL: Duration = Duration::from_millis(20);

/// A fresh state dir `<name>-<pid>` for one test run under the git-ignored
/// `.riffle/test-state/`.
pub fn state_dir(name: &str) -> PathBuf {
    let dir = riffle_local::project_root()
        .unwrap()
        .join(".riffle/test-state")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts `riffle-dev up` (the binary `bin`, state under `state`) as a user would and waits
/// until it has printed its endpoints. Returns the process, its stderr still piped for the
/// caller, and the variables of its `export` lines; the rest of its stdout is read away in
/// the background so the twin never blocks on a full pipe.
pub async fn start_up(
    bin: &Path,
    state: &Path,
) -> (tokio::process::Child, HashMap<String, String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(bin)
        .arg("up")
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("riffle-dev up starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut env = HashMap::new();
    let read_exports = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.insert(k.to_owned(), v.to_owned());
            }
            if line.starts_with("# then") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read_exports)
        .await
        .expect("the twin came up and printed its endpoints");
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    (child, env)
}

/// Waits until `stream` is ACTIVE, failing the test after `deadline`.
pub async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str, deadline: Duration) {
    let deadline = tokio::time::Instant::now() + deadline;
    loop {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never ACTIVE"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Creates an on-demand table keyed by `keys` (attribute, type, hash or range).
pub async fn create_table(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[(&str, ScalarAttributeType, KeyType)],
) {
    let mut request = dynamo
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind, key) in keys {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(kind.clone())
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*name)
                    .key_type(key.clone())
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.unwrap();
}

/// Creates the queue `name`; returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

/// Reads reject (or dead-letter) messages off the queue until `want` arrived or `deadline`
/// passed.
pub async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    want: usize,
    deadline: Duration,
) -> Vec<RejectMessage> {
    let deadline = tokio::time::Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < want && tokio::time::Instant::now() < deadline {
        let got = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            out.extend(riffle_stage::reject::parse_body(m.body().unwrap()).unwrap());
        }
    }
    out
}

/// [`ENRICHED_EVENT`] with one record per blob on `shard`: sequence numbers from `first_seq`,
/// partition keys `pk-<i>`.
pub fn enriched_event(blobs: &[Vec<u8>], first_seq: u64, shard: &str) -> KinesisEvent {
    let template: KinesisEvent = serde_json::from_str(ENRICHED_EVENT).unwrap();
    let mut event = template.clone();
    let mut source = (*template.records[0].source).clone();
    source.shard_id = shard.to_owned();
    let source = std::sync::Arc::new(source);
    event.records = blobs
        .iter()
        .enumerate()
        .map(|(i, blob)| {
            let mut record = template.records[0].clone();
            let seq = (first_seq + i as u64).to_string();
            record.kinesis.data = blob.clone();
            record.kinesis.sequence_number = seq;
            record.kinesis.partition_key = format!("pk-{i}");
            record.source = source.clone();
            record
        })
        .collect();
    event
}

/// The SDK pointed where `env` says, as any SDK given those variables would be: the
/// general endpoint, and the per-service ones (`AWS_ENDPOINT_URL_<SERVICE>`) per client.
pub async fn sdk_from(env: &HashMap<String, String>) -> aws_config::SdkConfig {
    let credentials = aws_credential_types::Credentials::new(
        env["AWS_ACCESS_KEY_ID"].clone(),
        env["AWS_SECRET_ACCESS_KEY"].clone(),
        None,
        None,
        "riffle-dev up",
    );
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(env["AWS_REGION"].clone()))
        .credentials_provider(credentials);
    if let Some(url) = env.get("AWS_ENDPOINT_URL") {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// A DynamoDB client for `sdk`, at `AWS_ENDPOINT_URL_DYNAMODB` when `env` names one.
pub fn dynamodb(
    sdk: &aws_config::SdkConfig,
    env: &HashMap<String, String>,
) -> aws_sdk_dynamodb::Client {
    let mut config = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(url) = env.get("AWS_ENDPOINT_URL_DYNAMODB") {
        config = config.endpoint_url(url);
    }
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

/// An SQS client for `sdk`, at `AWS_ENDPOINT_URL_SQS` when `env` names one.
pub fn sqs(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> aws_sdk_sqs::Client {
    let mut config = aws_sdk_sqs::config::Builder::from(sdk);
    if let Some(url) = env.get("AWS_ENDPOINT_URL_SQS") {
        config = config.endpoint_url(url);
    }
    aws_sdk_sqs::Client::from_conf(config.build())
}

/// (count, sum) per view key, over all windows.
pub async fn view_totals(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
) -> HashMap<String, (i64, f64)> {
    let mut totals: HashMap<String, (i64, f64)> = HashMap::new();
    let mut start = None;
    loop {
        let page = dynamo
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let row = riffle_view::item::parse_item(item).unwrap();
            let t = totals.entry(row.key.agg_key).or_default();
            t.0 += row.aggregate.count;
            t.1 += row.aggregate.sum;
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return totals;
        }
    }
}

/// Reads away a child's stderr in the background (the twin reports on it while it runs, and
/// would block on a full pipe).
pub fn drain_stderr(child: &mut tokio::process::Child) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut sink = Vec::new();
            let _ = tokio::io::BufReader::new(stderr)
                .read_to_end(&mut sink)
                .await;
        });
    }
}

/// Stops a `riffle-dev up` started by [`start_up`] as Ctrl-C would, and removes its state.
pub async fn stop_up(mut up: tokio::process::Child, state: &Path) {
    if let Some(pid) = up.id() {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), up.wait()).await;
    let _ = std::fs::remove_dir_all(state);
}

/// A finished `riffle-dev load` run: what it printed and the report it wrote.
#[derive(Debug)]
pub struct LoadRun {
    /// Its summary on stdout.
    pub stdout: String,
    /// report.json, parsed.
    pub report: serde_json::Value,
    /// The folder of its three files.
    pub out: PathBuf,
    state: PathBuf,
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Runs `riffle-dev load <args>` (the binary `riffle_dev`) with its own state and output
/// folders (named after `name`, so tests run side by side), asserting it succeeded.
pub fn riffle_dev_load(riffle_dev: &std::path::Path, name: &str, args: &[&str]) -> LoadRun {
    let out = std::env::temp_dir().join(format!("riffle-{name}-{}", std::process::id()));
    let state = std::env::temp_dir().join(format!("riffle-{name}-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = std::process::Command::new(riffle_dev)
        .arg("load")
        .args(args)
        .arg("--state-dir")
        .arg(&state)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("riffle-dev runs");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json written");
    LoadRun {
        stdout,
        report: serde_json::from_str(&text).expect("report.json is JSON"),
        out,
        state,
    }
}

/// (rows, metric sum) per view key of the Parquet files under `folder`, read by DuckDB as
/// the README shows.
pub async fn duckdb_totals(
    python: &std::path::Path,
    folder: &std::path::Path,
) -> HashMap<String, (i64, f64)> {
    // Late events are archived but were never in the view (ADR 0021).
    let rows: Vec<(String, i64, f64)> =
        duckdb_where(python, folder, "agg_key, count(*), sum(metric)", "NOT late").await;
    rows.into_iter().map(|(k, c, s)| (k, (c, s))).collect()
}

/// (rows, metric sum) per (view key, window start in epoch ms) of the Parquet files under
/// `folder`, read by DuckDB.
pub async fn duckdb_windows(
    python: &std::path::Path,
    folder: &std::path::Path,
) -> HashMap<(String, i64), (i64, f64)> {
    // Late events are archived but were never in the view (ADR 0021).
    let rows: Vec<(String, i64, i64, f64)> = duckdb_where(
        python,
        folder,
        "agg_key, epoch_ms(window_start), count(*), sum(metric)",
        "NOT late",
    )
    .await;
    rows.into_iter()
        .map(|(k, w, c, s)| ((k, w), (c, s)))
        .collect()
}

/// `SELECT <columns> ... GROUP BY ALL` over the Parquet files under `folder` (Hive
/// partitions read), by DuckDB in Python, each row as a JSON list.
pub async fn duckdb<T: serde::de::DeserializeOwned>(
    python: &std::path::Path,
    folder: &std::path::Path,
    columns: &str,
) -> Vec<T> {
    duckdb_where(python, folder, columns, "true").await
}

/// [`duckdb`] over the rows `filter` (an SQL condition) holds for.
pub async fn duckdb_where<T: serde::de::DeserializeOwned>(
    python: &std::path::Path,
    folder: &std::path::Path,
    columns: &str,
    filter: &str,
) -> Vec<T> {
    const QUERY: &str = r#"
import duckdb, json, pathlib, sys
files = sys.argv[1] + "/events/**/*.parquet"
if not list(pathlib.Path(sys.argv[1]).glob("events/**/*.parquet")):
    print("[]"); sys.exit(0)
rows = duckdb.sql(
    "SELECT " + sys.argv[2] + " FROM read_parquet($files, hive_partitioning = true) WHERE "
    + sys.argv[3] + " GROUP BY ALL",
    params={"files": files}).fetchall()
print(json.dumps([list(r) for r in rows]))
"#;
    let out = tokio::process::Command::new(python)
        .args(["-c", QUERY])
        .arg(folder)
        .arg(columns)
        .arg(filter)
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&stdout_of(out, "duckdb")).unwrap()
}

/// The standard output of a command that had to succeed; when it did not, fails the test
/// naming `what` it was, with its standard error.
fn stdout_of(out: std::process::Output, what: impl std::fmt::Display) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The view's totals once `done` holds them (or after two minutes, for the caller's asserts).
pub async fn wait_for_view(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    done: impl Fn(&HashMap<String, (i64, f64)>) -> bool,
) -> HashMap<String, (i64, f64)> {
    let started = Instant::now();
    loop {
        let seen = view_totals(dynamo, table).await;
        if done(&seen) || started.elapsed() > Duration::from_secs(120) {
            return seen;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The project's Python with DuckDB (installed by `make install` for the examples).
pub fn duckdb_python() -> PathBuf {
    riffle_local::project_root()
        .unwrap()
        .join(".riffle/tools/examples-venv/bin/python")
}

/// The archive of a running twin downloaded into `folder` with `riffle archive download`
/// (the `riffle` binary, the twin's variables `env`) and read by DuckDB: (rows, metric sum)
/// per view key, once `rows` rows are there (or after two minutes, for the caller's asserts).
pub async fn archived_totals(
    riffle: &Path,
    env: &HashMap<String, String>,
    folder: &Path,
    rows: i64,
) -> HashMap<String, (i64, f64)> {
    let started = Instant::now();
    loop {
        let download = tokio::process::Command::new(riffle)
            .args(["archive", "download", "--to"])
            .arg(folder)
            .env_clear()
            .envs(env)
            .output()
            .await
            .unwrap();
        assert!(
            download.status.success(),
            "{}",
            String::from_utf8_lossy(&download.stderr)
        );
        let archived = duckdb_totals(&duckdb_python(), folder).await;
        let found: i64 = archived.values().map(|(c, _)| c).sum();
        if found >= rows || started.elapsed() > Duration::from_secs(120) {
            return archived;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs `riffle <args>` with exactly `env` (a running twin's exports) and answers its
/// standard output; fails the test, with its standard error, when it does not succeed.
pub async fn riffle_ok(riffle: &Path, env: &HashMap<String, String>, args: &[String]) -> String {
    let out = tokio::process::Command::new(riffle)
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&stdout_of(out, format!("riffle {args:?}"))).into_owned()
}

/// A producer team's folder beside `state` (`<state>.team`): `schemas/events/<stem>.avsc`
/// holding `schema` and `schemas/rules/<subject>.json` holding `contract`, as `riffle schema
/// register` finds them. Answers the folder and the schema file.
pub fn team_subject(
    state: &Path,
    stem: &str,
    schema: &str,
    subject: &str,
    contract: &str,
) -> (PathBuf, PathBuf) {
    let team = state.with_extension("team");
    std::fs::create_dir_all(team.join("schemas/events")).unwrap();
    std::fs::create_dir_all(team.join("schemas/rules")).unwrap();
    let schema_file = team.join(format!("schemas/events/{stem}.avsc"));
    std::fs::write(&schema_file, schema).unwrap();
    std::fs::write(team.join(format!("schemas/rules/{subject}.json")), contract).unwrap();
    (team, schema_file)
}
