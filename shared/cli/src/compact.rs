//! `riffle archive compact`: merges the small Parquet objects of archive partitions, the
//! command line over `riffle_archive::compact` (which documents the rules: same rows,
//! deterministic key, inputs deleted only after the merged object is checked, readers skip
//! what a compacted object replaces).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use riffle_archive::S3ObjectStore;
use riffle_archive::compact::{self, CompactOptions, CompactReport, DEFAULT_TARGET_BYTES};
use riffle_archive::scan::Filter;

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
}

/// `riffle archive compact`.
#[derive(Debug, Clone, Args)]
pub struct CompactArgs {
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
    let ArchiveCommand::Compact(args) = args.command;
    let options = CompactOptions {
        prefix: args.prefix,
        filter: Filter {
            subject: args.subject,
            dt: args.dt,
            hour: args.hour,
        },
        min_files: usize::from(args.min_files),
        target_bytes: args.target_bytes,
        dry_run: args.dry_run,
    };
    let sdk = riffle_aws::sdk_config().await;
    let bucket = S3ObjectStore::new(riffle_aws::s3_client(&sdk), &args.bucket);
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
}
