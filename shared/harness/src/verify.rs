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

/// Every view item that is missing, unexpected, or differs from the ground truth less the
/// events archived as late (ADR 0021: a late event is archived but never in the view; where
/// an item lost late events, its count and sum are checked, as its min and max cannot be
/// taken apart).
pub fn view_differences(truth: &GroundTruth, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = truth.view();
    let late = late_per_item(&outcome.rows);
    for (key, want) in expected {
        let got = outcome.view.get(key);
        match (late.get(key), got) {
            (None, None) => problems.push(format!("view item {key:?} missing (expected {want:?})")),
            (None, Some(got)) if !got.approx_eq(want) => {
                problems.push(format!("view item {key:?}: got {got:?}, expected {want:?}"));
            }
            (None, Some(_)) => {}
            (Some(&(n, sum)), got) => {
                let count = want.count.saturating_sub(n);
                let sum = want.sum - sum;
                let (got_count, got_sum) = got.map_or((0, 0.0), |g| (g.count, g.sum));
                if got_count != count || !riffle_loadtest::approx_eq(got_sum, sum) {
                    problems.push(format!(
                        "view item {key:?}: got {got_count} events summing to {got_sum}, \
                         expected {count} summing to {sum} ({n} came late)"
                    ));
                }
            }
        }
    }
    for key in outcome.view.keys().filter(|k| !expected.contains_key(*k)) {
        problems.push(format!("unexpected view item {key:?}"));
    }
    problems
}

/// Per view item, the events archived as late and their metric sum (each event once).
pub fn late_per_item(rows: &[ArchivedRow]) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut seen = std::collections::HashSet::new();
    let mut out: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.late) {
        if seen.insert(r.event_id.as_str()) {
            let e = out.entry((r.agg_key.clone(), r.window_start)).or_default();
            e.0 += 1;
            e.1 += r.metric;
        }
    }
    out
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use riffle_loadtest::{Expected, Generator, GeneratorConfig, SchemaIds};

    #[test]
    fn late_events_are_expected_out_of_the_view() {
        let ids = SchemaIds {
            envelope: 1,
            order: 2,
            page_view: 3,
            sensor: 4,
        };
        let events = Generator::new(GeneratorConfig::default(), ids)
            .unwrap()
            .batch(300)
            .unwrap();
        let mut truth = GroundTruth::new();
        for e in &events {
            truth.record(e);
        }
        // Two events of one item came late: archived with the flag, never in the view.
        let late: Vec<ArchivedRow> = events
            .iter()
            .filter_map(|e| match &e.expected {
                Expected::Valid {
                    agg_key,
                    window_start,
                    metric,
                    ..
                } => Some(ArchivedRow {
                    event_id: e.event_id.clone(),
                    agg_key: agg_key.clone(),
                    window_start: *window_start,
                    metric: *metric,
                    late: true,
                    ..riffle_archive::testing::sample_row(0)
                }),
                Expected::Rejected { .. } => None,
            })
            .take(2)
            .collect();
        let key = (late[0].agg_key.clone(), late[0].window_start);
        let late: Vec<ArchivedRow> = late
            .into_iter()
            .filter(|r| (r.agg_key.clone(), r.window_start) == key)
            .collect();
        let exact = Outcome {
            view: truth.view().clone(),
            rows: late.clone(),
            ..Outcome::default()
        };
        // The view still holding them is a difference...
        let problems = view_differences(&truth, &exact);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("came late"), "{problems:?}");
        // ... the view without them is right.
        let mut without = exact;
        let item = without.view.get_mut(&key).unwrap();
        for r in &late {
            item.count -= 1;
            item.sum -= r.metric;
        }
        assert_eq!(view_differences(&truth, &without), Vec::<String>::new());
    }

    #[test]
    fn percentiles_pick_by_rank() {
        assert_eq!(percentiles(vec![]), None);
        assert_eq!(percentiles((1..=100).collect()), Some((50, 95, 99)));
        assert_eq!(percentiles(vec![7]), Some((7, 7, 7)));
    }
}
