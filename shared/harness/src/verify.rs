//! Compares what the pipeline made with what the generator says it must make.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_archive::ArchivedRow;
use riffle_loadtest::{GroundTruth, Totals};
use riffle_stage::RejectMessage;

/// What the pipeline produced, read back from the view, the archive and the rejects queue.
#[derive(Debug, Default)]
pub struct Outcome {
    /// View items by (agg_key, window_start).
    pub view: BTreeMap<(String, i64), Totals>,
    /// View items that could not be parsed.
    pub corrupt_view_items: usize,
    /// Archived rows.
    pub rows: Vec<ArchivedRow>,
    /// Archive objects.
    pub objects: usize,
    /// Messages on the rejects queue.
    pub rejects: Vec<RejectMessage>,
}

impl Outcome {
    /// Builds the view map from raw DynamoDB items.
    pub fn with_view_items(mut self, items: &[HashMap<String, AttributeValue>]) -> Self {
        for item in items {
            match riffle_view::parse_item(item) {
                Ok(row) => {
                    let a = row.aggregate;
                    self.view.insert(
                        (row.key.agg_key, row.key.window_start),
                        Totals {
                            count: u64::try_from(a.count).unwrap_or(0),
                            sum: a.sum,
                            min: a.min,
                            max: a.max,
                        },
                    );
                }
                Err(_) => self.corrupt_view_items += 1,
            }
        }
        self
    }

    /// Rejects per reason code.
    pub fn rejects_by_code(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for r in &self.rejects {
            *by.entry(r.code.clone()).or_default() += 1;
        }
        by
    }
}

/// Every difference between `outcome` and `truth`; empty means the pipeline was exact.
pub fn differences(truth: &GroundTruth, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if outcome.corrupt_view_items > 0 {
        problems.push(format!(
            "{} view items unreadable",
            outcome.corrupt_view_items
        ));
    }
    problems.extend(view_differences(truth, outcome));

    let archived = archived_per_event(&outcome.rows);
    let doubled = archived.values().filter(|n| **n > 1).count();
    if doubled > 0 {
        problems.push(format!("{doubled} events archived more than once"));
    }
    let valid = truth.valid_event_ids();
    let lost: Vec<_> = valid
        .iter()
        .filter(|id| !archived.contains_key(id.as_str()))
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} valid events missing from the archive, e.g. {:?}",
            lost.len(),
            lost.first()
        ));
    }
    let stray = archived.keys().filter(|id| !valid.contains(**id)).count();
    if stray > 0 {
        problems.push(format!(
            "{stray} archived events that should have been rejected"
        ));
    }

    let got = outcome.rejects_by_code();
    if &got != truth.rejects_by_code() {
        problems.push(format!(
            "rejects by code: got {got:?}, expected {:?}",
            truth.rejects_by_code()
        ));
    }
    for r in &outcome.rejects {
        if let Some(id) = &r.event_id
            && let Some(code) = truth.rejected_event_ids().get(id)
            && *code != r.code
        {
            problems.push(format!(
                "event {id} rejected as {}, expected {code}",
                r.code
            ));
        }
        if r.data().map_or(true, |d| d.is_empty()) && r.code != "empty" {
            problems.push(format!(
                "reject {} lost its original bytes",
                r.sequence_number
            ));
        }
    }
    problems
}

/// Every view item that is missing, unexpected, or differs from the ground truth.
pub fn view_differences(truth: &GroundTruth, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = truth.view();
    for (key, want) in expected {
        match outcome.view.get(key) {
            None => problems.push(format!("view item {key:?} missing (expected {want:?})")),
            Some(got) if !got.approx_eq(want) => {
                problems.push(format!("view item {key:?}: got {got:?}, expected {want:?}"));
            }
            Some(_) => {}
        }
    }
    for key in outcome.view.keys().filter(|k| !expected.contains_key(*k)) {
        problems.push(format!("unexpected view item {key:?}"));
    }
    problems
}

/// Archived rows per event id: 1 is right, more is an event archived more than once.
pub fn archived_per_event(rows: &[ArchivedRow]) -> BTreeMap<&str, u32> {
    let mut archived: BTreeMap<&str, u32> = BTreeMap::new();
    for row in rows {
        *archived.entry(row.event_id.as_str()).or_default() += 1;
    }
    archived
}

/// Percentiles (p50, p95, p99) of a set of millisecond latencies.
pub fn percentiles(mut values: Vec<i64>) -> Option<(i64, i64, i64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let at = |p: usize| values[((values.len() - 1) * p) / 100];
    Some((at(50), at(95), at(99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        assert_eq!(percentiles(vec![]), None);
        assert_eq!(percentiles((1..=100).collect()), Some((50, 95, 99)));
        assert_eq!(percentiles(vec![7]), Some((7, 7, 7)));
    }
}
