//! What a request asks, read from its query string, checked before anything is read from
//! the view: every refusal here is a 400 whose message names the parameter and what it
//! takes. Pure, so every class of bad request is tested without a table.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::Error;

/// Page size unless `limit` says otherwise: windows and series points.
pub const DEFAULT_LIMIT: usize = 100;
/// Page size of top keys unless `limit` says otherwise.
pub const DEFAULT_TOP_LIMIT: usize = 10;
/// The most a page may hold.
pub const MAX_LIMIT: usize = 1000;
/// DynamoDB's limit on a partition key value (bytes).
pub const MAX_KEY_BYTES: usize = 2048;
/// How much of a refused value an error message repeats.
const ECHO_CHARS: usize = 64;
/// Range of `windows` and `series` when `from` is not given: the last day.
pub const DEFAULT_RANGE_MS: i64 = 86_400_000;

/// The aggregate a `top` request ranks keys by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    /// Number of events.
    Count,
    /// Sum of the metric.
    Sum,
    /// Largest metric value.
    Max,
    /// Smallest metric value (largest first, as for the rest).
    Min,
    /// Sum over count.
    Mean,
}

impl RankBy {
    fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "count" => RankBy::Count,
            "sum" => RankBy::Sum,
            "max" => RankBy::Max,
            "min" => RankBy::Min,
            "mean" => RankBy::Mean,
            _ => {
                return Err(Error::BadRequest(format!(
                    "`by` = {}: expected count, sum, max, min or mean",
                    echo(text)
                )));
            }
        })
    }

    /// Its name in answers.
    pub fn name(self) -> &'static str {
        match self {
            RankBy::Count => "count",
            RankBy::Sum => "sum",
            RankBy::Max => "max",
            RankBy::Min => "min",
            RankBy::Mean => "mean",
        }
    }
}

/// `GET /v1/windows`: one key's windows over `[from, to)`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsQuery {
    /// The view key (`orders:category=books`).
    pub key: String,
    /// Window starts from (epoch ms, inclusive).
    pub from: i64,
    /// Window starts before (epoch ms, exclusive).
    pub to: i64,
    /// Page size.
    pub limit: usize,
    /// Start after this window start (from the cursor).
    pub after: Option<i64>,
}

/// `GET /v1/top`: the keys of a view in one window, ranked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopQuery {
    /// The view (`orders`).
    pub view: String,
    /// An instant inside the window; none: the latest window that has data.
    pub at: Option<i64>,
    /// What to rank by.
    pub by: RankBy,
    /// Page size.
    pub limit: usize,
    /// (window start, rank to continue from), from the cursor.
    pub after: Option<(i64, usize)>,
}

/// `GET /v1/series`: per window over `[from, to)`, the view's keys folded together (or one
/// key's, with `key`), oldest first: what a plot needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// The view (`orders`).
    pub view: String,
    /// One key of the view only.
    pub key: Option<String>,
    /// Window starts from (epoch ms, inclusive).
    pub from: i64,
    /// Window starts before (epoch ms, exclusive).
    pub to: i64,
    /// Page size (points).
    pub limit: usize,
    /// Continue from this window start (inclusive), from the cursor.
    pub resume: Option<i64>,
}

/// The query string's pairs by name, refusing names the endpoint does not take and names
/// given twice (which a client means one way and a server could read another).
fn pairs<'a>(
    pairs: &'a [(String, String)],
    allowed: &[&str],
) -> Result<HashMap<&'a str, &'a str>, Error> {
    let mut by_name = HashMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(Error::BadRequest(format!(
                "unknown parameter {}; this endpoint takes {}",
                echo(name),
                allowed.join(", ")
            )));
        }
        if by_name.insert(name.as_str(), value.as_str()).is_some() {
            return Err(Error::BadRequest(format!(
                "`{name}` is given more than once"
            )));
        }
    }
    Ok(by_name)
}

/// A refused value, quoted and cut short: enough to find the mistake, never a wall of text
/// reflected back.
fn echo(text: &str) -> String {
    let cut: String = text.chars().take(ECHO_CHARS).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// A time: RFC 3339 (`2026-12-07T10:00:00Z`), epoch milliseconds, `now`, or an offset from
/// now (`-15m`, `-2h`, `-7d`, `-30s`). Epoch millis.
pub fn parse_time(name: &str, text: &str, now_ms: i64) -> Result<i64, Error> {
    let bad = || {
        Error::BadRequest(format!(
            "`{name}` = {} is not a time: use RFC 3339 (2026-12-07T10:00:00Z), epoch \
             milliseconds, `now`, or an offset such as -15m, -2h or -7d",
            echo(text)
        ))
    };
    let text = text.trim();
    if text == "now" {
        return Ok(now_ms);
    }
    if let Some(offset) = text.strip_prefix('-') {
        let split = offset.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = offset.split_at(split);
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        return n
            .checked_mul(unit_ms)
            .and_then(|ms| now_ms.checked_sub(ms))
            .ok_or_else(bad);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

fn limit(given: Option<&str>, default: usize) -> Result<usize, Error> {
    let Some(text) = given else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(Error::BadRequest(format!(
            "`limit` = {}: expected a whole number from 1 to {MAX_LIMIT}",
            echo(text)
        ))),
    }
}

/// `from` and `to` (defaults: the day before now, and now), `from` before `to`.
fn range(given: &HashMap<&str, &str>, now_ms: i64) -> Result<(i64, i64), Error> {
    let to = match given.get("to") {
        Some(text) => parse_time("to", text, now_ms)?,
        None => now_ms,
    };
    let from = match given.get("from") {
        Some(text) => parse_time("from", text, now_ms)?,
        None => to.saturating_sub(DEFAULT_RANGE_MS),
    };
    if from >= to {
        return Err(Error::BadRequest(
            "`from` must be before `to` (window starts from `from`, before `to`)".into(),
        ));
    }
    Ok((from, to))
}

fn required<'a>(given: &HashMap<&str, &'a str>, name: &str, what: &str) -> Result<&'a str, Error> {
    match given.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(Error::BadRequest(format!("`{name}` is required: {what}"))),
    }
}

fn key_param(given: &HashMap<&str, &str>, required_here: bool) -> Result<Option<String>, Error> {
    let key = match given.get("key") {
        Some(key) if !key.is_empty() => *key,
        _ if required_here => {
            return Err(Error::BadRequest(
                "`key` is required: the view key, such as orders:category=books".into(),
            ));
        }
        _ => return Ok(None),
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::BadRequest(format!(
            "`key` is {} bytes; view keys are at most {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(Some(key.to_owned()))
}

/// An opaque page token: what the next page continues from, tagged with the endpoint, so
/// a token from one endpoint is refused by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// `windows`: continue after this window start.
    Windows(i64),
    /// `top`: this window, from this rank.
    Top(i64, usize),
    /// `series`: continue from this window start.
    Series(i64),
}

impl Cursor {
    /// The token.
    pub fn encode(self) -> String {
        let text = match self {
            Cursor::Windows(after) => format!("w1:{after}"),
            Cursor::Top(window, rank) => format!("t1:{window}:{rank}"),
            Cursor::Series(from) => format!("s1:{from}"),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A token back, if this API gave it out.
    pub fn decode(token: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.split(':');
        let cursor = match (parts.next()?, parts.next()?, parts.next()) {
            ("w1", after, None) => Cursor::Windows(after.parse().ok()?),
            ("s1", from, None) => Cursor::Series(from.parse().ok()?),
            ("t1", window, Some(rank)) => Cursor::Top(window.parse().ok()?, rank.parse().ok()?),
            _ => return None,
        };
        parts.next().is_none().then_some(cursor)
    }
}

fn cursor(given: &HashMap<&str, &str>) -> Result<Option<Cursor>, Error> {
    given
        .get("cursor")
        .map(|token| Cursor::decode(token).ok_or_else(foreign_cursor))
        .transpose()
}

fn foreign_cursor() -> Error {
    Error::BadRequest(
        "`cursor` is not one this endpoint gave out for this query: pass `next_cursor` from \
         the previous page unchanged, with the same parameters"
            .into(),
    )
}

impl WindowsQuery {
    /// Reads `key`, `from`, `to`, `limit`, `cursor`.
    pub fn parse(query: &[(String, String)], now_ms: i64) -> Result<Self, Error> {
        let given = pairs(query, &["key", "from", "to", "limit", "cursor"])?;
        let key = key_param(&given, true)?.unwrap_or_default();
        let (from, to) = range(&given, now_ms)?;
        let after = match cursor(&given)? {
            None => None,
            Some(Cursor::Windows(after)) if (from..to).contains(&after) => Some(after),
            Some(_) => return Err(foreign_cursor()),
        };
        Ok(WindowsQuery {
            key,
            from,
            to,
            limit: limit(given.get("limit").copied(), DEFAULT_LIMIT)?,
            after,
        })
    }
}

impl TopQuery {
    /// Reads `view`, `at`, `by`, `limit`, `cursor`.
    pub fn parse(query: &[(String, String)], now_ms: i64) -> Result<Self, Error> {
        let given = pairs(query, &["view", "at", "by", "limit", "cursor"])?;
        let view = required(
            &given,
            "view",
            "the view, the part of its keys before `:`, such as orders",
        )?;
        let at = given
            .get("at")
            .map(|text| parse_time("at", text, now_ms))
            .transpose()?;
        let after = match cursor(&given)? {
            None => None,
            Some(Cursor::Top(window, rank)) if rank > 0 && rank <= MAX_TOP_KEYS => {
                Some((window, rank))
            }
            Some(_) => return Err(foreign_cursor()),
        };
        Ok(TopQuery {
            view: view.to_owned(),
            at,
            by: given
                .get("by")
                .map_or(Ok(RankBy::Count), |text| RankBy::parse(text))?,
            limit: limit(given.get("limit").copied(), DEFAULT_TOP_LIMIT)?,
            after,
        })
    }
}

/// The most keys of one window `top` ranks, and `series` folds into one point; a window
/// with more is answered from its first ones, marked incomplete.
pub const MAX_TOP_KEYS: usize = 10_000;

impl SeriesQuery {
    /// Reads `view`, `key`, `from`, `to`, `limit`, `cursor`.
    pub fn parse(query: &[(String, String)], now_ms: i64) -> Result<Self, Error> {
        let given = pairs(query, &["view", "key", "from", "to", "limit", "cursor"])?;
        let view = required(
            &given,
            "view",
            "the view, the part of its keys before `:`, such as orders",
        )?;
        let key = key_param(&given, false)?;
        if let Some(key) = &key
            && riffle_view::view_name(key) != view
        {
            return Err(Error::BadRequest(format!(
                "`key` is not a key of view {}: its view is {}",
                echo(view),
                echo(riffle_view::view_name(key))
            )));
        }
        let (from, to) = range(&given, now_ms)?;
        let resume = match cursor(&given)? {
            None => None,
            Some(Cursor::Series(resume)) if (from..to).contains(&resume) => Some(resume),
            Some(_) => return Err(foreign_cursor()),
        };
        Ok(SeriesQuery {
            view: view.to_owned(),
            key,
            from,
            to,
            limit: limit(given.get("limit").copied(), DEFAULT_LIMIT)?,
            resume,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refused(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::BadRequest(message)) => message,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("t", "now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("t", "-15m", NOW).unwrap(), NOW - 900_000);
        assert_eq!(parse_time("t", "-2h", NOW).unwrap(), NOW - 7_200_000);
        assert_eq!(parse_time("t", "-7d", NOW).unwrap(), NOW - 604_800_000);
        assert_eq!(parse_time("t", "-30s", NOW).unwrap(), NOW - 30_000);
        assert_eq!(parse_time("t", "1765000000000", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("t", "2025-12-06T05:46:40Z", NOW).unwrap(),
            1_765_000_000_000
        );
        assert_eq!(
            parse_time("t", "2025-12-06T06:46:40+01:00", NOW).unwrap(),
            1_765_000_000_000
        );
        for bad in [
            "",
            "yesterday",
            "-",
            "-5",
            "-5y",
            "-99999999999999999999d",
            "12:00",
        ] {
            let message = refused(parse_time("from", bad, NOW));
            assert!(message.starts_with("`from` = "), "{message}");
            assert!(message.contains("RFC 3339"), "{message}");
        }
    }

    #[test]
    fn windows_defaults_and_bounds() {
        let w = WindowsQuery::parse(&q(&[("key", "orders:category=books")]), NOW).unwrap();
        assert_eq!(
            w,
            WindowsQuery {
                key: "orders:category=books".into(),
                from: NOW - DEFAULT_RANGE_MS,
                to: NOW,
                limit: DEFAULT_LIMIT,
                after: None,
            }
        );
        let w = WindowsQuery::parse(
            &q(&[
                ("key", "k"),
                ("from", "-1h"),
                ("to", "now"),
                ("limit", "1000"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!((w.from, w.to, w.limit), (NOW - 3_600_000, NOW, 1000));
    }

    #[test]
    fn every_class_of_bad_request_is_named() {
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (q(&[]), "`key` is required"),
            (q(&[("key", "")]), "`key` is required"),
            (q(&[("key", &"x".repeat(3000))]), "at most 2048"),
            (
                q(&[("key", "k"), ("form", "-1h")]),
                "unknown parameter \"form\"",
            ),
            (q(&[("key", "k"), ("key", "j")]), "more than once"),
            (
                q(&[("key", "k"), ("from", "now"), ("to", "-1h")]),
                "before `to`",
            ),
            (q(&[("key", "k"), ("from", "soon")]), "`from` = \"soon\""),
            (q(&[("key", "k"), ("limit", "0")]), "from 1 to 1000"),
            (q(&[("key", "k"), ("limit", "1001")]), "from 1 to 1000"),
            (q(&[("key", "k"), ("limit", "ten")]), "from 1 to 1000"),
            (
                q(&[("key", "k"), ("cursor", "garbage!")]),
                "`cursor` is not one",
            ),
        ];
        for (query, expected) in cases {
            let message = refused(WindowsQuery::parse(&query, NOW));
            assert!(message.contains(expected), "{query:?}: {message}");
        }
        // A cursor from another endpoint, or outside the range asked, is refused too.
        let top = Cursor::Top(NOW - 60_000, 10).encode();
        let message = refused(WindowsQuery::parse(
            &q(&[("key", "k"), ("cursor", &top)]),
            NOW,
        ));
        assert!(message.contains("`cursor`"), "{message}");
        let old = Cursor::Windows(NOW - 2 * DEFAULT_RANGE_MS).encode();
        assert!(WindowsQuery::parse(&q(&[("key", "k"), ("cursor", &old)]), NOW).is_err());
        // A long refused value is cut, not reflected whole.
        let message = refused(WindowsQuery::parse(
            &q(&[("key", "k"), ("from", &"9x".repeat(500))]),
            NOW,
        ));
        assert!(message.len() < 300, "{message}");

        for (query, expected) in [
            (q(&[]), "`view` is required"),
            (
                q(&[("view", "orders"), ("by", "median")]),
                "`by` = \"median\"",
            ),
            (
                q(&[("view", "orders"), ("at", "later")]),
                "`at` = \"later\"",
            ),
            (
                q(&[("view", "orders"), ("key", "k")]),
                "unknown parameter \"key\"",
            ),
        ] {
            let message = refused(TopQuery::parse(&query, NOW));
            assert!(message.contains(expected), "{query:?}: {message}");
        }
        for (query, expected) in [
            (q(&[("key", "orders:x=1")]), "`view` is required"),
            (
                q(&[("view", "orders"), ("key", "sensors:site=a")]),
                "not a key of view \"orders\": its view is \"sensors\"",
            ),
        ] {
            let message = refused(SeriesQuery::parse(&query, NOW));
            assert!(message.contains(expected), "{query:?}: {message}");
        }
    }

    #[test]
    fn cursors_round_trip_and_strangers_do_not() {
        for cursor in [
            Cursor::Windows(NOW),
            Cursor::Windows(-1),
            Cursor::Top(NOW, 20),
            Cursor::Series(0),
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
        for stranger in ["", "w1", "dzE6", "dzE6eA", "dzE6MTI6MTM", "eDE6MTI"] {
            assert_eq!(Cursor::decode(stranger), None, "{stranger}");
        }
        let top = Cursor::Top(NOW - 60_000, 10).encode();
        let t = TopQuery::parse(
            &q(&[("view", "orders"), ("cursor", &top), ("by", "sum")]),
            NOW,
        )
        .unwrap();
        assert_eq!(t.after, Some((NOW - 60_000, 10)));
        assert_eq!(t.by, RankBy::Sum);
        assert_eq!(t.limit, DEFAULT_TOP_LIMIT);
        let s = Cursor::Series(NOW - 60_000).encode();
        let series = SeriesQuery::parse(&q(&[("view", "orders"), ("cursor", &s)]), NOW).unwrap();
        assert_eq!(series.resume, Some(NOW - 60_000));
    }
}
