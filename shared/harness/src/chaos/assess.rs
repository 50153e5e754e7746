//! Judging a chaos run: the view, the archive and the queues read back and held against the
//! ground truth (nothing lost, nothing doubled, every poison record accounted for once).

use crate::verify::{self, Outcome};
use riffle_codec::EnvelopeCodec;
use riffle_loadtest::{Expected, GroundTruth};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

/// The headline numbers of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Valid events put.
    pub valid: u64,
    /// Poison events put.
    pub poison: u64,
    /// View counts short of the truth, summed over items (dead-lettered events excused).
    pub lost_view: u64,
    /// Valid events in neither the archive nor a queue that could excuse them.
    pub lost_archive: u64,
    /// View counts above the truth, summed over items.
    pub doubled_view: u64,
    /// Archive rows beyond one per event.
    pub doubled_archive_rows: u64,
    /// Events with more than one archive row.
    pub doubled_archive_events: u64,
    /// View items missing, unexpected or different from the truth.
    pub view_differences: u64,
    /// Archive rows.
    pub archive_rows: u64,
    /// Archive rows of events that are not valid events of this run.
    pub stray_archive_rows: u64,
    /// Messages read off the rejects queue (records, redeliveries included).
    pub reject_messages: u64,
    /// Distinct records on the rejects queue.
    pub rejects_distinct: u64,
    /// Distinct records on the dead-letter queues.
    pub dead_lettered: u64,
    /// Poison records on the rejects or a dead-letter queue (distinct).
    pub poison_accounted: u64,
    /// Poison records on no queue.
    pub poison_missing: u64,
    /// Valid events on the rejects or a dead-letter queue.
    pub valid_on_queues: u64,
    /// Queue records that name no event of this run.
    pub unidentified_on_queues: u64,
    /// Rejects whose code is not the one the generator expects.
    pub wrong_codes: u64,
}

impl Figures {
    /// Events lost, over view and archive.
    pub fn lost(&self) -> u64 {
        self.lost_view + self.lost_archive
    }

    /// Events counted or stored twice, over view and archive.
    pub fn doubled(&self) -> u64 {
        self.doubled_view + self.doubled_archive_rows
    }
}

/// What the run knows of every event it put.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) truth: GroundTruth,
    /// Per event: its id and, for a valid one, its view item.
    pub(super) events: Vec<(String, Option<(String, i64)>)>,
    pub(super) by_id: HashMap<String, usize>,
    /// Events by the hash of their bytes: several where records are byte-identical (a record
    /// truncated to its first bytes carries nothing of its event).
    pub(super) by_bytes: HashMap<u64, Vec<usize>>,
    /// Per event: its partition key, which tells byte-identical records apart.
    pub(super) keys: Vec<String>,
    pub(super) throttled: u64,
    pub(super) retries: u64,
    /// Records put a second time by whole-call re-sends.
    pub(super) resent: u64,
}

pub(super) fn bytes_key(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

impl Ledger {
    pub(super) fn record(&mut self, event: &riffle_loadtest::GeneratedEvent) {
        self.truth.record(event);
        let index = self.events.len();
        let item = match &event.expected {
            Expected::Valid {
                agg_key,
                window_start,
                ..
            } => Some((agg_key.clone(), *window_start)),
            Expected::Rejected { .. } => None,
        };
        self.events.push((event.event_id.clone(), item));
        self.by_id.insert(event.event_id.clone(), index);
        self.by_bytes
            .entry(bytes_key(&event.record))
            .or_default()
            .push(index);
        self.keys.push(event.partition_key.clone());
    }

    pub(super) fn is_valid(&self, index: usize) -> bool {
        self.events
            .get(index)
            .is_some_and(|(_, item)| item.is_some())
    }
}

/// Which event a queued record is: by its raw bytes (a record as produced), else by the
/// event id of its envelope.
pub(super) fn identify(ledger: &Ledger, codec: &EnvelopeCodec, data: &[u8]) -> Vec<Option<usize>> {
    let opened = riffle_codec::kpl::open(data);
    if riffle_codec::kpl::is_aggregated(data)
        && let Ok(subs) = riffle_codec::kpl::records_of(&opened)
    {
        return subs
            .iter()
            .flat_map(|sub| identify(ledger, codec, sub.data))
            .collect();
    }
    if let Some(index) = ledger
        .by_bytes
        .get(&bytes_key(data))
        .and_then(|all| all.first())
    {
        return vec![Some(*index)];
    }
    vec![
        codec
            .decode(data)
            .ok()
            .and_then(|envelope| ledger.by_id.get(&envelope.event_id).copied()),
    ]
}

/// The records of one dead-letter message, or why they could not be had.
pub(super) type DeadLetterRecords = Result<Vec<Vec<u8>>, String>;

/// The records a dead-letter message stands for: its own bytes (rejects, parked records) or,
/// for an on-failure message (positions only, as Lambda sends), the records read back from
/// the stream.
pub(super) async fn dead_letter_records(
    kinesis: &aws_sdk_kinesis::Client,
    body: &str,
) -> DeadLetterRecords {
    let message = riffle_cli::dlq::parse_message(body);
    match &message {
        riffle_cli::dlq::DeadLetter::Unreadable(reason) => Err(reason.clone()),
        riffle_cli::dlq::DeadLetter::Rejects(rejects) => Ok(rejects
            .iter()
            .map(|r| r.data().unwrap_or_default())
            .collect()),
        riffle_cli::dlq::DeadLetter::Failure(_) => {
            let ranges =
                riffle_cli::dlq::stream_ranges(&message, &riffle_cli::dlq::Topology::default());
            let read = riffle_cli::dlq::read_ranges(kinesis, &ranges).await?;
            Ok(read.into_iter().flatten().map(|(_, data)| data).collect())
        }
    }
}

/// The figures and the failures of a run, from what was read back.
pub(super) fn assess(
    ledger: &Ledger,
    outcome: &Outcome,
    rejects: &[riffle_stage::RejectMessage],
    dead_letters: &[(&str, DeadLetterRecords)],
    codec: &EnvelopeCodec,
) -> (Figures, Vec<String>) {
    let truth = &ledger.truth;
    let mut failures = Vec::new();
    let mut f = Figures {
        valid: truth.valid(),
        poison: truth.rejected(),
        archive_rows: outcome.rows.len() as u64,
        reject_messages: rejects.len() as u64,
        ..Figures::default()
    };
    let queues = on_queues(ledger, rejects, dead_letters, codec, &mut f, &mut failures);
    // Excuses: a dead-lettered event is accounted for where its stage's queue sits.
    let excused = |index: usize, stage_after: &str| {
        queues.on_dlq.get(&index).is_some_and(|stages| {
            stages
                .iter()
                .any(|s| ["validator", "enricher", stage_after].contains(s))
        })
    };
    count_view(&mut f, ledger, outcome, &excused);
    let view_diffs = verify::view_differences(truth, outcome);
    f.view_differences = view_diffs.len() as u64;
    let archived = verify::archived_per_event(&outcome.rows);
    count_archive(&mut f, ledger, &archived, &excused);
    failures.extend(verdicts(&f, ledger, &archived, view_diffs));
    (f, failures)
}

/// Which events the rejects queue and the dead-letter queues hold.
struct OnQueues<'a> {
    on_dlq: BTreeMap<usize, BTreeSet<&'a str>>,
}

/// Finds every queued record's event (rejects: by bytes, key and place; dead letters: by
/// envelope), counts them into `f`, and notes wrong reject codes and unreadable messages.
fn on_queues<'a>(
    ledger: &Ledger,
    rejects: &[riffle_stage::RejectMessage],
    dead_letters: &[(&'a str, DeadLetterRecords)],
    codec: &EnvelopeCodec,
    f: &mut Figures,
    failures: &mut Vec<String>,
) -> OnQueues<'a> {
    let truth = &ledger.truth;
    let mut on_rejects: BTreeSet<usize> = BTreeSet::new();
    let mut on_dlq: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    let mut unidentified = 0u64;
    // Byte-identical records of one partition key, told apart by where they were on the
    // stream: the n-th distinct (shard, sequence) seen is the n-th such event. A record
    // rejected twice (a retried batch) comes back at the same place and counts once.
    let mut places: HashMap<(u64, &str), Vec<(&str, &str)>> = HashMap::new();
    for r in rejects {
        let data = r.data().unwrap_or_default();
        let twins: Vec<usize> = ledger
            .by_bytes
            .get(&bytes_key(&data))
            .map(|all| {
                all.iter()
                    .copied()
                    .filter(|i| ledger.keys.get(*i).is_some_and(|k| *k == r.partition_key))
                    .collect()
            })
            .unwrap_or_default();
        let found = if let [only] = twins.as_slice() {
            vec![Some(*only)]
        } else if twins.len() > 1 {
            let seen = places
                .entry((bytes_key(&data), r.partition_key.as_str()))
                .or_default();
            let place = (r.shard_id.as_str(), r.sequence_number.as_str());
            let nth = seen.iter().position(|p| *p == place).unwrap_or_else(|| {
                seen.push(place);
                seen.len() - 1
            });
            vec![twins.get(nth).copied()]
        } else {
            identify(ledger, codec, &data)
        };
        match found.as_slice() {
            [Some(index)] => {
                on_rejects.insert(*index);
                if let Some((id, _)) = ledger.events.get(*index)
                    && let Some(code) = truth.rejected_event_ids().get(id)
                    && *code != r.code
                {
                    f.wrong_codes += 1;
                    failures.push(format!(
                        "event {id} rejected as {}, expected {code}",
                        r.code
                    ));
                }
            }
            _ => unidentified += 1,
        }
    }
    for (stage, records) in dead_letters {
        match records {
            Ok(records) => {
                for data in records {
                    for found in identify(ledger, codec, data) {
                        match found {
                            Some(index) => {
                                on_dlq.entry(index).or_default().insert(*stage);
                            }
                            None => unidentified += 1,
                        }
                    }
                }
            }
            Err(e) => {
                unidentified += 1;
                failures.push(format!("{stage} dead-letter message not understood: {e}"));
            }
        }
    }
    f.rejects_distinct = on_rejects.len() as u64;
    f.dead_lettered = on_dlq.len() as u64;
    f.unidentified_on_queues = unidentified;
    let on_queues: BTreeSet<usize> = on_rejects.iter().chain(on_dlq.keys()).copied().collect();
    f.valid_on_queues = on_queues.iter().filter(|i| ledger.is_valid(**i)).count() as u64;
    f.poison_accounted = on_queues.iter().filter(|i| !ledger.is_valid(**i)).count() as u64;
    f.poison_missing = f.poison.saturating_sub(f.poison_accounted);
    OnQueues { on_dlq }
}

/// View counts lost or doubled, per item, events dead-lettered before the view excused.
fn count_view(
    f: &mut Figures,
    ledger: &Ledger,
    outcome: &Outcome,
    excused: &dyn Fn(usize, &str) -> bool,
) {
    let truth = &ledger.truth;
    // View, per item.
    let mut excused_view: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (index, (_, item)) in ledger.events.iter().enumerate() {
        if let Some(item) = item
            && excused(index, "aggregator")
        {
            *excused_view.entry(item.clone()).or_default() += 1;
        }
    }
    for (key, want) in truth.view() {
        let expected = want
            .count
            .saturating_sub(excused_view.get(key).copied().unwrap_or(0));
        let got = outcome.view.get(key).map_or(0, |t| t.count);
        f.lost_view += expected.saturating_sub(got);
        f.doubled_view += got.saturating_sub(expected);
    }
    for (key, got) in &outcome.view {
        if !truth.view().contains_key(key) {
            f.doubled_view += got.count;
        }
    }
}

/// Archive rows lost, doubled or stray, per event, events dead-lettered before the archive
/// excused.
fn count_archive(
    f: &mut Figures,
    ledger: &Ledger,
    archived: &BTreeMap<&str, u32>,
    excused: &dyn Fn(usize, &str) -> bool,
) {
    // Archive, per event.
    for (id, n) in archived {
        match ledger.by_id.get(*id) {
            Some(index) if ledger.is_valid(*index) => {
                if *n > 1 {
                    f.doubled_archive_events += 1;
                    f.doubled_archive_rows += u64::from(n - 1);
                }
            }
            _ => f.stray_archive_rows += u64::from(*n),
        }
    }
    f.lost_archive = ledger
        .events
        .iter()
        .enumerate()
        .filter(|(index, (id, item))| {
            item.is_some() && !archived.contains_key(id.as_str()) && !excused(*index, "archiver")
        })
        .count() as u64;
}

/// The run's failures, from its figures.
fn verdicts(
    f: &Figures,
    ledger: &Ledger,
    archived: &BTreeMap<&str, u32>,
    view_diffs: Vec<String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if f.lost() > 0 {
        failures.push(format!(
            "lost {}: view counts short by {}, {} valid events missing from the archive",
            f.lost(),
            f.lost_view,
            f.lost_archive
        ));
    }
    if f.doubled() > 0 {
        failures.push(format!(
            "doubled {}: view counts over by {}, {} extra archive rows ({} events archived more than once)",
            f.doubled(),
            f.doubled_view,
            f.doubled_archive_rows,
            f.doubled_archive_events
        ));
    }
    let distinct_archived = archived.len() as u64 - stray_ids(archived, ledger);
    if f.archive_rows != f.valid || distinct_archived != f.valid {
        failures.push(format!(
            "archive rows {} (distinct valid events {distinct_archived}, stray rows {}) != valid events {}",
            f.archive_rows, f.stray_archive_rows, f.valid
        ));
    }
    if f.poison_accounted != f.poison || f.valid_on_queues > 0 || f.unidentified_on_queues > 0 {
        failures.push(format!(
            "rejects + DLQ {} (poison {}, valid events {}, unidentified {}) != poison records {}",
            f.poison_accounted + f.valid_on_queues + f.unidentified_on_queues,
            f.poison_accounted,
            f.valid_on_queues,
            f.unidentified_on_queues,
            f.poison
        ));
    }
    if !view_diffs.is_empty() {
        failures.push(format!(
            "view != ground truth: {} items differ",
            view_diffs.len()
        ));
        failures.extend(view_diffs.into_iter().take(10).map(|d| format!("  {d}")));
    }
    failures
}

pub(super) fn stray_ids(archived: &BTreeMap<&str, u32>, ledger: &Ledger) -> u64 {
    archived
        .keys()
        .filter(|id| !ledger.by_id.get(**id).is_some_and(|i| ledger.is_valid(*i)))
        .count() as u64
}
