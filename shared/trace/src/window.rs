//! The span of time `riffle trace` reads X-Ray over: given as `--from`/`--to` (RFC 3339) or
//! `--minutes`, the last hour by default.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_xray::primitives::{DateTime, DateTimeFormat};

use crate::error::TraceError;

/// The window when none is given (minutes back from now).
pub const DEFAULT_WINDOW_MINUTES: u64 = 60;

/// A span of time to read traces from (by trace start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The start.
    pub from: SystemTime,
    /// The end.
    pub to: SystemTime,
}

impl Window {
    /// The window the command line asks for: `--from`/`--to` (RFC 3339, such as
    /// `2026-12-01T10:00:00Z`), or `--minutes` back from `--to`; the end defaults to `now`,
    /// the length to [`DEFAULT_WINDOW_MINUTES`].
    ///
    /// # Errors
    /// [`TraceError::BadWindow`]: a time that does not parse, `--from` with `--minutes`, no
    /// minutes, or a start not before the end.
    pub fn resolve(
        from: Option<&str>,
        to: Option<&str>,
        minutes: Option<u64>,
        now: SystemTime,
    ) -> Result<Window, TraceError> {
        let bad = |why: String| Err(TraceError::BadWindow(why));
        if from.is_some() && minutes.is_some() {
            return bad("give --from or --minutes, not both".to_owned());
        }
        if minutes == Some(0) {
            return bad("--minutes must be at least 1".to_owned());
        }
        let to = to
            .map(|t| parse_time("--to", t))
            .transpose()?
            .unwrap_or(now);
        let from = match from {
            Some(f) => parse_time("--from", f)?,
            None => {
                let back = minutes.unwrap_or(DEFAULT_WINDOW_MINUTES).saturating_mul(60);
                to.checked_sub(Duration::from_secs(back))
                    .unwrap_or(UNIX_EPOCH)
                    .max(UNIX_EPOCH)
            }
        };
        if from >= to {
            return bad(format!(
                "it starts at {} but ends at {}",
                rfc3339(from),
                rfc3339(to)
            ));
        }
        Ok(Window { from, to })
    }

    /// The start in epoch seconds, as segment documents count time.
    pub fn from_secs(&self) -> f64 {
        secs(self.from)
    }

    /// The end in epoch seconds.
    pub fn to_secs(&self) -> f64 {
        secs(self.to)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let minutes = (secs(self.to) - secs(self.from)) / 60.0;
        write!(
            f,
            "{} to {} ({minutes:.0} min)",
            rfc3339(self.from),
            rfc3339(self.to)
        )
    }
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::from(t)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| format!("{:.0}", secs(t)))
}

fn parse_time(flag: &str, text: &str) -> Result<SystemTime, TraceError> {
    DateTime::from_str(text.trim(), DateTimeFormat::DateTime)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| {
            TraceError::BadWindow(format!(
                "{flag} {text:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z"
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn windows_default_to_the_last_hour_and_refuse_nonsense() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = Window::resolve(None, None, None, now).unwrap();
        assert_eq!(hour.to, now);
        assert_eq!(hour.from, now - Duration::from_secs(3_600));
        assert!(hour.to_string().ends_with("(60 min)"), "{hour}");

        let five = Window::resolve(None, None, Some(5), now).unwrap();
        assert_eq!(five.from, now - Duration::from_secs(300));

        let given = Window::resolve(
            Some("2027-01-15T08:00:00Z"),
            Some("2027-01-15T08:30:00Z"),
            None,
            now,
        )
        .unwrap();
        assert_eq!(
            given.to_string(),
            "2027-01-15T08:00:00Z to 2027-01-15T08:30:00Z (30 min)"
        );
        // 1.8e9 epoch seconds is 2027-01-15T08:00:00Z.
        assert_eq!(given.from_secs(), 1_800_000_000.0);

        // --to with --minutes: the minutes before the end.
        let before = Window::resolve(None, Some("2027-01-15T08:30:00Z"), Some(10), now).unwrap();
        assert_eq!(
            before.to.duration_since(before.from).unwrap().as_secs(),
            600
        );

        let bad = |from, to, minutes| Window::resolve(from, to, minutes, now).unwrap_err();
        for e in [
            bad(Some("yesterday"), None, None),
            bad(None, Some("2027-01-15 08:30"), None),
            bad(Some("2027-01-15T08:00:00Z"), None, Some(5)),
            bad(None, None, Some(0)),
            bad(
                Some("2027-01-15T09:00:00Z"),
                Some("2027-01-15T08:00:00Z"),
                None,
            ),
        ] {
            assert!(matches!(e, TraceError::BadWindow(_)), "{e}");
        }
    }
}
