//! Compaction: the small objects of a partition merged into one, rows unchanged.
//!
//! The archiver writes one object per Lambda batch and partition, so a busy hour holds
//! thousands of small files, which analysts' engines read slowly. [`run`] merges, per
//! partition, the live objects smaller than a target size (at least `min_files` of them)
//! into one object:
//! - the same rows (every column, every duplicate), ordered by (shard, sequence number),
//!   rows of one sequence number (the user records of one KPL aggregate) kept in the order
//!   the archiver wrote them;
//! - named `compacted-<md5 of the sorted input names>.parquet`, so a re-run over the same
//!   inputs overwrites the same object;
//! - its footer lists the names of its inputs under [`REPLACES_KEY`]; readers skip an object
//!   named there (see [`crate::scan`]), so rows are never seen twice;
//! - inputs are deleted only after the merged object was written and read back with the
//!   expected row count. A crash in between leaves both; the next run deletes the
//!   replaced leftovers first and merges nothing twice.
//!
//! [`plan_partition`] and [`merge_rows`] are pure; [`run`] does the I/O through the
//! [`ArchiveBucket`] port.

use std::cmp::Ordering;

use md5::{Digest, Md5};

use crate::ArchiveError;
use crate::bucket::{ArchiveBucket, ObjectInfo};
use crate::key::cmp_sequence;
use crate::scan::{
    COMPACTED_PREFIX, Filter, PARQUET_SUFFIX, PartitionObjects, REPLACES_KEY, partitions,
};
use crate::table::{ArchivedRow, read_rows, write_rows_with_metadata};

/// Objects at least this large are left alone, and a merge stops growing at this size.
pub const DEFAULT_TARGET_BYTES: u64 = 128 * 1024 * 1024;
/// A partition needs at least this many small objects to be worth merging.
pub const DEFAULT_MIN_FILES: usize = 2;

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Archive key prefix (`events`).
    pub prefix: String,
    /// Which partitions.
    pub filter: Filter,
    /// Fewest small objects worth one merge (at least 2).
    pub min_files: usize,
    /// Size of "small", and the most input bytes one merge takes.
    pub target_bytes: u64,
    /// Plan only: write and delete nothing.
    pub dry_run: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            prefix: crate::key::DEFAULT_PREFIX.to_owned(),
            filter: Filter::default(),
            min_files: DEFAULT_MIN_FILES,
            target_bytes: DEFAULT_TARGET_BYTES,
            dry_run: false,
        }
    }
}

/// One merge: inputs of one partition into one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The inputs, by key.
    pub inputs: Vec<ObjectInfo>,
    /// The key of the merged object.
    pub output: String,
}

/// What compaction does in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// The partition folder.
    pub dir: String,
    /// Objects already replaced by a compacted object (an interrupted run): deleted.
    pub leftovers: Vec<String>,
    /// Merges to make.
    pub merges: Vec<Merge>,
}

/// The key of the object merging `inputs` (objects of the folder `dir`): the same inputs
/// always give the same key.
pub fn compacted_key(dir: &str, inputs: &[ObjectInfo]) -> String {
    let mut names: Vec<&str> = inputs.iter().map(|o| file_name(&o.key)).collect();
    names.sort_unstable();
    let mut hasher = Md5::new();
    for name in names {
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{dir}{COMPACTED_PREFIX}{hex}{PARQUET_SUFFIX}")
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The plan for one partition (pure): leftovers to delete, and the live objects smaller than
/// `target_bytes` cut, in key order, into merges of at most `target_bytes` input bytes;
/// groups of fewer than `min_files` (at least 2) are left as they are.
pub fn plan_partition(p: &PartitionObjects, min_files: usize, target_bytes: u64) -> PartitionPlan {
    let min_files = min_files.max(2);
    let mut groups: Vec<Vec<ObjectInfo>> = Vec::new();
    let mut current: Vec<ObjectInfo> = Vec::new();
    let mut bytes = 0u64;
    for object in p.live().filter(|o| o.size < target_bytes) {
        if !current.is_empty() && bytes.saturating_add(object.size) > target_bytes {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes = bytes.saturating_add(object.size);
        current.push(object.clone());
    }
    groups.push(current);
    let merges = groups
        .into_iter()
        .filter(|g| g.len() >= min_files)
        .map(|inputs| Merge {
            output: compacted_key(&p.partition.dir, &inputs),
            inputs,
        })
        .collect();
    PartitionPlan {
        dir: p.partition.dir.clone(),
        leftovers: p.replaced_keys(),
        merges,
    }
}

/// The rows of the inputs (each in the order it was written, inputs in key order) as one
/// sequence ordered by (shard, sequence number); the sort is stable, so rows sharing a
/// sequence number (user records of one aggregate) keep their order. Pure.
pub fn merge_rows(inputs: Vec<Vec<ArchivedRow>>) -> Vec<ArchivedRow> {
    let mut rows: Vec<ArchivedRow> = inputs.into_iter().flatten().collect();
    rows.sort_by(order);
    rows
}

fn order(a: &ArchivedRow, b: &ArchivedRow) -> Ordering {
    a.kinesis_shard_id
        .cmp(&b.kinesis_shard_id)
        .then_with(|| cmp_sequence(&a.kinesis_sequence_number, &b.kinesis_sequence_number))
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Partitions looked at.
    pub partitions: usize,
    /// The plans, one per partition with something to do.
    pub plans: Vec<PartitionPlan>,
    /// Merged objects written.
    pub written: usize,
    /// Rows in them.
    pub rows: usize,
    /// Objects deleted (merged inputs and leftovers).
    pub deleted: usize,
}

/// Plans every partition passing `options.filter` and, unless dry, carries the plans out.
/// `progress` is told about each partition and merge as it happens.
///
/// # Errors
/// The bucket failed, an object is unreadable, or a merged object read back does not hold
/// the rows written (its inputs are then kept).
pub async fn run<B: ArchiveBucket>(
    bucket: &B,
    options: &CompactOptions,
    mut progress: impl FnMut(&str),
) -> Result<CompactReport, ArchiveError> {
    let parts = partitions(bucket, &options.prefix, &options.filter).await?;
    let mut report = CompactReport {
        partitions: parts.len(),
        ..CompactReport::default()
    };
    let total = parts.len();
    for (i, part) in parts.iter().enumerate() {
        let plan = plan_partition(part, options.min_files, options.target_bytes);
        if plan.leftovers.is_empty() && plan.merges.is_empty() {
            continue;
        }
        let verb = if options.dry_run { "would" } else { "will" };
        progress(&format!(
            "[{}/{total}] {}: {} objects, {verb} merge {} into {} and delete {} leftovers",
            i + 1,
            plan.dir,
            part.objects.len(),
            plan.merges.iter().map(|m| m.inputs.len()).sum::<usize>(),
            plan.merges.len(),
            plan.leftovers.len()
        ));
        if !options.dry_run {
            if !plan.leftovers.is_empty() {
                bucket.delete(&plan.leftovers).await?;
                report.deleted += plan.leftovers.len();
            }
            for merge in &plan.merges {
                let rows = merge_one(bucket, merge).await?;
                report.written += 1;
                report.rows += rows;
                report.deleted += merge.inputs.len();
                progress(&format!(
                    "  wrote {} ({rows} rows from {} objects), inputs deleted",
                    file_name(&merge.output),
                    merge.inputs.len()
                ));
            }
        }
        report.plans.push(plan);
    }
    Ok(report)
}

/// Writes one merged object, checks it, then deletes its inputs; returns its row count.
async fn merge_one<B: ArchiveBucket>(bucket: &B, merge: &Merge) -> Result<usize, ArchiveError> {
    let mut inputs = Vec::with_capacity(merge.inputs.len());
    for input in &merge.inputs {
        let bytes = bucket.get(&input.key).await?;
        inputs.push(
            read_rows(&bytes)
                .map_err(|e| ArchiveError::BadArchive(format!("{}: {e}", input.key)))?,
        );
    }
    let rows = merge_rows(inputs);
    let names: Vec<&str> = merge.inputs.iter().map(|o| file_name(&o.key)).collect();
    let body = write_rows_with_metadata(&rows, vec![(REPLACES_KEY.to_owned(), names.join("\n"))])?;
    bucket.put(&merge.output, body).await?;
    let back = read_rows(&bucket.get(&merge.output).await?)?;
    if back.len() != rows.len() {
        return Err(ArchiveError::BadArchive(format!(
            "{} read back {} rows, wrote {}; inputs kept",
            merge.output,
            back.len(),
            rows.len()
        )));
    }
    let keys: Vec<String> = merge.inputs.iter().map(|o| o.key.clone()).collect();
    bucket.delete(&keys).await?;
    Ok(rows.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scan::partition_of;
    use crate::testing::sample_row as row;

    const DIR: &str = "events/subject=s/dt=2025-11-24/hour=16/";

    fn info(name: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: format!("{DIR}{name}"),
            size,
        }
    }

    fn partition(objects: Vec<ObjectInfo>, lists: &[(&str, &[&str])]) -> PartitionObjects {
        let (p, _) = partition_of("events", &format!("{DIR}x.parquet")).unwrap();
        let lists: BTreeMap<String, Vec<String>> = lists
            .iter()
            .map(|(k, v)| {
                (
                    format!("{DIR}{k}"),
                    v.iter().map(|s| (*s).to_owned()).collect(),
                )
            })
            .collect();
        PartitionObjects::new(p, objects, &lists)
    }

    #[test]
    fn small_objects_are_grouped_up_to_the_target() {
        let p = partition(
            vec![
                info("a.parquet", 40),
                info("b.parquet", 40),
                info("big.parquet", 100),
                info("c.parquet", 40),
                info("d.parquet", 10),
            ],
            &[],
        );
        let plan = plan_partition(&p, 2, 100);
        let groups: Vec<Vec<&str>> = plan
            .merges
            .iter()
            .map(|m| m.inputs.iter().map(|o| file_name(&o.key)).collect())
            .collect();
        assert_eq!(
            groups,
            vec![
                vec!["a.parquet", "b.parquet"],
                vec!["c.parquet", "d.parquet"]
            ]
        );
        assert!(
            plan.merges[0]
                .output
                .starts_with(&format!("{DIR}compacted-"))
        );
        assert!(plan.leftovers.is_empty());
        // Too few small objects: nothing to do.
        assert!(plan_partition(&p, 3, 100).merges.is_empty());
        // min_files below 2 would rewrite single objects forever.
        let single = partition(vec![info("a.parquet", 1)], &[]);
        assert!(plan_partition(&single, 1, 100).merges.is_empty());
    }

    #[test]
    fn the_same_inputs_give_the_same_key() {
        let a = [info("a.parquet", 1), info("b.parquet", 2)];
        let b = [info("b.parquet", 9), info("a.parquet", 9)];
        assert_eq!(compacted_key(DIR, &a), compacted_key(DIR, &b));
        assert_ne!(compacted_key(DIR, &a), compacted_key(DIR, &a[..1]));
    }

    #[test]
    fn a_rerun_after_a_crash_deletes_leftovers_and_merges_nothing_twice() {
        let inputs = vec![info("a.parquet", 10), info("b.parquet", 10)];
        let merged = compacted_key(DIR, &inputs);
        let merged_name = file_name(&merged).to_owned();
        let mut objects = inputs.clone();
        objects.push(ObjectInfo {
            key: merged.clone(),
            size: 20,
        });
        let p = partition(objects, &[(&merged_name, &["a.parquet", "b.parquet"])]);
        let plan = plan_partition(&p, 2, 100);
        assert_eq!(
            plan.leftovers,
            vec![inputs[0].key.clone(), inputs[1].key.clone()]
        );
        assert!(plan.merges.is_empty());
    }

    #[test]
    fn rows_are_ordered_by_shard_and_sequence_stably() {
        let r = |shard: &str, seq: &str, id: &str| {
            let mut x = row(1);
            x.kinesis_shard_id = shard.into();
            x.kinesis_sequence_number = seq.into();
            x.event_id = id.into();
            x
        };
        let first = vec![r("s1", "10", "a"), r("s1", "10", "b"), r("s0", "99", "c")];
        let second = vec![r("s1", "9", "d"), r("s0", "100", "e"), r("s1", "10", "f")];
        let merged = merge_rows(vec![first, second]);
        let ids: Vec<&str> = merged.iter().map(|x| x.event_id.as_str()).collect();
        assert_eq!(ids, vec!["c", "e", "d", "a", "b", "f"]);
    }
}
