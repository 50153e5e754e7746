//! The analysts' Athena table is the archive's Parquet schema, column for column, over the
//! archive's key layout, and the events view takes each event once: read from
//! `infra/platform.yaml` as deployed, against `riffle_archive`'s own schema and keys, so
//! neither can change without the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use riffle_archive::key::{DEFAULT_PREFIX, Partition, object_key};
use riffle_archive::table::SCHEMA;
use riffle_plan::template::Template;

/// Hive partition columns of the archive's keys (`subject=/dt=/hour=`).
const PARTITION_COLUMNS: [&str; 3] = ["subject", "dt", "hour"];

fn platform() -> Template {
    let root = riffle_local::project_root().unwrap();
    Template::load(&root.join("infra/platform.yaml")).unwrap()
}

/// (name, Athena type) of each Parquet column, in order.
fn parquet_columns() -> Vec<(String, &'static str)> {
    SCHEMA
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("required") || l.starts_with("optional"))
        .map(|l| {
            let words: Vec<&str> = l.trim_end_matches(';').split_whitespace().collect();
            let (physical, name) = (words[1], words[2]);
            let annotation = words.get(3).copied().unwrap_or("");
            let athena = match (physical, annotation) {
                ("binary", "(STRING)") => "string",
                ("binary", "") => "binary",
                ("int32", "") => "int",
                ("int64", a) if a.starts_with("(TIMESTAMP(MILLIS") => "timestamp",
                ("int64", "") => "bigint",
                ("double", "") => "double",
                ("boolean", "") => "boolean",
                other => panic!("no Athena type for {other:?} in {l}"),
            };
            (name.to_owned(), athena)
        })
        .collect()
}

#[test]
fn the_glue_table_is_the_parquet_schema_over_the_key_layout() {
    let template = platform();
    let tables: Vec<_> = template.resources_of("AWS::Glue::Table").collect();
    assert_eq!(tables.len(), 1, "one raw table");
    let input = tables[0].1.properties.get("TableInput").unwrap();
    let storage = input.get("StorageDescriptor").unwrap();
    let columns: Vec<(String, String)> = storage
        .get("Columns")
        .unwrap()
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.get("Name").unwrap().as_str().unwrap().to_owned(),
                c.get("Type").unwrap().as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // A partition column cannot also be a table column: `subject` comes from the key.
    let expected: Vec<(String, String)> = parquet_columns()
        .into_iter()
        .filter(|(name, _)| !PARTITION_COLUMNS.contains(&name.as_str()))
        .map(|(n, t)| (n, t.to_owned()))
        .collect();
    assert_eq!(columns, expected);
    let partition_keys: Vec<&str> = input
        .get("PartitionKeys")
        .unwrap()
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.get("Name").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(partition_keys, PARTITION_COLUMNS);

    // The projected location names the folder the archiver writes an event's object in.
    let location = input
        .get("Parameters")
        .unwrap()
        .get("storage.location.template")
        .unwrap()
        .get("Fn::Sub")
        .unwrap()
        .as_str()
        .unwrap();
    let partition = Partition::of("com.riffle.web.PageView", 1_764_000_000_000).unwrap();
    let projected = location
        .replace("s3://${ArchiveBucket}/", "")
        .replace("${!subject}", &partition.subject)
        .replace("${!dt}", &partition.dt)
        .replace("${!hour}", &partition.hour);
    let key = object_key(DEFAULT_PREFIX, &partition, "shardId-000000000000", "1", "2");
    assert!(
        key.starts_with(&projected),
        "{key} is not under {projected}"
    );
    assert_eq!(
        key.rsplit_once('/').unwrap().0,
        projected.trim_end_matches('/')
    );
}

#[test]
fn the_events_view_takes_every_column_and_each_event_once() {
    let template = platform();
    let queries: Vec<_> = template.resources_of("AWS::Athena::NamedQuery").collect();
    assert_eq!(queries.len(), 1);
    let sql = queries[0]
        .1
        .properties
        .get("QueryString")
        .unwrap()
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let select = sql
        .split_once("SELECT ")
        .and_then(|(_, rest)| rest.split_once(" FROM "))
        .unwrap()
        .0;
    // Columns by name: an expression's alias (`coalesce(late, false) AS late` reads the
    // files written before the column existed as not late).
    let mut selected: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in select.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                selected.push(select[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    selected.push(select[start..].trim());
    let selected: Vec<&str> = selected
        .into_iter()
        .map(|c| c.rsplit_once(" AS ").map_or(c, |(_, alias)| alias))
        .collect();
    let mut expected: Vec<String> = parquet_columns()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !PARTITION_COLUMNS.contains(&n.as_str()))
        .collect();
    expected.extend(PARTITION_COLUMNS.map(str::to_owned));
    assert_eq!(selected, expected);
    // One row per event id within its partition (an event's subject and time fix its
    // partition, so this is one row per event), the first archived copy.
    assert!(
        sql.contains(
            "row_number() OVER (PARTITION BY subject, dt, hour, event_id ORDER BY archived_at"
        ),
        "{sql}"
    );
    assert!(sql.ends_with("FROM events_raw) WHERE copy = 1"), "{sql}");
}
