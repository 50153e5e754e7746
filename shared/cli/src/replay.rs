//! `riffle replay`: rebuilds the materialized view from the S3 archive into a fresh DynamoDB
//! table, so a damaged view can be replaced and the "rebuildable" guarantee checked.
//!
//! The archive is read partition by partition (only live objects, see
//! `riffle_archive::scan`), each partition's rows folded into the view items in memory with
//! the aggregator's own fold ([`Aggregate::of`] / [`Aggregate::merge`]), window lengths as the
//! aggregator takes them: from the contract registered with each row's payload schema id
//! (ADR 0020) when a registry is given, else from the repository's contracts
//! ([`window_lengths`]), per subject. Then the
//! items are written with BatchWriteItem, in the aggregator's item format (built by
//! `riffle_view::row_item`).
//!
//! What replay decides like the aggregator: rows with a non-finite metric are left out (the
//! aggregator parks them); an event archived twice (a retried batch cut differently) counts
//! once: rows are deduplicated by `event_id` within a partition, which is enough because an
//! event's partition follows from its subject and event time. Bookkeeping differs by
//! design: `version` is 1, `updated_at` is the replay's time, and no per-shard marks are
//! written (the items come from the archive, not from a stream position).
//!
//! Memory: rows are held one partition at a time; the view items of the whole archive are
//! held until written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, TableStatus, TimeToLiveSpecification};
use clap::Args;
use riffle_archive::ArchivedRow;
use riffle_archive::S3ObjectStore;
use riffle_archive::scan::{Filter, partitions, read_live_rows};
use riffle_codec::SchemaCache;
use riffle_registry_client::RegistryClient;
use riffle_view::DEFAULT_VIEW_TTL_DAYS;
use riffle_view::DEFAULT_WINDOW_SECS;
use riffle_view::window_lengths;
use riffle_view::{Aggregate, SECS_PER_DAY, ViewKey};

use riffle_aws::dynamo_batch;

use crate::OpsError;

/// How long a created table may take to become ACTIVE.
const TABLE_ACTIVE_DEADLINE: Duration = Duration::from_secs(120);
/// The view table's logical id in `infra/platform.yaml`.
pub const VIEW_TABLE_LOGICAL_ID: &str = "ViewTable";

/// `riffle replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The archive bucket.
    #[arg(long, env = "RIFFLE_ARCHIVE_BUCKET")]
    pub bucket: String,
    /// Key prefix of the archive in the bucket.
    #[arg(long, default_value = riffle_archive::key::DEFAULT_PREFIX)]
    pub prefix: String,
    /// The table to fill; it must be empty (or not exist, with --create).
    #[arg(long)]
    pub table: String,
    /// Create the table with the view table's key schema and TTL from infra/platform.yaml.
    #[arg(long)]
    pub create: bool,
    /// Days an item lives after its window ends (the aggregator's RIFFLE_VIEW_TTL_DAYS).
    #[arg(long, default_value_t = DEFAULT_VIEW_TTL_DAYS)]
    pub ttl_days: u32,
    /// The templates folder (default: infra/ of this checkout).
    #[arg(long)]
    pub infra: Option<PathBuf>,
    /// The schema registry, for each payload schema's window length from the contract
    /// registered with it [default: none, and then the contracts of this checkout's
    /// schemas/rules/, which know no subject registered elsewhere]. Credentials as for
    /// `riffle schema` (RIFFLE_REGISTRY_USER/_PASSWORD, _TOKEN or _SIGV4).
    #[arg(long, env = "RIFFLE_REGISTRY_URL")]
    pub registry_url: Option<String>,
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The archive bucket.
    pub bucket: String,
    /// Its key prefix.
    pub prefix: String,
    /// The table to fill.
    pub table: String,
    /// Create the table first.
    pub create: bool,
    /// Item TTL after the window.
    pub ttl_days: u32,
    /// The templates folder, for the key schema.
    pub infra_dir: PathBuf,
    /// The registry the window lengths come from (else the repository's contracts).
    pub registry: Option<RegistryClient>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Partitions read.
    pub partitions: usize,
    /// Objects read.
    pub objects: usize,
    /// Rows read.
    pub rows: usize,
    /// Rows left out as second copies of an event.
    pub duplicates: usize,
    /// Rows left out for a non-finite metric.
    pub non_finite: usize,
    /// Rows left out as late: their window was final when they came, so the view never
    /// held them (ADR 0021).
    pub late: usize,
    /// View items written.
    pub items: usize,
}

/// The view folded from archive rows (pure).
#[derive(Debug, Clone)]
pub struct ViewBuilder {
    windows: HashMap<String, u32>,
    by_schema: HashMap<i32, u32>,
    ttl_days: u32,
    items: BTreeMap<ViewKey, (u32, Aggregate)>,
    report: ReplayReport,
}

impl ViewBuilder {
    /// A builder with window lengths per subject.
    pub fn new(windows: HashMap<String, u32>, ttl_days: u32) -> Self {
        Self {
            windows,
            by_schema: HashMap::new(),
            ttl_days,
            items: BTreeMap::new(),
            report: ReplayReport::default(),
        }
    }

    /// Rows written with payload schema `schema_id` fold into windows of `secs`, whatever
    /// their subject's length by [`ViewBuilder::new`] (the registered contract decides).
    pub fn learn_window(&mut self, schema_id: i32, secs: u32) {
        self.by_schema.insert(schema_id, secs);
    }

    /// Folds the live rows of one partition in.
    pub fn add_partition(&mut self, rows: &[ArchivedRow]) {
        self.report.partitions += 1;
        self.report.rows += rows.len();
        let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
        for row in rows {
            if !seen.insert(row.event_id.as_str()) {
                self.report.duplicates += 1;
                continue;
            }
            if !row.metric.is_finite() {
                self.report.non_finite += 1;
                continue;
            }
            if row.late {
                self.report.late += 1;
                continue;
            }
            let window_secs = self
                .by_schema
                .get(&row.schema_id)
                .or_else(|| self.windows.get(&row.subject))
                .copied()
                .unwrap_or(DEFAULT_WINDOW_SECS);
            let key = ViewKey {
                agg_key: row.agg_key.clone(),
                window_start: row.window_start,
            };
            let value = Aggregate::of(row.metric);
            self.items
                .entry(key)
                .and_modify(|(_, a)| a.merge(&value))
                .or_insert((window_secs, value));
        }
    }

    /// Items so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item was folded yet.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The counts so far.
    pub fn report(&self) -> &ReplayReport {
        &self.report
    }

    /// The DynamoDB items, in the aggregator's format, stamped `now_ms`.
    ///
    /// # Errors
    /// An item the aggregator's reader refuses (a bug).
    pub fn items(&self, now_ms: i64) -> Result<Vec<HashMap<String, AttributeValue>>, OpsError> {
        self.items
            .iter()
            .map(|(key, (window_secs, a))| {
                let window_end_secs = key.window_start.div_euclid(1000) + i64::from(*window_secs);
                let expires_at =
                    window_end_secs.saturating_add(i64::from(self.ttl_days) * SECS_PER_DAY);
                let n = |v: String| AttributeValue::N(v);
                let core = HashMap::from([
                    ("agg_key".to_owned(), AttributeValue::S(key.agg_key.clone())),
                    ("window_start".to_owned(), n(key.window_start.to_string())),
                    ("window_secs".to_owned(), n(window_secs.to_string())),
                    ("count".to_owned(), n(a.count.to_string())),
                    ("sum".to_owned(), n(a.sum.to_string())),
                    ("min".to_owned(), n(a.min.to_string())),
                    ("max".to_owned(), n(a.max.to_string())),
                    ("updated_at".to_owned(), n(now_ms.to_string())),
                    ("expires_at".to_owned(), n(expires_at.to_string())),
                    ("version".to_owned(), n("1".to_owned())),
                ]);
                // Through the aggregator's reader and writer, so the item carries exactly the
                // attributes (and formats) the aggregator writes.
                let row = riffle_view::parse_item(&core)
                    .map_err(|e| OpsError::Usage(format!("view item {key:?}: {e}")))?;
                Ok(riffle_view::row_item(&row))
            })
            .collect()
    }
}

fn aws<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> OpsError {
    move |e| OpsError::Aws(format!("{what}: {e}"))
}

/// Reads the archive and writes the rebuilt view into `options.table`; `progress` gets a
/// line per partition.
///
/// # Errors
/// The table is not empty (or exists, with `create`), the archive or the table failed.
pub async fn run(
    sdk: &aws_config::SdkConfig,
    options: &ReplayOptions,
    mut progress: impl FnMut(&str),
) -> Result<ReplayReport, OpsError> {
    let dynamo = riffle_aws::dynamodb_client(sdk);
    if options.create {
        create_view_table(&dynamo, &options.table, &options.infra_dir).await?;
        progress(&format!("created table {}", options.table));
    } else {
        ensure_empty(&dynamo, &options.table).await?;
    }

    let contracts = riffle_codec::rules::bundled().map_err(|e| OpsError::Usage(e.to_string()))?;
    let mut view = ViewBuilder::new(window_lengths(&contracts), options.ttl_days);
    let bucket = S3ObjectStore::new(riffle_aws::s3_client(sdk), &options.bucket);
    let parts = partitions(&bucket, &options.prefix, &Filter::default()).await?;
    let total = parts.len();
    let mut objects = 0;
    let schemas = options.registry.clone().map(SchemaCache::new);
    let mut learned = HashSet::new();
    for (i, part) in parts.iter().enumerate() {
        let rows = read_live_rows(&bucket, part).await?;
        objects += part.live().count();
        if let Some(schemas) = &schemas {
            for id in rows.iter().map(|r| r.schema_id) {
                if learned.insert(id) {
                    learn_window(&mut view, schemas, id).await?;
                }
            }
        }
        view.add_partition(&rows);
        progress(&format!(
            "[{}/{total}] {}: {} rows from {} objects; {} view items so far",
            i + 1,
            part.partition.dir,
            rows.len(),
            part.live().count(),
            view.len()
        ));
    }
    let items = view.items(chrono_now_ms())?;
    progress(&format!(
        "writing {} items to {}",
        items.len(),
        options.table
    ));
    write_items(&dynamo, &options.table, items).await?;
    let mut report = view.report().clone();
    report.objects = objects;
    report.items = view.len();
    Ok(report)
}

/// Teaches `view` the window length of payload schema `id` from the contract registered with
/// it. An id the registry does not know, or one without an `enrich` section, keeps the
/// length by subject.
async fn learn_window(
    view: &mut ViewBuilder,
    schemas: &SchemaCache<RegistryClient>,
    id: i32,
) -> Result<(), OpsError> {
    let Ok(registry_id) = u32::try_from(id) else {
        return Ok(());
    };
    match schemas.get(registry_id).await {
        Ok(schema) => {
            if let Some(spec) = schema.contract().and_then(|c| c.enrich.as_ref()) {
                view.learn_window(id, spec.window_secs);
            }
            Ok(())
        }
        Err(e) if e.retryable() => Err(OpsError::Aws(format!("schema registry: {e}"))),
        Err(_) => Ok(()),
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn ensure_empty(dynamo: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), OpsError> {
    let out = dynamo
        .scan()
        .table_name(table)
        .limit(1)
        .send()
        .await
        .map_err(|e| {
            OpsError::Usage(format!(
                "table {table} cannot be read ({}); pass --create to create it",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            ))
        })?;
    if out.count() > 0 {
        return Err(OpsError::Usage(format!(
            "table {table} is not empty; replay fills a fresh table"
        )));
    }
    Ok(())
}

async fn create_view_table(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    infra_dir: &std::path::Path,
) -> Result<(), OpsError> {
    let plan = riffle_plan::plan(infra_dir, riffle_plan::LOCAL_ENV)?;
    let spec = plan
        .tables
        .iter()
        .find(|t| t.logical == VIEW_TABLE_LOGICAL_ID)
        .ok_or_else(|| {
            OpsError::Usage(format!(
                "no {VIEW_TABLE_LOGICAL_ID} in {}",
                infra_dir.display()
            ))
        })?;
    let request = riffle_aws::table::create_table(dynamo, table, spec.shape())
        .map_err(|e| OpsError::Usage(format!("creating table {table}: {e}")))?;
    request.send().await.map_err(|e| {
        OpsError::Usage(format!(
            "creating table {table}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        ))
    })?;

    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_DEADLINE;
    loop {
        let out = dynamo
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(aws("DescribeTable"))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(OpsError::Aws(format!(
                "table {table} not ACTIVE after {TABLE_ACTIVE_DEADLINE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(attribute) = &spec.ttl_attribute {
        dynamo
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .map_err(aws("TTL specification"))?,
            )
            .send()
            .await
            .map_err(aws("UpdateTimeToLive"))?;
    }
    Ok(())
}

async fn write_items(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<(), OpsError> {
    let requests = items
        .into_iter()
        .map(dynamo_batch::put)
        .collect::<Result<Vec<_>, _>>()
        .map_err(aws("view item"))?;
    dynamo_batch::batch_write(dynamo, table, requests)
        .await
        .map_err(aws("writing the view"))
}

/// `riffle replay`: runs [`run`] with progress on stderr and a summary on stdout.
pub async fn main(args: ReplayArgs) -> ExitCode {
    let infra_dir = match args.infra {
        Some(dir) => dir,
        None => match riffle_plan::project_root() {
            Ok(root) => root.join("infra"),
            Err(e) => {
                eprintln!("error: {e} (or pass --infra)");
                return ExitCode::from(2);
            }
        },
    };
    let options = ReplayOptions {
        bucket: args.bucket,
        prefix: args.prefix,
        table: args.table,
        create: args.create,
        ttl_days: args.ttl_days,
        infra_dir,
        registry: None,
    };
    let options = match &args.registry_url {
        Some(url) => match RegistryClient::from_env_credentials(url) {
            Ok(client) => ReplayOptions {
                registry: Some(client),
                ..options
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            eprintln!(
                "note: no registry (--registry-url, RIFFLE_REGISTRY_URL): window lengths \
                 from this checkout's schemas/rules/"
            );
            options
        }
    };
    let sdk = riffle_aws::sdk_config().await;
    match run(&sdk, &options, |line| eprintln!("{line}")).await {
        Ok(r) => {
            println!(
                "replayed {} rows from {} objects in {} partitions into {} items of {} ({} duplicate rows, {} non-finite metrics and {} late events left out)",
                r.rows,
                r.objects,
                r.partitions,
                r.items,
                options.table,
                r.duplicates,
                r.non_finite,
                r.late
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn row(id: &str, subject: &str, agg_key: &str, window_start: i64, metric: f64) -> ArchivedRow {
        ArchivedRow {
            event_id: id.into(),
            source: "web".into(),
            subject: subject.into(),
            schema_id: 1,
            event_time: window_start,
            ingest_time: window_start,
            validated_at: None,
            enriched_at: None,
            archived_at: 0,
            trace_header: None,
            agg_key: agg_key.into(),
            metric,
            window_start,
            reference_found: true,
            attributes_json: "{}".into(),
            payload_json: "{}".into(),
            payload: Vec::new(),
            kinesis_partition_key: "k".into(),
            kinesis_sequence_number: "1".into(),
            kinesis_shard_id: "s".into(),
            late: false,
        }
    }

    #[test]
    fn folds_rows_once_per_event_and_skips_non_finite_metrics_and_late_ones() {
        let mut view = ViewBuilder::new(HashMap::from([("s1".to_owned(), 300)]), 30);
        let late = ArchivedRow {
            late: true,
            ..row("e", "s1", "k", 60_000, 1_000.0)
        };
        view.add_partition(&[
            row("a", "s1", "k", 60_000, 2.0),
            row("b", "s1", "k", 60_000, -1.0),
            row("a", "s1", "k", 60_000, 2.0),
            row("c", "s1", "k", 60_000, f64::NAN),
            late,
        ]);
        view.add_partition(&[row("d", "other", "j", 0, 5.5)]);
        let r = view.report();
        assert_eq!(
            (r.partitions, r.rows, r.duplicates, r.non_finite, r.late),
            (2, 6, 1, 1, 1)
        );
        let items = view.items(7).unwrap();
        assert_eq!(items.len(), 2);
        let rows: Vec<_> = items
            .iter()
            .map(|i| riffle_view::parse_item(i).unwrap())
            .collect();
        let j = &rows[0];
        assert_eq!(j.key.agg_key, "j");
        assert_eq!(j.window_secs, DEFAULT_WINDOW_SECS);
        let k = &rows[1];
        assert_eq!(
            k.aggregate,
            Aggregate {
                count: 2,
                sum: 1.0,
                min: -1.0,
                max: 2.0
            }
        );
        assert_eq!(k.window_secs, 300);
        assert_eq!(k.expires_at, 60 + 300 + 30 * SECS_PER_DAY);
        assert_eq!(k.updated_at, 7);
    }

    #[test]
    fn a_registered_window_beats_the_subjects() {
        let mut view = ViewBuilder::new(HashMap::from([("s1".to_owned(), 60)]), 30);
        view.learn_window(9, 900);
        let mut registered = row("a", "s1", "k", 0, 1.0);
        registered.schema_id = 9;
        view.add_partition(&[registered, row("b", "s1", "j", 0, 1.0)]);
        let rows: Vec<_> = view
            .items(7)
            .unwrap()
            .iter()
            .map(|i| riffle_view::parse_item(i).unwrap())
            .collect();
        let secs: Vec<_> = rows
            .iter()
            .map(|r| (r.key.agg_key.as_str(), r.window_secs))
            .collect();
        assert_eq!(secs, vec![("j", 60), ("k", 900)]);
    }
}
