//! What a chaos run does to the pipeline and when: the faults, drawn from the seed
//! ([`schedule`]) with a small deterministic generator, so a seed replays the same run.

use crate::pipeline::STAGES;
use std::time::Duration;

use super::*;

/// A stage that exits by itself this often is broken, not faulted: the run stops.
pub(super) const MAX_SELF_EXITS: usize = 5;

/// The shortest pause before a killed stage is started again.
pub(super) const MIN_RESTART_DELAY: Duration = Duration::from_millis(100);

/// One fault the run made happen.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A stage process killed with SIGKILL and started again.
    Kill {
        /// The stage.
        stage: &'static str,
        /// Seconds since the first put.
        at_secs: f64,
        /// How long it was down.
        down: Duration,
    },
    /// kinesalite stopped and started again on its state.
    KinesisRestart {
        /// Seconds since the first put.
        at_secs: f64,
        /// How long it took.
        took: Duration,
    },
    /// A stage process exited by itself and was started again.
    Exited {
        /// The stage.
        stage: String,
        /// Its exit status.
        status: String,
    },
}

/// A small seeded generator (SplitMix64) for the kill schedule: the same seed, the same
/// schedule, with no dependency for something this simple.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }
}

/// A scheduled fault, in seconds from the first put.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Planned {
    /// Kill this stage, start it again after `delay`.
    Kill {
        /// Seconds from the first put.
        at_secs: f64,
        /// Index into [`STAGES`].
        stage: usize,
        /// Down time.
        delay: Duration,
    },
    /// Restart kinesalite.
    RestartKinesis {
        /// Seconds from the first put.
        at_secs: f64,
    },
}

impl Planned {
    pub(super) fn at_secs(&self) -> f64 {
        match self {
            Planned::Kill { at_secs, .. } | Planned::RestartKinesis { at_secs } => *at_secs,
        }
    }
}

/// The faults of a run, in time order: `kills` kills spread over the chaos window (the
/// production time, stretched so each kill has room for its down time), and the kinesalite
/// restart in its middle.
pub fn schedule(options: &ChaosOptions) -> Vec<Planned> {
    let mut rng = SplitMix::new(options.seed ^ 0x00c4_a05e);
    let produce_secs = options.events as f64 / f64::from(options.rate.max(1));
    let window =
        produce_secs.max(f64::from(options.kills) * options.max_restart_delay.as_secs_f64());
    let span = options
        .max_restart_delay
        .saturating_sub(MIN_RESTART_DELAY)
        .as_secs_f64();
    let mut plan: Vec<Planned> = (0..options.kills)
        .map(|_| Planned::Kill {
            at_secs: window * (0.05 + 0.9 * rng.unit()),
            stage: rng.below(STAGES.len()),
            delay: MIN_RESTART_DELAY + Duration::from_secs_f64(span * rng.unit()),
        })
        .collect();
    if options.restart_kinesis {
        plan.push(Planned::RestartKinesis {
            at_secs: window / 2.0,
        });
    }
    plan.sort_by(|a, b| a.at_secs().total_cmp(&b.at_secs()));
    plan
}
