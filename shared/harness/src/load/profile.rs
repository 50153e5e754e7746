//! Load profiles: the offered rate as a function of time, pure.

use serde::Serialize;

/// The shape of the offered load over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Profile {
    /// `rate` events/s throughout.
    Constant {
        /// Events per second.
        rate: f64,
    },
    /// From `from` to `to` events/s, linearly.
    Ramp {
        /// Rate at the start.
        from: f64,
        /// Rate at the end.
        to: f64,
    },
    /// From `from` to `to` events/s in `steps` equal steps of equal length.
    Step {
        /// Rate of the first step.
        from: f64,
        /// Rate of the last step.
        to: f64,
        /// Number of steps (at least 2).
        steps: u32,
    },
    /// `rate` events/s, and `peak` from `at` for `length` seconds.
    Spike {
        /// Base rate.
        rate: f64,
        /// Rate during the spike.
        peak: f64,
        /// When the spike starts (seconds into the run).
        at: f64,
        /// How long it lasts (seconds).
        length: f64,
    },
    /// `rate` events/s for a long time: a constant load watched for drift (memory, iterator
    /// age, latency creeping up).
    Soak {
        /// Events per second.
        rate: f64,
    },
}

impl Profile {
    /// The offered rate (events/s) `t` seconds into a run of `duration` seconds.
    pub fn rate_at(&self, t: f64, duration: f64) -> f64 {
        let share = if duration > 0.0 {
            (t / duration).clamp(0.0, 1.0)
        } else {
            1.0
        };
        match *self {
            Profile::Constant { rate } | Profile::Soak { rate } => rate,
            Profile::Ramp { from, to } => from + (to - from) * share,
            Profile::Step { from, to, steps } => {
                let steps = steps.max(2);
                let step = ((share * f64::from(steps)).floor()).min(f64::from(steps - 1));
                from + (to - from) * step / f64::from(steps - 1)
            }
            Profile::Spike {
                rate,
                peak,
                at,
                length,
            } => {
                if (at..at + length).contains(&t) {
                    peak
                } else {
                    rate
                }
            }
        }
    }

    /// Its name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Constant { .. } => "constant",
            Profile::Ramp { .. } => "ramp",
            Profile::Step { .. } => "step",
            Profile::Spike { .. } => "spike",
            Profile::Soak { .. } => "soak",
        }
    }
}

/// The events a profile has offered by a point in time: its rate integrated, advanced as the
/// producer's clock moves (in slices of at most 10 ms, so a step or a spike's edge is off by
/// at most 10 ms of load).
#[derive(Debug, Clone)]
pub struct Offered {
    profile: Profile,
    duration: f64,
    t: f64,
    events: f64,
}

impl Offered {
    /// Nothing offered yet, at time 0.
    pub fn new(profile: Profile, duration: f64) -> Self {
        Offered {
            profile,
            duration,
            t: 0.0,
            events: 0.0,
        }
    }

    /// The whole events offered from 0 to `t` seconds (capped at the run's end).
    pub fn until(&mut self, t: f64) -> u64 {
        const SLICE: f64 = 0.01;
        let t = t.min(self.duration);
        while self.t < t {
            let dt = SLICE.min(t - self.t);
            self.events += self.profile.rate_at(self.t + dt / 2.0, self.duration) * dt;
            self.t += dt;
        }
        // Whole events only; a fraction is offered once it completes (the epsilon keeps the
        // slices' rounding from holding back an event that is due).
        (self.events + 1e-6).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profile_offers_its_shape() {
        let d = 60.0;
        assert_eq!(Profile::Constant { rate: 500.0 }.rate_at(17.0, d), 500.0);
        let ramp = Profile::Ramp {
            from: 100.0,
            to: 1100.0,
        };
        assert_eq!(ramp.rate_at(0.0, d), 100.0);
        assert_eq!(ramp.rate_at(30.0, d), 600.0);
        assert_eq!(ramp.rate_at(60.0, d), 1100.0);
        assert_eq!(ramp.rate_at(90.0, d), 1100.0, "past the end: the last rate");
        let step = Profile::Step {
            from: 100.0,
            to: 400.0,
            steps: 4,
        };
        let rates: Vec<f64> = [0.0, 14.9, 15.0, 30.0, 45.0, 59.9, 60.0]
            .iter()
            .map(|t| step.rate_at(*t, d))
            .collect();
        assert_eq!(rates, [100.0, 100.0, 200.0, 300.0, 400.0, 400.0, 400.0]);
        let spike = Profile::Spike {
            rate: 200.0,
            peak: 2000.0,
            at: 20.0,
            length: 5.0,
        };
        assert_eq!(spike.rate_at(19.9, d), 200.0);
        assert_eq!(spike.rate_at(20.0, d), 2000.0);
        assert_eq!(spike.rate_at(24.9, d), 2000.0);
        assert_eq!(spike.rate_at(25.0, d), 200.0);
    }

    #[test]
    fn events_offered_are_the_rate_integrated() {
        let ramp = Profile::Ramp {
            from: 0.0,
            to: 1000.0,
        };
        // The area under 0 -> 1000 over 10 s, reached in uneven ticks.
        let mut offered = Offered::new(ramp, 10.0);
        let mut last = 0;
        for tick in 1..=437 {
            let now = offered.until(f64::from(tick) * 0.023);
            assert!(now >= last, "never goes back");
            last = now;
        }
        assert!(
            (4999..=5000).contains(&offered.until(10.0)),
            "{}",
            offered.until(10.0)
        );
        assert_eq!(
            offered.until(30.0),
            offered.until(10.0),
            "nothing after the end"
        );
        let spike = Profile::Spike {
            rate: 100.0,
            peak: 1100.0,
            at: 2.0,
            length: 1.0,
        };
        let mut offered = Offered::new(spike, 5.0);
        assert_eq!(offered.until(2.0), 200);
        assert!((1499..=1500).contains(&offered.until(5.0)));
    }
}
