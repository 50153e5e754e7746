//! Where an archived group of events goes: Hive-style partitions by subject, UTC date and
//! hour of the event time, and a file name made of the shard and the first and last sequence
//! numbers of the group's records, so a retried batch overwrites the same object.

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Default key prefix of the archive.
pub const DEFAULT_PREFIX: &str = "events";

/// The partition an event falls in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    /// Payload subject.
    pub subject: String,
    /// `YYYY-MM-DD` of the event time in UTC.
    pub dt: String,
    /// `HH` of the event time in UTC.
    pub hour: String,
}

impl Partition {
    /// The partition of an event of `subject` at `event_time_ms`; `None` when the time is
    /// outside what a calendar date can hold.
    pub fn of(subject: &str, event_time_ms: i64) -> Option<Self> {
        let at: DateTime<Utc> = DateTime::from_timestamp_millis(event_time_ms)?;
        let (year, month, day, hour) = (at.year(), at.month(), at.day(), at.hour());
        // Written digit by digit: chrono's `format` parses its pattern on every call, and the
        // archiver asks once per record. Years outside four digits take chrono's own form.
        let dt = match u32::try_from(year) {
            Ok(y) if y <= 9999 => {
                let mut dt = String::with_capacity(10);
                push_digits(&mut dt, y, 4);
                dt.push('-');
                push_digits(&mut dt, month, 2);
                dt.push('-');
                push_digits(&mut dt, day, 2);
                dt
            }
            _ => at.format("%Y-%m-%d").to_string(),
        };
        let mut hh = String::with_capacity(2);
        push_digits(&mut hh, hour, 2);
        Some(Partition {
            subject: subject.to_owned(),
            dt,
            hour: hh,
        })
    }
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10u32.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Orders Kinesis sequence numbers (decimal strings of up to 128 bits and beyond) by value.
pub fn cmp_sequence(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The object key: `<prefix>/subject=<s>/dt=<d>/hour=<h>/<shard>-<first>-<last>.parquet`.
/// Parts that come from records are escaped so that none can add a path level.
pub fn object_key(
    prefix: &str,
    partition: &Partition,
    shard_id: &str,
    first_sequence: &str,
    last_sequence: &str,
) -> String {
    let mut key = String::with_capacity(128);
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        key.push_str(prefix);
        key.push('/');
    }
    key.push_str("subject=");
    escape_into(&partition.subject, &mut key);
    key.push_str("/dt=");
    key.push_str(&partition.dt);
    key.push_str("/hour=");
    key.push_str(&partition.hour);
    key.push('/');
    escape_into(shard_id, &mut key);
    key.push('-');
    escape_into(first_sequence, &mut key);
    key.push('-');
    escape_into(last_sequence, &mut key);
    key.push_str(".parquet");
    key
}

/// `key` with `-<tag>` before its `.parquet` suffix: the name of a group whose plain key is
/// already taken by an object holding other rows (see the archiver's handler), so writing it never
/// overwrites them.
pub fn tagged_key(key: &str, tag: &str) -> String {
    let stem = key.strip_suffix(".parquet").unwrap_or(key);
    let mut out = String::with_capacity(stem.len() + tag.len() + 10);
    out.push_str(stem);
    out.push('-');
    escape_into(tag, &mut out);
    out.push_str(".parquet");
    out
}

/// A partition value or file name part as it appears in keys (see [`escape_into`]).
pub fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    escape_into(part, &mut out);
    out
}

/// Keeps `[A-Za-z0-9._-]` and percent-encodes every other byte, as Hive partition values
/// are encoded.
fn escape_into(part: &str, out: &mut String) {
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn partitions_by_utc_date_and_hour() {
        // 2025-11-24T16:00:00.999Z
        let p = Partition::of("com.riffle.shop.OrderPlaced", 1_764_000_000_999).unwrap();
        assert_eq!(p.dt, "2025-11-24");
        assert_eq!(p.hour, "16");
        let before_epoch = Partition::of("s", -1).unwrap();
        assert_eq!(
            (before_epoch.dt.as_str(), before_epoch.hour.as_str()),
            ("1969-12-31", "23")
        );
        assert!(Partition::of("s", i64::MAX).is_none());
    }

    #[test]
    fn key_has_the_documented_shape() {
        let p = Partition::of("com.riffle.shop.OrderPlaced", 1_764_000_000_000).unwrap();
        assert_eq!(
            object_key("events", &p, "shardId-000000000001", "4959001", "4959042"),
            "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/shardId-000000000001-4959001-4959042.parquet"
        );
        assert_eq!(
            object_key("/archive/v1/", &p, "s", "1", "2"),
            "archive/v1/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/s-1-2.parquet"
        );
        assert!(object_key("", &p, "s", "1", "2").starts_with("subject="));
    }

    #[test]
    fn tagged_keys_stay_in_their_folder() {
        assert_eq!(
            tagged_key("e/d/s-1-2.parquet", "ab12"),
            "e/d/s-1-2-ab12.parquet"
        );
        assert_eq!(
            tagged_key("e/d/s-1-2.parquet", "a/b"),
            "e/d/s-1-2-a%2Fb.parquet"
        );
    }

    #[test]
    fn record_parts_cannot_escape_their_level() {
        let p = Partition::of("../x/y z", 0).unwrap();
        let key = object_key("events", &p, "a/b", "1", "2");
        assert_eq!(
            key,
            "events/subject=..%2Fx%2Fy%20z/dt=1970-01-01/hour=00/a%2Fb-1-2.parquet"
        );
    }

    #[test]
    fn sequence_numbers_compare_by_value() {
        assert_eq!(cmp_sequence("9", "10"), Ordering::Less);
        assert_eq!(
            cmp_sequence(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Ordering::Less
        );
        assert_eq!(cmp_sequence("007", "7"), Ordering::Equal);
        assert_eq!(cmp_sequence("100", "99"), Ordering::Greater);
    }

    #[test]
    fn partitions_read_as_chrono_formats_them() {
        let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut times = vec![
            0,
            -1,
            1_764_000_000_000,
            -62_135_596_800_001,
            253_402_300_799_999,
        ];
        times.extend([
            253_402_300_800_000,
            -8_334_632_851_200_000,
            8_210_298_412_799_999,
        ]);
        for _ in 0..10_000 {
            // xorshift: spread over every representable date, not just recent ones.
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            times.push((rng_state as i64) % 8_210_298_412_799_999);
        }
        for t in times {
            let Some(at) = DateTime::<Utc>::from_timestamp_millis(t) else {
                continue;
            };
            let p = Partition::of("s", t).unwrap();
            assert_eq!(p.dt, at.format("%Y-%m-%d").to_string(), "{t}");
            assert_eq!(p.hour, at.format("%H").to_string(), "{t}");
        }
    }
}
