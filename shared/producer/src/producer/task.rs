//! The producer's background task: it owns the queue, cuts PutRecords requests while request
//! slots are free, handles their outcomes (acknowledged, retried after a backoff, or given up
//! on), answers flushes and close, prints EMF metrics and keeps the shard map fresh.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle_aws::AwsError;
use riffle_aws::backoff::full_jitter;
use riffle_stage::aggregate::{SHARD_MAP_TTL, ShardMap};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::Stats;
use super::stats::{Counters, emf_delta};
use crate::FailedRecord;
use crate::payload_units;
use crate::port::{EntryResults, PutEntry, PutRecordsPort};
use crate::scheduler::{Origins, Packing, Record, Scheduler, Unit};

/// Per-entry error code for a shard over its write throughput.
const THROTTLED: &str = "ProvisionedThroughputExceededException";
/// Messages handled per wake-up of the task before it looks at requests again.
const DRAIN_BATCH: usize = 1024;
/// Wake-up when nothing is scheduled (the task wakes on messages and replies anyway).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// What a [`Producer`](super::Producer) hands its task.
pub(super) enum Msg {
    Record(Record),
    Flush(oneshot::Sender<Vec<FailedRecord>>),
    Close(oneshot::Sender<Vec<FailedRecord>>),
}

/// The builder's options that shape the task.
pub(super) struct TaskSettings {
    /// Attempts per entry: the first one plus the retries.
    pub(super) max_attempts: u32,
    /// Backoff before the first retry.
    pub(super) backoff_base: Duration,
    /// Backoff ceiling.
    pub(super) backoff_cap: Duration,
    /// PutRecords requests in flight at once.
    pub(super) max_in_flight: usize,
    /// Plain records or KPL aggregates per target shard.
    pub(super) packing: Packing,
    /// How long a record may wait for others to fill its request.
    pub(super) linger: Duration,
    /// The service EMF metrics are printed under, if at all.
    pub(super) emf_service: Option<String>,
    /// How often they are printed.
    pub(super) emf_interval: Duration,
    /// The producer id origins are stamped under, if they are.
    pub(super) origins: Option<String>,
}

/// The background task: owns the queue, cuts requests, handles their outcomes.
pub(super) struct Task<P> {
    port: Arc<P>,
    stream: Arc<str>,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_cap: Duration,
    max_in_flight: usize,
    scheduler: Scheduler,
    /// When aggregating: the shard map and when it was read.
    shard_map: Option<(Instant, ShardMap)>,
    in_flight: JoinSet<Result<EntryResults, AwsError>>,
    requests: HashMap<tokio::task::Id, Vec<Unit>>,
    /// Sequence numbers of records not yet acknowledged or given up on.
    outstanding: BTreeSet<u64>,
    next_seq: u64,
    /// Flush callers and the first sequence number not covered by their flush.
    flushes: Vec<(u64, oneshot::Sender<Vec<FailedRecord>>)>,
    close: Option<oneshot::Sender<Vec<FailedRecord>>>,
    failures: Vec<FailedRecord>,
    stats: Arc<Counters>,
    emf_service: Option<String>,
    emf_interval: Duration,
    emitted: Stats,
    last_emit: Instant,
}

impl<P: PutRecordsPort> Task<P> {
    /// A task putting through `port` to `stream`, with the stream's `shard_map` (just read)
    /// when aggregating.
    pub(super) fn new(
        port: P,
        stream: &str,
        shard_map: Option<ShardMap>,
        stats: Arc<Counters>,
        settings: TaskSettings,
    ) -> Self {
        Task {
            port: Arc::new(port),
            stream: Arc::from(stream),
            max_attempts: settings.max_attempts,
            backoff_base: settings.backoff_base,
            backoff_cap: settings.backoff_cap,
            max_in_flight: settings.max_in_flight,
            scheduler: Scheduler::new(
                settings.packing,
                settings.linger,
                settings.origins.map(Origins::new),
            ),
            shard_map: shard_map.map(|m| (Instant::now(), m)),
            in_flight: JoinSet::new(),
            requests: HashMap::new(),
            outstanding: BTreeSet::new(),
            next_seq: 0,
            flushes: Vec::new(),
            close: None,
            failures: Vec::new(),
            stats,
            emf_service: settings.emf_service,
            emf_interval: settings.emf_interval,
            emitted: Stats::default(),
            last_emit: Instant::now(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut rx_open = true;
        loop {
            let now = Instant::now();
            let force = !self.flushes.is_empty() || self.close.is_some() || !rx_open;
            while self.in_flight.len() < self.max_in_flight {
                match self.scheduler.take_request(now, force) {
                    Some(units) => self.spawn(units),
                    None => break,
                }
            }
            self.answer_flushes();
            if !rx_open && self.outstanding.is_empty() && self.in_flight.is_empty() {
                break;
            }
            // With every request slot taken, only a completion can let anything go.
            let mut wake = if self.in_flight.len() < self.max_in_flight {
                self.scheduler.next_wakeup()
            } else {
                None
            };
            if self.emf_service.is_some() {
                let emf = self.last_emit + self.emf_interval;
                wake = Some(wake.map_or(emf, |w| w.min(emf)));
            }
            let wake = wake.unwrap_or(now + IDLE_WAKE);
            tokio::select! {
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.complete(joined);
                }
                msg = rx.recv(), if rx_open => match msg {
                    Some(msg) => {
                        self.handle(msg, &mut rx);
                        for _ in 0..DRAIN_BATCH {
                            match rx.try_recv() {
                                Ok(msg) => self.handle(msg, &mut rx),
                                Err(_) => break,
                            }
                        }
                    }
                    None => rx_open = false,
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            if self.emf_service.is_some() && self.last_emit.elapsed() >= self.emf_interval {
                self.emit();
            }
            self.refresh_shard_map().await;
        }
        self.answer_flushes();
        self.emit();
        if let Some(close) = self.close.take() {
            let _ = close.send(std::mem::take(&mut self.failures));
        } else if !self.failures.is_empty() {
            tracing::error!(
                failed = self.failures.len(),
                "riffle producer stopped with unreported failed records"
            );
        }
    }

    fn handle(&mut self, msg: Msg, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        match msg {
            Msg::Record(mut record) => {
                record.seq = self.next_seq;
                self.next_seq += 1;
                self.outstanding.insert(record.seq);
                let lane = self.lane_of(&record.partition_key);
                self.scheduler.push(lane, record);
            }
            Msg::Flush(reply) => self.flushes.push((self.next_seq, reply)),
            Msg::Close(reply) => {
                self.close = Some(reply);
                // Senders racing the close get an error; what is already sent is drained.
                rx.close();
            }
        }
    }

    fn lane_of(&self, partition_key: &str) -> u64 {
        match &self.shard_map {
            Some((_, map)) => map.shard_of(partition_key) as u64,
            None => {
                let mut hasher = DefaultHasher::new();
                partition_key.hash(&mut hasher);
                hasher.finish()
            }
        }
    }

    fn spawn(&mut self, units: Vec<Unit>) {
        let entries: Vec<PutEntry> = units
            .iter()
            .map(|u| PutEntry {
                partition_key: u.partition_key.clone(),
                data: u.data.clone(),
            })
            .collect();
        Counters::add(&self.stats.put_requests, 1);
        let port = Arc::clone(&self.port);
        let stream = Arc::clone(&self.stream);
        let handle = self
            .in_flight
            .spawn(async move { port.put_records(&stream, entries).await });
        self.requests.insert(handle.id(), units);
    }

    fn complete(
        &mut self,
        joined: Result<(tokio::task::Id, Result<EntryResults, AwsError>), tokio::task::JoinError>,
    ) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                Err(AwsError::Call {
                    operation: "PutRecords",
                    code: "TaskFailed".to_owned(),
                    message: e.to_string(),
                    retryable: true,
                }),
            ),
        };
        let Some(units) = self.requests.remove(&id) else {
            return;
        };
        let results = match result {
            Ok(results) => results,
            Err(e) => vec![Some(e); units.len()],
        };
        let mut results = results.into_iter();
        let now = Instant::now();
        for mut unit in units {
            let error = results.next().unwrap_or_else(|| {
                Some(AwsError::Entry {
                    code: "InternalFailure".to_owned(),
                    message: "no result for entry".to_owned(),
                })
            });
            let Some(error) = error else {
                self.acknowledge(unit);
                continue;
            };
            if error.code() == Some(THROTTLED) {
                Counters::add(&self.stats.throttled, 1);
            }
            unit.attempts += 1;
            if error.retryable() && unit.attempts < self.max_attempts {
                Counters::add(&self.stats.retries, 1);
                let delay = full_jitter(unit.attempts - 1, self.backoff_base, self.backoff_cap);
                self.scheduler.retry_later(unit, now + delay);
            } else {
                tracing::warn!(
                    error = %error,
                    attempts = unit.attempts,
                    records = unit.members.len(),
                    "giving up on a Kinesis entry"
                );
                let lane = unit.lane;
                if let Some(origins) = &mut self.scheduler.origins {
                    origins.abandon(lane);
                }
                // Records sent again under an origin of theirs end their channel here too.
                let channels: Vec<String> = unit
                    .members
                    .iter()
                    .filter_map(|m| m.origin.clone())
                    .collect();
                let followers = if channels.is_empty() {
                    Vec::new()
                } else {
                    self.scheduler.take_channel_followers(lane, &channels)
                };
                for m in unit.members.iter().chain(&followers) {
                    self.outstanding.remove(&m.seq);
                }
                Counters::add(
                    &self.stats.failed,
                    (unit.members.len() + followers.len()) as u64,
                );
                self.failures.extend(unit.into_failed(&error));
                self.failures
                    .extend(followers.into_iter().map(|r| FailedRecord {
                        event_id: r.event_id,
                        partition_key: r.partition_key,
                        data: r.data,
                        error: error.clone(),
                    }));
                self.scheduler.release(lane);
            }
        }
    }

    fn acknowledge(&mut self, unit: Unit) {
        let user_bytes = if unit.aggregated {
            unit.members.iter().map(Record::size).sum()
        } else {
            unit.size()
        };
        let s = &self.stats;
        Counters::add(&s.kinesis_records, 1);
        Counters::add(&s.aggregates, u64::from(unit.aggregated));
        Counters::add(&s.payload_units, payload_units(unit.size()));
        Counters::add(&s.records, unit.members.len() as u64);
        Counters::add(&s.bytes, user_bytes as u64);
        for m in &unit.members {
            self.outstanding.remove(&m.seq);
        }
        self.scheduler.release(unit.lane);
        // Dropping the unit returns its members' buffer space.
    }

    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let first_open = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let mut answered = false;
        let mut i = 0;
        while i < self.flushes.len() {
            if self.flushes[i].0 <= first_open {
                let (_, reply) = self.flushes.swap_remove(i);
                let _ = reply.send(std::mem::take(&mut self.failures));
                answered = true;
            } else {
                i += 1;
            }
        }
        if answered {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let Some(service) = &self.emf_service else {
            return;
        };
        let now = self.stats.snapshot();
        let mut metrics = emf_delta(service, &self.emitted, &now);
        metrics.flush();
        self.emitted = now;
        self.last_emit = Instant::now();
    }

    async fn refresh_shard_map(&mut self) {
        let Some((read_at, _)) = &self.shard_map else {
            return;
        };
        if read_at.elapsed() < SHARD_MAP_TTL {
            return;
        }
        match self.port.shard_starts(&self.stream).await {
            Ok(starts) if !starts.is_empty() => {
                self.shard_map = Some((Instant::now(), ShardMap::new(starts)));
            }
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "keeping the old shard map");
                }
                if let Some((at, _)) = &mut self.shard_map {
                    *at = Instant::now();
                }
            }
        }
    }
}
