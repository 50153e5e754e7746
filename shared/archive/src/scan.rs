//! Reading the archive partition by partition, as compaction and replay do.
//!
//! A partition is the folder `<prefix>/subject=<s>/dt=<d>/hour=<h>/`. Compaction
//! ([`crate::compact`]) writes an object named `compacted-*.parquet` whose Parquet footer
//! lists, under [`REPLACES_KEY`], the names of the objects of the same partition it holds the
//! rows of. Those objects are deleted only after the compacted object is written and checked,
//! so for a while (or for good, after a crash) both exist. The rule every reader follows:
//! an object named in the `REPLACES_KEY` list of another object of its partition is not live
//! and is skipped. [`PartitionObjects::live`] applies it.

use std::collections::{BTreeMap, BTreeSet};

use crate::ArchiveError;
use crate::bucket::{ArchiveBucket, ObjectInfo};
use crate::key::escape;
use crate::table::{ArchivedRow, FOOTER_TAIL_BYTES, Footer, footer_key_values, read_rows};

/// File name prefix of compacted objects.
pub const COMPACTED_PREFIX: &str = "compacted-";
/// Footer key of a compacted object: the names of the objects it replaces, one per line.
pub const REPLACES_KEY: &str = "riffle.replaces";
/// Bytes read from the end of a compacted object to find its footer in one request.
pub const TAIL_READ_BYTES: usize = 64 * 1024;
/// File name suffix of archive objects.
pub const PARQUET_SUFFIX: &str = ".parquet";

/// Which partitions to look at; `None` matches all. Values as written in the event (the
/// subject unescaped), compared with the key's escaped form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Payload subject.
    pub subject: Option<String>,
    /// `YYYY-MM-DD`.
    pub dt: Option<String>,
    /// `HH`.
    pub hour: Option<String>,
}

impl Filter {
    /// The narrowest key prefix to list under `prefix` for this filter.
    pub fn list_prefix(&self, prefix: &str) -> String {
        let mut out = root(prefix);
        let Some(subject) = &self.subject else {
            return out;
        };
        out.push_str(&format!("subject={}/", escape(subject)));
        let Some(dt) = &self.dt else {
            return out;
        };
        out.push_str(&format!("dt={}/", escape(dt)));
        if let Some(hour) = &self.hour {
            out.push_str(&format!("hour={}/", escape(hour)));
        }
        out
    }

    /// Whether a partition passes.
    pub fn matches(&self, p: &Partition) -> bool {
        self.subject.as_ref().is_none_or(|s| escape(s) == p.subject)
            && self.dt.as_ref().is_none_or(|d| *d == p.dt)
            && self.hour.as_ref().is_none_or(|h| *h == p.hour)
    }
}

/// `prefix` as a folder: `events/`, or empty.
fn root(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

/// One partition folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    /// The key prefix of its objects, ending in `/`.
    pub dir: String,
    /// The subject as it appears in the key (escaped).
    pub subject: String,
    /// `YYYY-MM-DD`.
    pub dt: String,
    /// `HH`.
    pub hour: String,
}

/// The partition of `key` under `prefix` and the object's file name; `None` for keys that
/// are not archive objects (other folders, other files).
pub fn partition_of<'k>(prefix: &str, key: &'k str) -> Option<(Partition, &'k str)> {
    let rest = key.strip_prefix(&root(prefix))?;
    let (dirs, name) = rest.rsplit_once('/')?;
    if !name.ends_with(PARQUET_SUFFIX) {
        return None;
    }
    let mut parts = dirs.split('/');
    let subject = parts.next()?.strip_prefix("subject=")?;
    let dt = parts.next()?.strip_prefix("dt=")?;
    let hour = parts.next()?.strip_prefix("hour=")?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        Partition {
            dir: key[..key.len() - name.len()].to_owned(),
            subject: subject.to_owned(),
            dt: dt.to_owned(),
            hour: hour.to_owned(),
        },
        name,
    ))
}

/// The objects of one partition and which of them compacted objects replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionObjects {
    /// The partition.
    pub partition: Partition,
    /// Its archive objects, by key.
    pub objects: Vec<ObjectInfo>,
    /// Key of a replaced object -> key of the compacted object that replaces it.
    pub replaced: BTreeMap<String, String>,
}

impl PartitionObjects {
    /// The objects a reader reads: those no other object replaces, by key.
    pub fn live(&self) -> impl Iterator<Item = &ObjectInfo> {
        self.objects
            .iter()
            .filter(|o| !self.replaced.contains_key(&o.key))
    }

    /// Keys of the objects a compacted object replaces (left over from an interrupted run).
    pub fn replaced_keys(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| self.replaced.contains_key(&o.key))
            .map(|o| o.key.clone())
            .collect()
    }

    /// Builds the replacement map from the `REPLACES_KEY` lists of the compacted objects
    /// (compacted key -> names it replaces). Pure.
    pub fn new(
        partition: Partition,
        objects: Vec<ObjectInfo>,
        replaces: &BTreeMap<String, Vec<String>>,
    ) -> Self {
        let present: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut replaced = BTreeMap::new();
        for (compacted, names) in replaces {
            if !present.contains(compacted.as_str()) {
                continue;
            }
            for name in names {
                let key = format!("{}{name}", partition.dir);
                if key != *compacted && present.contains(key.as_str()) {
                    replaced.insert(key, compacted.clone());
                }
            }
        }
        Self {
            partition,
            objects,
            replaced,
        }
    }
}

/// Whether `key` names a compacted object.
pub fn is_compacted(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(COMPACTED_PREFIX))
}

/// The names a compacted object says it replaces, read from its footer.
///
/// # Errors
/// The bucket failed, or the object is not Parquet.
pub async fn replaces<B: ArchiveBucket>(
    bucket: &B,
    key: &str,
) -> Result<Vec<String>, ArchiveError> {
    let mut tail = bucket.get_tail(key, TAIL_READ_BYTES).await?;
    let key_values = loop {
        match footer_key_values(&tail)? {
            Footer::KeyValues(kv) => break kv,
            Footer::NeedTail(n) if n > tail.len() && tail.len() >= TAIL_READ_BYTES => {
                tail = bucket.get_tail(key, n).await?;
            }
            Footer::NeedTail(n) => {
                return Err(ArchiveError::BadArchive(format!(
                    "{key}: footer of {} bytes does not fit the object",
                    n - FOOTER_TAIL_BYTES
                )));
            }
        }
    };
    Ok(key_values
        .into_iter()
        .filter(|(k, _)| k == REPLACES_KEY)
        .flat_map(|(_, v)| {
            v.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Every partition under `prefix` that passes `filter`, ordered by (subject, dt, hour), with
/// the footers of its compacted objects read.
///
/// # Errors
/// The bucket failed or a compacted object is unreadable.
pub async fn partitions<B: ArchiveBucket>(
    bucket: &B,
    prefix: &str,
    filter: &Filter,
) -> Result<Vec<PartitionObjects>, ArchiveError> {
    let listed = bucket.list(&filter.list_prefix(prefix)).await?;
    let mut grouped: BTreeMap<Partition, Vec<ObjectInfo>> = BTreeMap::new();
    for object in listed {
        let Some((partition, _)) = partition_of(prefix, &object.key) else {
            continue;
        };
        if filter.matches(&partition) {
            grouped.entry(partition).or_default().push(object);
        }
    }
    let mut out = Vec::with_capacity(grouped.len());
    for (partition, objects) in grouped {
        let mut lists = BTreeMap::new();
        for object in objects.iter().filter(|o| is_compacted(&o.key)) {
            lists.insert(object.key.clone(), replaces(bucket, &object.key).await?);
        }
        out.push(PartitionObjects::new(partition, objects, &lists));
    }
    Ok(out)
}

/// The rows of a partition's live objects, object by object in key order.
///
/// # Errors
/// The bucket failed or an object is not an archive object.
pub async fn read_live_rows<B: ArchiveBucket>(
    bucket: &B,
    partition: &PartitionObjects,
) -> Result<Vec<ArchivedRow>, ArchiveError> {
    let mut rows = Vec::new();
    for object in partition.live() {
        let bytes = bucket.get(&object.key).await?;
        let read = read_rows(&bytes)
            .map_err(|e| ArchiveError::BadArchive(format!("{}: {e}", object.key)))?;
        rows.extend(read);
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DIR: &str = "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/";

    fn info(name: &str) -> ObjectInfo {
        ObjectInfo {
            key: format!("{DIR}{name}"),
            size: 10,
        }
    }

    #[test]
    fn keys_parse_into_partitions() {
        let key = format!("{DIR}s-1-2.parquet");
        let (p, name) = partition_of("events", &key).unwrap();
        assert_eq!(name, "s-1-2.parquet");
        assert_eq!(p.dir, DIR);
        assert_eq!(
            (p.subject.as_str(), p.dt.as_str(), p.hour.as_str()),
            ("com.riffle.shop.OrderPlaced", "2025-11-24", "16")
        );
        assert!(partition_of("events", &format!("{DIR}notes.txt")).is_none());
        assert!(partition_of("events", "events/subject=a/dt=b/x.parquet").is_none());
        assert!(partition_of("events", "other/subject=a/dt=b/hour=1/x.parquet").is_none());
        assert!(partition_of("events", "events/subject=a/dt=b/hour=1/deep/x.parquet").is_none());
        assert!(partition_of("", "subject=a/dt=b/hour=01/x.parquet").is_some());
    }

    #[test]
    fn filters_narrow_the_listing_and_match_escaped_subjects() {
        let all = Filter::default();
        assert_eq!(all.list_prefix("/events/"), "events/");
        let f = Filter {
            subject: Some("a b".into()),
            dt: Some("2025-11-24".into()),
            hour: Some("16".into()),
        };
        assert_eq!(
            f.list_prefix("events"),
            "events/subject=a%20b/dt=2025-11-24/hour=16/"
        );
        let hour_only = Filter {
            hour: Some("16".into()),
            ..Filter::default()
        };
        assert_eq!(hour_only.list_prefix("events"), "events/");
        let (p, _) = partition_of(
            "events",
            "events/subject=a%20b/dt=2025-11-24/hour=16/x.parquet",
        )
        .unwrap();
        assert!(f.matches(&p));
        assert!(hour_only.matches(&p));
        assert!(
            !Filter {
                hour: Some("17".into()),
                ..Filter::default()
            }
            .matches(&p)
        );
    }

    #[test]
    fn objects_named_by_a_present_compacted_object_are_not_live() {
        let first = info("a.parquet").key;
        let (partition, _) = partition_of("events", &first).unwrap();
        let objects = vec![
            info("a.parquet"),
            info("b.parquet"),
            info("c.parquet"),
            info("compacted-x.parquet"),
        ];
        let lists = BTreeMap::from([
            (
                info("compacted-x.parquet").key,
                vec![
                    "a.parquet".to_owned(),
                    "b.parquet".to_owned(),
                    "gone.parquet".to_owned(),
                ],
            ),
            // A list of an object that no longer exists counts for nothing.
            (
                info("compacted-old.parquet").key,
                vec!["c.parquet".to_owned()],
            ),
        ]);
        let p = PartitionObjects::new(partition, objects, &lists);
        let live: Vec<&str> = p.live().map(|o| o.key.as_str()).collect();
        assert_eq!(
            live,
            vec![info("c.parquet").key, info("compacted-x.parquet").key]
        );
        assert_eq!(
            p.replaced_keys(),
            vec![info("a.parquet").key, info("b.parquet").key]
        );
        assert!(is_compacted(&info("compacted-x.parquet").key));
        assert!(!is_compacted(&info("a.parquet").key));
    }
}
