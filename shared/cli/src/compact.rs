//! `riffle archive compact`: merges the small Parquet objects of archive partitions, the
//! command line over `riffle_archive::compact` (which documents the rules: same rows,
//! deterministic key, inputs deleted only after the merged object is checked, readers skip
//! what a compacted object replaces). `riffle archive download`: the live objects of
//! partitions into a local folder of the same layout, for DuckDB or any Parquet reader.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use riffle_archive::ArchiveBucket;
use riffle_archive::S3ObjectStore;
use riffle_archive::compact::{self, CompactOptions, CompactReport, DEFAULT_TARGET_BYTES};
use riffle_archive::scan::{Filter, partitions};

/// `riffle archive`.
#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum ArchiveCommand {
    /// Merge each partition's small Parquet objects into one (rows unchanged).
    Compact(CompactArgs),
    /// Copy the live objects of partitions (what a compacted object replaces is skipped) into
    /// a local folder with the bucket's layout, each event once, for DuckDB or any Parquet
    /// reader.
    Download(DownloadArgs),
}

/// `riffle archive download`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Then, e.g.: duckdb -c \"SELECT subject, count(*) FROM \
read_parquet('DIR/events/**/*.parquet', hive_partitioning = true) GROUP BY subject\"")]
pub struct DownloadArgs {
    /// The local folder (made if missing). Objects keep their keys under it; a partition's
    /// files that are no longer live (compacted since an earlier download) are removed, so
    /// the folder never holds an event twice.
    #[arg(long, value_name = "DIR")]
    pub to: std::path::PathBuf,
    #[command(flatten)]
    pub archive: Partitions,
}

/// Which archive, and which of its partitions (both `compact` and `download`).
#[derive(Debug, Clone, Args)]
pub struct Partitions {
    /// The archive bucket.
    #[arg(long, env = "RIFFLE_ARCHIVE_BUCKET")]
    pub bucket: String,
    /// Key prefix of the archive in the bucket.
    #[arg(long, default_value = riffle_archive::key::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Only partitions of this payload subject (e.g. com.riffle.shop.OrderPlaced).
    #[arg(long)]
    pub subject: Option<String>,
    /// Only partitions of this UTC date (YYYY-MM-DD).
    #[arg(long, value_parser = parse_dt)]
    pub dt: Option<String>,
    /// Only partitions of this UTC hour (00-23).
    #[arg(long, value_parser = parse_hour)]
    pub hour: Option<String>,
}

impl Partitions {
    fn filter(&self) -> Filter {
        Filter {
            subject: self.subject.clone(),
            dt: self.dt.clone(),
            hour: self.hour.clone(),
        }
    }

    async fn bucket(&self) -> S3ObjectStore {
        let sdk = riffle_aws::sdk_config().await;
        S3ObjectStore::new(riffle_aws::s3_client(&sdk), &self.bucket)
    }
}

/// `riffle archive compact`.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    pub archive: Partitions,
    /// Fewest small objects in a partition worth merging (at least 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..))]
    pub min_files: u16,
    /// Objects of at least this many bytes are left alone; a merge takes at most this many.
    #[arg(long, default_value_t = DEFAULT_TARGET_BYTES)]
    pub target_bytes: u64,
    /// Print the plan; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_dt(s: &str) -> Result<String, String> {
    chrono_like_date(s)
        .then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not a date like 2025-11-24"))
}

fn chrono_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn parse_hour(s: &str) -> Result<String, String> {
    match s.parse::<u8>() {
        Ok(h) if h < 24 && !s.is_empty() => Ok(format!("{h:02}")),
        _ => Err(format!("{s:?} is not an hour 00-23")),
    }
}

/// The summary line of a run.
pub fn render(report: &CompactReport, dry_run: bool) -> String {
    let merges: usize = report.plans.iter().map(|p| p.merges.len()).sum();
    let inputs: usize = report
        .plans
        .iter()
        .flat_map(|p| &p.merges)
        .map(|m| m.inputs.len())
        .sum();
    let leftovers: usize = report.plans.iter().map(|p| p.leftovers.len()).sum();
    if dry_run {
        format!(
            "dry run: {} partitions, would merge {inputs} objects into {merges} and delete {leftovers} leftovers\n",
            report.partitions
        )
    } else {
        format!(
            "{} partitions: wrote {} compacted objects ({} rows), deleted {} objects\n",
            report.partitions, report.written, report.rows, report.deleted
        )
    }
}

/// `riffle archive ...`.
pub async fn main(args: ArchiveArgs) -> ExitCode {
    match args.command {
        ArchiveCommand::Compact(args) => compact_main(args).await,
        ArchiveCommand::Download(args) => crate::report(download(&args).await),
    }
}

async fn compact_main(args: CompactArgs) -> ExitCode {
    let options = CompactOptions {
        prefix: args.archive.prefix.clone(),
        filter: args.archive.filter(),
        min_files: usize::from(args.min_files),
        target_bytes: args.target_bytes,
        dry_run: args.dry_run,
    };
    let bucket = args.archive.bucket().await;
    match compact::run(&bucket, &options, |line| eprintln!("{line}")).await {
        Ok(report) => {
            print!("{}", render(&report, options.dry_run));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Downloads the live objects of the selected partitions; returns the summary.
async fn download(args: &DownloadArgs) -> Result<String, crate::OpsError> {
    let bucket = args.archive.bucket().await;
    let filter = args.archive.filter();
    let io = |path: &std::path::Path, e: std::io::Error| {
        crate::OpsError::Usage(format!("{}: {e}", path.display()))
    };
    let (mut objects, mut bytes, mut removed) = (0usize, 0u64, 0usize);
    let listed = partitions(&bucket, &args.archive.prefix, &filter).await?;
    for partition in &listed {
        let mut live = std::collections::BTreeSet::new();
        let mut folder = None;
        for object in partition.live() {
            let path = local_path(&args.to, &object.key).ok_or_else(|| {
                crate::OpsError::Usage(format!("object key {:?} is not a plain path", object.key))
            })?;
            let data = bucket.get(&object.key).await?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                folder = Some(dir.to_path_buf());
            }
            std::fs::write(&path, &data).map_err(|e| io(&path, e))?;
            objects += 1;
            bytes += data.len() as u64;
            live.insert(path);
        }
        // Files an earlier download left that are no longer live (merged by a compaction
        // since): kept, they would count their rows twice.
        if let Some(dir) = folder {
            for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
                let path = entry.map_err(|e| io(&dir, e))?.path();
                let parquet = path.extension().is_some_and(|x| x == "parquet");
                if parquet && !live.contains(&path) {
                    std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                    removed += 1;
                }
            }
        }
        let p = &partition.partition;
        eprintln!(
            "download: subject={} dt={} hour={} ({objects} objects so far)",
            p.subject, p.dt, p.hour
        );
    }
    Ok(format!(
        "downloaded {objects} objects ({bytes} bytes) of {} partitions to {}; removed {removed} no longer live\n",
        listed.len(),
        args.to.display()
    ))
}

/// Where `key` goes under `root`, or `None` for a key with anything but plain names in it
/// (`..`, an absolute path): a bucket's keys must not write outside the folder.
fn local_path(root: &std::path::Path, key: &str) -> Option<std::path::PathBuf> {
    let relative = std::path::Path::new(key);
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && !key.is_empty()).then(|| root.join(relative))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_checked() {
        assert_eq!(parse_hour("7").unwrap(), "07");
        assert_eq!(parse_hour("23").unwrap(), "23");
        assert!(parse_hour("24").is_err());
        assert!(parse_hour("x").is_err());
        assert!(parse_dt("2025-11-24").is_ok());
        assert!(parse_dt("2025-1-24").is_err());
        assert!(parse_dt("../../x").is_err());
    }

    #[test]
    fn keys_stay_inside_the_folder() {
        let root = std::path::Path::new("/tmp/dl");
        assert_eq!(
            local_path(root, "events/subject=s/dt=2025-01-01/hour=01/a.parquet").unwrap(),
            root.join("events/subject=s/dt=2025-01-01/hour=01/a.parquet")
        );
        for bad in ["", "/etc/passwd", "events/../../x", "../x"] {
            assert!(local_path(root, bad).is_none(), "{bad}");
        }
    }
}
