//! The pure batching logic: which queued records go into the next PutRecords request.
//!
//! Records queue per *lane* (the partition key for plain records, the target shard when
//! aggregating). A lane has at most one unit in flight or waiting for its retry; while it has,
//! the lane is *busy* and its later records wait, which is what keeps order per key across
//! partial failures. Lanes that are not busy and have records are *ready*, in the order they
//! became so. A request is cut when the ready records fill it, when the oldest ready record has
//! lingered long enough, when a retry is due, or when the caller forces it (flush, close).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use riffle_codec::kpl::Aggregator;
use riffle_codec::{Origin, stamp_origin, stamped_growth};
use tokio::sync::OwnedSemaphorePermit;

use crate::{FailedRecord, PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS};

/// One user record, framed, waiting to be put.
#[derive(Debug)]
pub(crate) struct Record {
    /// Arrival order at the background task.
    pub seq: u64,
    pub partition_key: String,
    pub event_id: Option<String>,
    pub data: Vec<u8>,
    pub enqueued: Instant,
    /// Buffer space it holds; released when the record is dropped.
    pub hold: Vec<OwnedSemaphorePermit>,
    /// An envelope naming no origin, to be stamped with its lane's channel when it is put.
    pub stamp: bool,
    /// The origin id an envelope named when it was handed in (a record given up on and sent
    /// again): its channel ends where a unit of it is given up on again.
    pub origin: Option<String>,
}

impl Record {
    /// The size Kinesis counts: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// What one PutRecords entry carries: one plain record, or an aggregate of several.
#[derive(Debug)]
pub(crate) struct Unit {
    pub lane: u64,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// The user records inside. A plain unit's only member has lent its data to `data`.
    pub members: Vec<Record>,
    pub aggregated: bool,
    /// Attempts made so far.
    pub attempts: u32,
}

impl Unit {
    /// The entry's size as Kinesis counts it.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Its user records, given up on with `error`.
    pub fn into_failed(self, error: &riffle_aws::AwsError) -> Vec<FailedRecord> {
        let mut data = Some(self.data);
        let aggregated = self.aggregated;
        self.members
            .into_iter()
            .map(|m| FailedRecord {
                event_id: m.event_id,
                partition_key: m.partition_key,
                data: if aggregated {
                    m.data
                } else {
                    data.take().unwrap_or_default()
                },
                error: error.clone(),
            })
            .collect()
    }
}

/// How records become entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packing {
    /// One record per entry; a lane is a partition key.
    Plain,
    /// KPL aggregates of at most `max_bytes` (data plus key; compressed after, when
    /// `compress`: ADR 0022); a lane is a shard.
    Aggregate { max_bytes: usize, compress: bool },
}

/// The origins a producer stamps (ADR 0010): one channel per lane, `<producer>/<lane>.<epoch>`,
/// whose sequence counts the records in the order they are put. A lane has one unit in flight
/// at a time, so a channel's records reach every shard in order. When a unit is given up on,
/// its lane moves to a new epoch, a new channel: the failed records keep their stamps, so a
/// caller re-sending them lands them above their channel's mark (nothing later of that channel
/// was put), and the lane's later records do not wait for that re-send.
#[derive(Debug)]
pub(crate) struct Origins {
    producer: String,
    /// Per lane: its epoch and the next sequence. Kept when a lane empties, since a lane that
    /// starts over at sequence 1 would be below its own mark.
    channels: HashMap<u64, (u32, u64)>,
}

impl Origins {
    /// Stamps for `producer`, an id no other producer (nor an earlier run) uses.
    pub fn new(producer: String) -> Self {
        Origins {
            producer,
            channels: HashMap::new(),
        }
    }

    /// The origin the next record of `lane` gets.
    fn next(&self, lane: u64) -> Origin {
        let (epoch, seq) = self.channels.get(&lane).copied().unwrap_or((0, 1));
        Origin {
            id: format!("{}/{lane}.{epoch}", self.producer),
            seq: seq.to_string(),
            sub: 0,
        }
    }

    /// Stamps `record` (if it asks for it) with the next origin of `lane`.
    fn stamp(&mut self, lane: u64, record: &mut Record) {
        if !record.stamp {
            return;
        }
        stamp_origin(&mut record.data, &self.next(lane));
        record.stamp = false;
        self.channels.entry(lane).or_insert((0, 1)).1 += 1;
    }

    /// What stamping `record` on `lane` would add to it.
    fn growth(&self, lane: u64, record: &Record) -> usize {
        if record.stamp {
            stamped_growth(&self.next(lane))
        } else {
            0
        }
    }

    /// A unit of `lane` was given up on: the lane goes on under a new channel.
    pub fn abandon(&mut self, lane: u64) {
        let channel = self.channels.entry(lane).or_insert((0, 1));
        *channel = (channel.0 + 1, 1);
    }
}

#[derive(Debug, Default)]
struct Lane {
    queue: VecDeque<Record>,
    bytes: usize,
    busy: bool,
}

/// The queue of records not yet put, and the units waiting for a retry.
#[derive(Debug)]
pub(crate) struct Scheduler {
    packing: Packing,
    linger: Duration,
    lanes: HashMap<u64, Lane>,
    ready: VecDeque<u64>,
    /// Enqueue time of the oldest head among ready lanes.
    oldest_ready: Option<Instant>,
    /// Sum of head sizes of ready lanes (what a plain request could take now).
    ready_head_bytes: usize,
    retries: Vec<(Instant, Unit)>,
    /// The origins stamped, if the producer stamps them.
    pub origins: Option<Origins>,
}

impl Scheduler {
    pub fn new(packing: Packing, linger: Duration, origins: Option<Origins>) -> Self {
        Scheduler {
            origins,
            packing,
            linger,
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            oldest_ready: None,
            ready_head_bytes: 0,
            retries: Vec::new(),
        }
    }

    /// Queues `record` on `lane`, behind that lane's earlier records.
    pub fn push(&mut self, lane: u64, record: Record) {
        let state = self.lanes.entry(lane).or_default();
        let size = record.size();
        let enqueued = record.enqueued;
        let became_ready = state.queue.is_empty() && !state.busy;
        state.bytes += size;
        state.queue.push_back(record);
        if became_ready {
            self.ready.push_back(lane);
            self.ready_head_bytes += size;
            self.oldest_ready = Some(self.oldest_ready.map_or(enqueued, |t| t.min(enqueued)));
        }
    }

    /// Nothing queued and nothing waiting for a retry.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.lanes.values().all(|l| l.queue.is_empty()) && self.retries.is_empty()
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retries.iter().any(|(due, _)| *due <= now)
    }

    /// Whether a request should go out now.
    pub fn is_ready(&self, now: Instant, force: bool) -> bool {
        if self.retry_due(now) {
            return true;
        }
        if self.ready.is_empty() {
            return false;
        }
        if force || self.oldest_ready.is_some_and(|t| t + self.linger <= now) {
            return true;
        }
        match self.packing {
            Packing::Plain => {
                self.ready.len() >= PUT_RECORDS_MAX_RECORDS
                    || self.ready_head_bytes >= PUT_RECORDS_MAX_BYTES
            }
            Packing::Aggregate { max_bytes, .. } => self
                .ready
                .iter()
                .any(|l| self.lanes.get(l).is_some_and(|s| s.bytes >= max_bytes)),
        }
    }

    /// When [`Scheduler::is_ready`] turns true by itself (linger or a retry's backoff).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let linger = (!self.ready.is_empty())
            .then_some(self.oldest_ready)
            .flatten()
            .map(|t| t + self.linger);
        let retry = self.retries.iter().map(|(due, _)| *due).min();
        match (linger, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next request, within PutRecords' limits, if one should go out now: due retries
    /// first, then one unit per ready lane. The lanes taken are busy until
    /// [`Scheduler::release`].
    pub fn take_request(&mut self, now: Instant, force: bool) -> Option<Vec<Unit>> {
        if !self.is_ready(now, force) {
            return None;
        }
        let mut units: Vec<Unit> = Vec::new();
        let mut bytes = 0;
        self.retries.sort_by_key(|(due, _)| *due);
        let mut i = 0;
        while i < self.retries.len() && units.len() < PUT_RECORDS_MAX_RECORDS {
            let (due, unit) = &self.retries[i];
            if *due > now {
                break;
            }
            if bytes + unit.size() > PUT_RECORDS_MAX_BYTES {
                i += 1;
                continue;
            }
            let (_, unit) = self.retries.remove(i);
            bytes += unit.size();
            units.push(unit);
        }
        while units.len() < PUT_RECORDS_MAX_RECORDS {
            let Some(lane_id) = self.ready.pop_front() else {
                break;
            };
            let room = PUT_RECORDS_MAX_BYTES - bytes;
            let Some(head_size) = self
                .lanes
                .get(&lane_id)
                .and_then(|l| l.queue.front())
                .map(Record::size)
            else {
                // Not reachable (a ready lane has records), but a lane without any must not
                // stay ready: the task would wake for it forever.
                continue;
            };
            match self.take_unit(lane_id, room) {
                Some(unit) => {
                    self.ready_head_bytes = self.ready_head_bytes.saturating_sub(head_size);
                    bytes += unit.size();
                    units.push(unit);
                }
                None => {
                    // Its head does not fit what is left of this request: first in the next.
                    self.ready.push_front(lane_id);
                    break;
                }
            }
        }
        self.oldest_ready = self
            .ready
            .iter()
            .filter_map(|l| self.lanes.get(l).and_then(|s| s.queue.front()))
            .map(|r| r.enqueued)
            .min();
        (!units.is_empty()).then_some(units)
    }

    /// Takes the next unit of `lane_id` if it fits in `room` bytes, and marks the lane busy.
    fn take_unit(&mut self, lane_id: u64, room: usize) -> Option<Unit> {
        let lane = self.lanes.get_mut(&lane_id)?;
        let origins = &mut self.origins;
        let growth = |origins: &Option<Origins>, r: &Record| {
            origins.as_ref().map_or(0, |o| o.growth(lane_id, r))
        };
        let head = lane.queue.front()?;
        if head.size() + growth(origins, head) > room {
            return None;
        }
        let plain = |lane: &mut Lane, origins: &mut Option<Origins>| {
            let mut record = lane.queue.pop_front()?;
            lane.bytes = lane.bytes.saturating_sub(record.size());
            if let Some(o) = origins {
                o.stamp(lane_id, &mut record);
            }
            let data = std::mem::take(&mut record.data);
            Some(Unit {
                lane: lane_id,
                partition_key: record.partition_key.clone(),
                data,
                members: vec![record],
                aggregated: false,
                attempts: 0,
            })
        };
        let unit = match self.packing {
            Packing::Plain => plain(lane, origins),
            Packing::Aggregate {
                max_bytes,
                compress,
            } => {
                let limit = max_bytes.min(room);
                let key = head.partition_key.clone();
                let mut agg = Aggregator::new();
                let mut members = Vec::new();
                while let Some(r) = lane.queue.front() {
                    // The size it will have once stamped: the stamp goes on only if it fits,
                    // so a record left for the next unit takes the next sequence then.
                    let size = agg.size_with(&r.partition_key, &r.data) + growth(origins, r);
                    if size + key.len() > limit {
                        break;
                    }
                    if let Some(mut r) = lane.queue.pop_front() {
                        lane.bytes = lane.bytes.saturating_sub(r.size());
                        if let Some(o) = origins.as_mut() {
                            o.stamp(lane_id, &mut r);
                        }
                        agg.add(&r.partition_key, None, &r.data);
                        members.push(r);
                    }
                }
                match members.len() {
                    // Too big to wrap (or alone): a plain record, which consumers take too.
                    0 => plain(lane, origins),
                    1 => {
                        for r in members.into_iter().rev() {
                            lane.bytes += r.size();
                            lane.queue.push_front(r);
                        }
                        plain(lane, origins)
                    }
                    _ => Some(Unit {
                        lane: lane_id,
                        partition_key: key,
                        data: if compress {
                            riffle_codec::kpl::compress(agg.finish())
                        } else {
                            agg.finish()
                        },
                        members,
                        aggregated: true,
                        attempts: 0,
                    }),
                }
            }
        };
        if unit.is_some() {
            lane.busy = true;
        }
        unit
    }

    /// Takes out of `lane_id`'s queue (busy: its unit was just given up on) every record
    /// naming one of `origins`, in order: sent after the failed unit, they would land above
    /// it on the channel and its re-send would then be dropped as a copy. They fail with it.
    pub fn take_channel_followers(&mut self, lane_id: u64, origins: &[String]) -> Vec<Record> {
        let Some(lane) = self.lanes.get_mut(&lane_id) else {
            return Vec::new();
        };
        let (followers, kept): (VecDeque<Record>, VecDeque<Record>) =
            std::mem::take(&mut lane.queue)
                .into_iter()
                .partition(|r| r.origin.as_ref().is_some_and(|o| origins.contains(o)));
        lane.queue = kept;
        for r in &followers {
            lane.bytes = lane.bytes.saturating_sub(r.size());
        }
        followers.into()
    }

    /// Parks `unit` until `due`; its lane stays busy, so nothing behind it overtakes it.
    pub fn retry_later(&mut self, unit: Unit, due: Instant) {
        self.retries.push((due, unit));
    }

    /// The lane's unit is done (put, or given up on): its next record may go.
    pub fn release(&mut self, lane_id: u64) {
        let Some(lane) = self.lanes.get_mut(&lane_id) else {
            return;
        };
        lane.busy = false;
        match lane.queue.front() {
            Some(head) => {
                let (size, enqueued) = (head.size(), head.enqueued);
                self.ready.push_back(lane_id);
                self.ready_head_bytes += size;
                self.oldest_ready = Some(self.oldest_ready.map_or(enqueued, |t| t.min(enqueued)));
            }
            None => {
                self.lanes.remove(&lane_id);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use riffle_codec::kpl::deaggregate;

    const LINGER: Duration = Duration::from_millis(50);

    fn rec(seq: u64, key: &str, len: usize, at: Instant) -> Record {
        Record {
            seq,
            partition_key: key.to_owned(),
            event_id: None,
            data: vec![seq as u8; len],
            enqueued: at,
            hold: Vec::new(),
            stamp: false,
            origin: None,
        }
    }

    fn seqs(units: &[Unit]) -> Vec<Vec<u64>> {
        units
            .iter()
            .map(|u| u.members.iter().map(|m| m.seq).collect())
            .collect()
    }

    fn lane(key: &str) -> u64 {
        key.bytes().map(u64::from).sum()
    }

    #[test]
    fn waits_for_linger_unless_forced_or_full() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        assert!(s.take_request(t0, true).is_none(), "nothing queued");
        s.push(lane("a"), rec(0, "a", 10, t0));
        assert!(s.take_request(t0, false).is_none());
        assert_eq!(s.next_wakeup(), Some(t0 + LINGER));
        assert!(s.take_request(t0 + LINGER, false).is_some());
        s.release(lane("a"));
        assert!(s.is_idle());

        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        s.push(1, rec(0, "a", 10, t0));
        assert_eq!(seqs(&s.take_request(t0, true).unwrap()), vec![vec![0]]);

        // A full request's worth of distinct keys goes at once.
        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        for i in 0..PUT_RECORDS_MAX_RECORDS as u64 {
            s.push(i, rec(i, &format!("k{i}"), 10, t0));
        }
        assert_eq!(s.take_request(t0, false).unwrap().len(), 500);
    }

    #[test]
    fn one_record_per_key_in_flight_and_order_kept_through_retries() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        // a0 b1 a2 c3 a4
        for (seq, key) in [(0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "a")] {
            s.push(lane(key), rec(seq, key, 10, t0));
        }
        let first = s.take_request(t0, true).unwrap();
        assert_eq!(seqs(&first), vec![vec![0], vec![1], vec![3]]);
        // Every lane is busy: nothing more may go, even forced.
        assert!(s.take_request(t0, true).is_none());
        // a0 is throttled, b1 and c3 are put.
        let mut first = first.into_iter();
        let mut a0 = first.next().unwrap();
        for unit in first {
            s.release(unit.lane);
        }
        a0.attempts += 1;
        let due = t0 + Duration::from_millis(30);
        s.retry_later(a0, due);
        // a2 must not overtake a0 while it waits for its retry.
        assert!(s.take_request(t0, true).is_none());
        assert_eq!(s.next_wakeup(), Some(due));
        let retry = s.take_request(due, false).unwrap();
        assert_eq!(seqs(&retry), vec![vec![0]]);
        assert_eq!(retry[0].attempts, 1);
        s.release(lane("a"));
        assert_eq!(seqs(&s.take_request(due, true).unwrap()), vec![vec![2]]);
        s.release(lane("a"));
        assert_eq!(seqs(&s.take_request(due, true).unwrap()), vec![vec![4]]);
        s.release(lane("a"));
        assert!(s.is_idle());
    }

    #[test]
    fn requests_stay_within_count_and_byte_limits() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        for i in 0..1200u64 {
            s.push(i, rec(i, &format!("k{i}"), 10, t0));
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| s.take_request(t0, true))
            .map(|r| r.len())
            .collect();
        assert_eq!(sizes, vec![500, 500, 200]);

        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        for i in 0..12u64 {
            s.push(i, rec(i, &format!("k{i}"), crate::RECORD_MAX_BYTES - 3, t0));
        }
        let mut total = 0;
        while let Some(r) = s.take_request(t0, true) {
            assert!(r.iter().map(Unit::size).sum::<usize>() <= PUT_RECORDS_MAX_BYTES);
            total += r.len();
        }
        assert_eq!(total, 12);
    }

    #[test]
    fn aggregates_pack_a_shard_in_order_within_the_size() {
        for compress in [false, true] {
            aggregates_pack(compress);
        }
    }

    fn aggregates_pack(compress: bool) {
        let t0 = Instant::now();
        let max = 4096;
        let mut s = Scheduler::new(
            Packing::Aggregate {
                max_bytes: max,
                compress,
            },
            LINGER,
            None,
        );
        for i in 0..100u64 {
            let key = format!("k{}", i % 7);
            s.push(i % 2, rec(i, &key, 100, t0));
        }
        // A record too big to wrap goes as a plain record.
        s.push(1, rec(100, "big", max, t0));
        // Ready before the linger: one shard holds more than an aggregate's worth.
        assert!(s.is_ready(t0, false));
        let mut order: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut plain = 0;
        while let Some(request) = s.take_request(t0, true) {
            let lanes: Vec<u64> = request.iter().map(|u| u.lane).collect();
            let mut dedup = lanes.clone();
            dedup.sort_unstable();
            dedup.dedup();
            assert_eq!(dedup.len(), lanes.len(), "one unit per shard per request");
            for unit in request {
                if unit.aggregated {
                    assert!(unit.size() <= max, "{}", unit.size());
                    // Records of repeated bytes: compressed, far below the plain size.
                    assert_eq!(riffle_codec::kpl::is_compressed(&unit.data), compress);
                    let opened = riffle_codec::kpl::open(&unit.data);
                    let subs = riffle_codec::kpl::records_of(&opened).unwrap();
                    assert_eq!(subs.len(), unit.members.len());
                    for (sub, m) in subs.iter().zip(&unit.members) {
                        assert_eq!(sub.partition_key, m.partition_key);
                        assert_eq!(sub.data, m.data.as_slice());
                    }
                } else {
                    plain += 1;
                }
                order
                    .entry(unit.lane)
                    .or_default()
                    .extend(unit.members.iter().map(|m| m.seq));
                s.release(unit.lane);
            }
        }
        assert!(s.is_idle());
        assert_eq!(plain, 1);
        let evens: Vec<u64> = (0..100).step_by(2).collect();
        let mut odds: Vec<u64> = (1..100).step_by(2).collect();
        odds.push(100);
        assert_eq!(order[&0], evens);
        assert_eq!(order[&1], odds);
    }

    /// An envelope naming no origin, asking to be stamped.
    fn envelope(seq: u64, key: &str, at: Instant) -> Record {
        let codec = riffle_codec::EnvelopeCodec::new(1).unwrap();
        let data = crate::ProducerEvent::new("s", "x", 2, key, vec![0; 40])
            .with_event_id(format!("e{seq}"))
            .encode(&codec, 0)
            .unwrap()
            .2;
        Record {
            stamp: true,
            data,
            ..rec(seq, key, 0, at)
        }
    }

    /// The origins (id, seq) inside a unit, in order.
    fn origins_of(unit: &Unit) -> Vec<(String, String)> {
        let codec = riffle_codec::EnvelopeCodec::new(1).unwrap();
        let datas: Vec<Vec<u8>> = if unit.aggregated {
            deaggregate(&unit.data)
                .unwrap()
                .iter()
                .map(|r| r.data.to_vec())
                .collect()
        } else {
            vec![unit.data.clone()]
        };
        datas
            .iter()
            .map(|d| {
                let o = codec.decode(d).unwrap().origin.unwrap();
                (o.id, o.seq)
            })
            .collect()
    }

    #[test]
    fn origins_are_stamped_per_lane_in_put_order_and_a_failure_starts_a_new_channel() {
        let t0 = Instant::now();
        let size = envelope(0, "k", t0).size();
        // Room for a few stamped records per aggregate, not for all ten of a lane.
        let max = 3 * (size + 60) + 40;
        let origins = Origins::new("p".into());
        let mut s = Scheduler::new(
            Packing::Aggregate {
                max_bytes: max,
                compress: false,
            },
            LINGER,
            Some(origins),
        );
        for i in 0..20u64 {
            s.push(i % 2, envelope(i, &format!("k{}", i % 2), t0));
        }
        let first = s.take_request(t0, true).unwrap();
        assert_eq!(first.len(), 2, "one unit per lane");
        let stamps: Vec<_> = first.iter().map(origins_of).collect();
        let seqs = |o: &[(String, String)]| o.iter().map(|(_, q)| q.clone()).collect::<Vec<_>>();
        let upto = |from: usize, to: usize| (from..=to).map(|q| q.to_string()).collect::<Vec<_>>();
        let (n0, n1) = (stamps[0].len(), stamps[1].len());
        assert!((2..10).contains(&n0), "{n0} records in the first aggregate");
        assert_eq!(seqs(&stamps[0]), upto(1, n0));
        assert!(stamps[0].iter().all(|(id, _)| id == "p/0.0"));
        assert!(stamps[1].iter().all(|(id, _)| id == "p/1.0"));
        // The records left behind were not stamped: lane 0 goes on from n0 + 1.
        let mut first = first.into_iter();
        let lane0 = first.next().unwrap();
        let mut lane1 = first.next().unwrap();
        s.release(lane0.lane);
        // Lane 1's unit is retried with the same stamps, then given up on.
        lane1.attempts += 1;
        s.retry_later(lane1, t0);
        let mut rest: HashMap<u64, Vec<(String, String)>> = HashMap::new();
        let mut lane1 = None;
        for unit in s.take_request(t0, true).unwrap() {
            if unit.lane == 1 {
                lane1 = Some(unit);
            } else {
                rest.entry(unit.lane).or_default().extend(origins_of(&unit));
                s.release(unit.lane);
            }
        }
        let lane1 = lane1.unwrap();
        assert_eq!(origins_of(&lane1), stamps[1]);
        let failed = lane1.into_failed(&riffle_aws::AwsError::Entry {
            code: "InternalFailure".into(),
            message: String::new(),
        });
        s.origins.as_mut().unwrap().abandon(1);
        s.release(1);
        // The failed records keep their stamps, for a re-send that lands them in place.
        assert!(failed.iter().all(|f| {
            !riffle_codec::EnvelopeCodec::new(1)
                .unwrap()
                .names_no_origin(&f.data)
        }));
        while let Some(request) = s.take_request(t0, true) {
            for unit in request {
                rest.entry(unit.lane).or_default().extend(origins_of(&unit));
                s.release(unit.lane);
            }
        }
        assert_eq!(seqs(&rest[&0]), upto(n0 + 1, 10));
        assert!(rest[&0].iter().all(|(id, _)| id == "p/0.0"));
        assert_eq!(seqs(&rest[&1]), upto(1, 10 - n1), "a new channel");
        assert!(rest[&1].iter().all(|(id, _)| id == "p/1.1"));
        // A lane that empties and fills again goes on with its channel, not from 1.
        s.push(0, envelope(9, "k0", t0));
        let again = s.take_request(t0, true).unwrap();
        assert_eq!(
            origins_of(&again[0]),
            [("p/0.0".to_string(), "11".to_string())]
        );
    }

    #[test]
    fn records_sent_again_under_a_failed_channel_leave_with_it() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Packing::Plain, LINGER, None);
        let resent = |seq: u64, origin: &str| Record {
            origin: Some(origin.to_owned()),
            ..rec(seq, "k", 10, t0)
        };
        s.push(7, resent(0, "p/7.0"));
        let unit = s.take_request(t0, true).unwrap().remove(0);
        // Behind it: two more of that channel, one new record, one of another channel.
        s.push(7, resent(1, "p/7.0"));
        s.push(7, rec(2, "k", 10, t0));
        s.push(7, resent(3, "p/7.0"));
        s.push(7, resent(4, "q/7.0"));
        // The unit is given up on: the followers of its channel go with it, in order.
        let followers = s.take_channel_followers(7, &["p/7.0".to_owned()]);
        assert_eq!(
            followers.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        drop(unit);
        s.release(7);
        let mut rest = Vec::new();
        while let Some(request) = s.take_request(t0, true) {
            for unit in request {
                rest.extend(unit.members.iter().map(|m| m.seq));
                s.release(unit.lane);
            }
        }
        assert_eq!(rest, vec![2, 4]);
        assert!(s.is_idle());
    }
}
