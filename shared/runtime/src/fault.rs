//! Fault injection for fault tests (`riffle chaos`): transient handler errors in the local
//! event source mapping. Off unless `RIFFLE_FAULT_HANDLER_ERROR_RATE` is set; read only by
//! the local mapping ([`crate::run_local`]), never under Lambda.
//!
//! An injected fault fails a batch invocation as a crashed or timed-out function would.
//! Half of the faults strike before the handler runs (nothing happened); the other half
//! after it ran to completion: its effects (records put downstream, view items written,
//! objects archived, rejects sent) are done and its answer is thrown away, so the batch is
//! retried over effects already made. That is the case idempotency has to survive.

use std::future::Future;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{HandlerError, KinesisEventResponse, RuntimeError};

/// Probability (0..=1) that a batch invocation fails transiently.
pub const HANDLER_ERROR_RATE_ENV: &str = "RIFFLE_FAULT_HANDLER_ERROR_RATE";
/// Probability (0..=1) that an invocation is refused as throttled (Lambda's 429 when the
/// function's concurrency is used up): the mapping counts it and tries again later.
pub const INVOKE_THROTTLE_RATE_ENV: &str = "RIFFLE_FAULT_INVOKE_THROTTLE_RATE";
/// Milliseconds every invocation waits before its handler runs (a slow dependency).
pub const HANDLER_DELAY_MS_ENV: &str = "RIFFLE_FAULT_HANDLER_DELAY_MS";
/// How long a throttled invocation waits before the mapping tries again.
const THROTTLE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);
/// Seed of the draws; the process id is mixed in so instances do not fail in step.
pub const FAULT_SEED_ENV: &str = "RIFFLE_FAULT_SEED";

/// When an injected fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// The invocation fails before the handler runs.
    BeforeHandler,
    /// The handler runs to completion; its result is replaced by an error.
    AfterHandler,
}

impl Injected {
    fn error(self) -> HandlerError {
        match self {
            Injected::BeforeHandler => "injected fault: invocation failed before the handler ran",
            Injected::AfterHandler => "injected fault: handler ran, its result was discarded",
        }
        .into()
    }
}

/// Transient handler errors drawn at a fixed rate.
#[derive(Debug)]
pub struct Faults {
    rate: f64,
    rng: Mutex<StdRng>,
}

impl Faults {
    /// Faults at `rate` (0..=1) with seeded draws; `None` when `rate` is 0.
    ///
    /// # Errors
    /// A rate outside 0..=1.
    pub fn new(rate: f64, seed: u64) -> Result<Option<Faults>, RuntimeError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(RuntimeError::Config(format!(
                "{HANDLER_ERROR_RATE_ENV}={rate} is not within 0..=1"
            )));
        }
        Ok((rate > 0.0).then(|| Faults {
            rate,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }))
    }

    /// From [`HANDLER_ERROR_RATE_ENV`] and [`FAULT_SEED_ENV`]; `None` when unset or 0.
    ///
    /// # Errors
    /// A value that is not a number within 0..=1, or a seed that is not a number.
    pub fn from_env() -> Result<Option<Faults>, RuntimeError> {
        let Ok(raw) = std::env::var(HANDLER_ERROR_RATE_ENV) else {
            return Ok(None);
        };
        let rate = raw
            .trim()
            .parse::<f64>()
            .map_err(|e| RuntimeError::Config(format!("{HANDLER_ERROR_RATE_ENV}={raw}: {e}")))?;
        let seed = match std::env::var(FAULT_SEED_ENV) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| RuntimeError::Config(format!("{FAULT_SEED_ENV}={s}: {e}")))?,
            Err(_) => rand::random(),
        };
        let faults = Faults::new(rate, seed ^ u64::from(std::process::id()).rotate_left(32))?;
        if faults.is_some() {
            tracing::warn!(rate, "fault injection: batch invocations fail at random");
        }
        Ok(faults)
    }

    /// Whether this invocation fails, and when.
    pub fn draw(&self) -> Option<Injected> {
        let mut rng = self.rng.lock().ok()?;
        if !rng.random_bool(self.rate) {
            return None;
        }
        Some(if rng.random_bool(0.5) {
            Injected::BeforeHandler
        } else {
            Injected::AfterHandler
        })
    }
}

/// A slower or refused function for alarm drills: throttled invocations and a delay before
/// every handler run. Off unless [`INVOKE_THROTTLE_RATE_ENV`] or [`HANDLER_DELAY_MS_ENV`]
/// is set; read only by the local mapping.
#[derive(Debug)]
pub struct Slowdown {
    throttle_rate: f64,
    delay: std::time::Duration,
    rng: Mutex<StdRng>,
}

impl Slowdown {
    /// From the environment; `None` when neither is set (or both are 0).
    ///
    /// # Errors
    /// A rate outside 0..=1 or a delay that is not a whole number of milliseconds.
    pub fn from_env() -> Result<Option<Slowdown>, RuntimeError> {
        let throttle_rate = match std::env::var(INVOKE_THROTTLE_RATE_ENV) {
            Ok(raw) => raw
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    RuntimeError::Config(format!(
                        "{INVOKE_THROTTLE_RATE_ENV}={raw} is not within 0..=1"
                    ))
                })?,
            Err(_) => 0.0,
        };
        let delay_ms = match std::env::var(HANDLER_DELAY_MS_ENV) {
            Ok(raw) => raw
                .trim()
                .parse::<u64>()
                .map_err(|e| RuntimeError::Config(format!("{HANDLER_DELAY_MS_ENV}={raw}: {e}")))?,
            Err(_) => 0,
        };
        if throttle_rate == 0.0 && delay_ms == 0 {
            return Ok(None);
        }
        tracing::warn!(
            throttle_rate,
            delay_ms,
            "fault injection: invocations throttled or delayed"
        );
        Ok(Some(Slowdown {
            throttle_rate,
            delay: std::time::Duration::from_millis(delay_ms),
            rng: Mutex::new(StdRng::from_os_rng()),
        }))
    }

    /// Waits until an invocation is let through and its delay has passed; returns how many
    /// times it was throttled first.
    pub async fn admit(&self) -> u64 {
        let mut throttled = 0;
        while self
            .rng
            .lock()
            .is_ok_and(|mut rng| rng.random_bool(self.throttle_rate))
        {
            throttled += 1;
            tokio::time::sleep(THROTTLE_BACKOFF).await;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        throttled
    }
}

/// Runs `invoke` (one handler invocation) under `fault`: not at all for
/// [`Injected::BeforeHandler`], to completion but answered with an error for
/// [`Injected::AfterHandler`]. Without a fault it is just `invoke`.
pub async fn apply<E>(
    fault: Option<Injected>,
    invoke: impl Future<Output = Result<Result<KinesisEventResponse, HandlerError>, E>>,
) -> Result<Result<KinesisEventResponse, HandlerError>, E> {
    match fault {
        None => invoke.await,
        Some(Injected::BeforeHandler) => Ok(Err(Injected::BeforeHandler.error())),
        Some(Injected::AfterHandler) => {
            // A handler that failed or panicked by itself keeps its own outcome.
            match invoke.await {
                Ok(Ok(_)) => Ok(Err(Injected::AfterHandler.error())),
                other => other,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn rates_are_checked_and_zero_is_off() {
        assert!(Faults::new(0.0, 1).unwrap().is_none());
        assert!(Faults::new(1.5, 1).is_err());
        assert!(Faults::new(-0.1, 1).is_err());
        let always = Faults::new(1.0, 3).unwrap().unwrap();
        let draws: Vec<_> = (0..200).map(|_| always.draw()).collect();
        assert!(draws.iter().all(Option::is_some));
        assert!(draws.contains(&Some(Injected::BeforeHandler)));
        assert!(draws.contains(&Some(Injected::AfterHandler)));
    }

    #[test]
    fn draws_follow_the_rate_and_the_seed() {
        let run = |seed| {
            let f = Faults::new(0.1, seed).unwrap().unwrap();
            (0..5000).map(|_| f.draw()).collect::<Vec<_>>()
        };
        let hits = run(5).iter().filter(|d| d.is_some()).count();
        assert!((350..650).contains(&hits), "about 10%, got {hits}");
        assert_eq!(run(5), run(5));
    }

    #[tokio::test]
    async fn before_skips_the_handler_after_runs_it_and_discards_the_answer() {
        let ran = AtomicBool::new(false);
        let invoke = || async {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, ()>(Ok(KinesisEventResponse::default()))
        };
        let out = apply(Some(Injected::BeforeHandler), invoke()).await;
        assert!(matches!(out, Ok(Err(_))));
        assert!(!ran.load(Ordering::SeqCst), "the handler must not run");

        let out = apply(Some(Injected::AfterHandler), invoke()).await;
        assert!(matches!(out, Ok(Err(_))));
        assert!(ran.swap(false, Ordering::SeqCst), "the handler ran");

        let out = apply(None, invoke()).await;
        assert!(matches!(out, Ok(Ok(_))));
        assert!(ran.load(Ordering::SeqCst));
    }
}
