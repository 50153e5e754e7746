//! Reading the view table for each endpoint: one key's windows from the table itself, a
//! view's keys per window from its `by_view` index. Every read is a Query on a key, never a
//! scan, and bounded: a page holds at most `limit` answers, a window at most
//! [`MAX_TOP_KEYS`] keys, a series page at most [`MAX_SERIES_ITEMS`] items read.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::error::Error;
use crate::params::{Cursor, MAX_TOP_KEYS, RankBy, SeriesQuery, TopQuery, WindowsQuery};
use riffle_view::watermark::{self, Watermarks};
use riffle_view::{BY_VIEW_INDEX, VIEW_NAME_ATTRIBUTE};

/// The most index items one series page reads before it answers with what it has.
pub const MAX_SERIES_ITEMS: usize = 20_000;

type Item = HashMap<String, AttributeValue>;

/// One key over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// The view key.
    pub key: String,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// Window length.
    pub window_secs: u32,
    /// Events folded in.
    pub count: i64,
    /// Sum of their metric.
    pub sum: f64,
    /// Smallest metric.
    pub min: f64,
    /// Largest metric.
    pub max: f64,
    /// `sum / count`.
    pub mean: f64,
    /// The aggregator's last write to it, RFC 3339.
    pub updated_at: String,
    /// The view's watermark passed the window's end plus its allowed lateness: every event
    /// of the window still to come is late, and the numbers will not change (ADR 0021).
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl Window {
    fn rank_value(&self, by: RankBy) -> f64 {
        match by {
            RankBy::Count => self.count as f64,
            RankBy::Sum => self.sum,
            RankBy::Max => self.max,
            RankBy::Min => self.min,
            RankBy::Mean => self.mean,
        }
    }
}

/// The view's event-time watermark as a page reports it: windows whose end plus allowed
/// lateness it passed are final.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WatermarkInfo {
    /// RFC 3339; none before the aggregator published one.
    pub watermark: Option<String>,
    /// Epoch ms.
    pub watermark_ms: Option<i64>,
}

impl WatermarkInfo {
    fn of(w: &Watermarks) -> Self {
        let ms = w.watermark();
        WatermarkInfo {
            watermark: ms.map(rfc3339),
            watermark_ms: ms,
        }
    }
}

/// `GET /v1/windows`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowsPage {
    /// The key asked for.
    pub key: String,
    /// The view's watermark.
    #[serde(flatten)]
    pub watermark: WatermarkInfo,
    /// Its windows, oldest first.
    pub windows: Vec<Window>,
    /// Pass as `cursor` for the next page; none: this was the last.
    pub next_cursor: Option<String>,
}

/// A ranked key in `GET /v1/top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// 1 for the first.
    pub rank: usize,
    /// The key and its aggregate.
    #[serde(flatten)]
    pub window: Window,
}

/// `GET /v1/top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopPage {
    /// The view asked for.
    pub view: String,
    /// The view's watermark.
    #[serde(flatten)]
    pub watermark: WatermarkInfo,
    /// What the keys are ranked by.
    pub by: &'static str,
    /// The window's start, RFC 3339; none when the view has no data at all.
    pub window_start: Option<String>,
    /// The window's start, epoch ms.
    pub window_start_ms: Option<i64>,
    /// The window's length.
    pub window_secs: Option<u32>,
    /// Keys with data in the window.
    pub total_keys: usize,
    /// False when the window holds more than [`MAX_TOP_KEYS`] keys and only that many were
    /// ranked.
    pub complete: bool,
    /// This page of them, highest first.
    pub keys: Vec<Ranked>,
    /// Pass as `cursor` for the next page; none: this was the last.
    pub next_cursor: Option<String>,
}

/// One window of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window start, epoch ms.
    pub window_start_ms: i64,
    /// Window length.
    pub window_secs: u32,
    /// Keys folded into the point.
    pub keys: usize,
    /// Events.
    pub count: i64,
    /// Sum of their metric.
    pub sum: f64,
    /// Smallest metric.
    pub min: f64,
    /// Largest metric.
    pub max: f64,
    /// `sum / count`.
    pub mean: f64,
    /// False when the window had more keys than a page reads ([`MAX_SERIES_ITEMS`]) and the
    /// point folds only the first of them.
    pub complete: bool,
    /// Every key folded into the point is final in this window.
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl Point {
    fn of(window: &Window) -> Point {
        Point {
            window_start: window.window_start.clone(),
            window_start_ms: window.window_start_ms,
            window_secs: window.window_secs,
            keys: 1,
            count: window.count,
            sum: window.sum,
            min: window.min,
            max: window.max,
            mean: window.mean,
            complete: true,
            is_final: window.is_final,
        }
    }

    fn fold(&mut self, window: &Window) {
        self.keys += 1;
        self.is_final &= window.is_final;
        self.count += window.count;
        self.sum += window.sum;
        self.min = self.min.min(window.min);
        self.max = self.max.max(window.max);
        self.mean = if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        };
    }
}

/// `GET /v1/series`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPage {
    /// The view asked for.
    pub view: String,
    /// The view's watermark.
    #[serde(flatten)]
    pub watermark: WatermarkInfo,
    /// The key asked for, if one.
    pub key: Option<String>,
    /// Oldest first.
    pub points: Vec<Point>,
    /// Pass as `cursor` for the next page; none: this was the last.
    pub next_cursor: Option<String>,
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// A view item (from the table or the index) as a [`Window`].
pub fn window_of(item: &Item) -> Result<Window, Error> {
    let key = match item.get("agg_key") {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => return Err(Error::Corrupt("a view item has no agg_key".into())),
    };
    let corrupt = |what: &str| Error::Corrupt(format!("view item {key}: {what}"));
    fn num<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
        item.get(name)?.as_n().ok()?.parse().ok()
    }
    let window_start_ms: i64 = num(item, "window_start").ok_or_else(|| corrupt("window_start"))?;
    let count: i64 = num(item, "count").ok_or_else(|| corrupt("count"))?;
    let sum: f64 = num(item, "sum").ok_or_else(|| corrupt("sum"))?;
    Ok(Window {
        window_start: rfc3339(window_start_ms),
        window_start_ms,
        window_secs: num(item, "window_secs").ok_or_else(|| corrupt("window_secs"))?,
        count,
        sum,
        min: num(item, "min").ok_or_else(|| corrupt("min"))?,
        max: num(item, "max").ok_or_else(|| corrupt("max"))?,
        mean: if count == 0 { 0.0 } else { sum / count as f64 },
        updated_at: rfc3339(num(item, "updated_at").ok_or_else(|| corrupt("updated_at"))?),
        // Set from the view's watermark once the page is read (`ViewReader::finalize`).
        is_final: false,
        key,
    })
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn unavailable<E>(what: &'static str) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| {
        Error::Unavailable(format!(
            "{what}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        ))
    }
}

/// The view table, read.
#[derive(Debug, Clone)]
pub struct ViewReader {
    dynamo: Client,
    table: String,
    claims_table: Option<String>,
}

impl ViewReader {
    /// Reads `table` through `dynamo`; no window is final until
    /// [`ViewReader::with_watermark`] says where the watermark is.
    pub fn new(dynamo: Client, table: impl Into<String>) -> Self {
        ViewReader {
            dynamo,
            table: table.into(),
            claims_table: None,
        }
    }

    /// Reads the view's watermark item from `claims_table` ([`riffle_view::watermark`]).
    #[must_use]
    pub fn with_watermark(mut self, claims_table: impl Into<String>) -> Self {
        self.claims_table = Some(claims_table.into());
        self
    }

    /// The view's watermark item (empty without a claims table or before the aggregator
    /// published one): one GetItem per request, so every window of a page is judged by one
    /// watermark.
    async fn watermarks(&self) -> Result<Watermarks, Error> {
        let Some(table) = &self.claims_table else {
            return Ok(Watermarks::default());
        };
        let out = self
            .dynamo
            .get_item()
            .table_name(table)
            .key(watermark::CLAIMS_KEY_ATTRIBUTE, s(watermark::WATERMARK_KEY))
            .send()
            .await
            .map_err(unavailable("GetItem watermark"))?;
        Ok(out.item().map(Watermarks::from_item).unwrap_or_default())
    }

    /// One key's windows starting in `[lo, hi]`, oldest first, at most `want`.
    async fn key_windows(
        &self,
        key: &str,
        lo: i64,
        hi: i64,
        want: usize,
    ) -> Result<Vec<Window>, Error> {
        let mut windows = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .query()
                .table_name(&self.table)
                .key_condition_expression("agg_key = :k AND window_start BETWEEN :lo AND :hi")
                .expression_attribute_values(":k", s(key))
                .expression_attribute_values(":lo", n(lo))
                .expression_attribute_values(":hi", n(hi))
                .limit(i32::try_from(want - windows.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable("Query"))?;
            for item in page.items() {
                windows.push(window_of(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() || windows.len() >= want {
                return Ok(windows);
            }
        }
    }

    /// `GET /v1/windows`.
    pub async fn windows(&self, q: &WindowsQuery) -> Result<WindowsPage, Error> {
        let lo = q.after.map_or(q.from, |after| after.saturating_add(1));
        let marks = self.watermarks().await?;
        // One more than a page: whether there is a next page is known without asking again.
        let mut windows = self.key_windows(&q.key, lo, q.to - 1, q.limit + 1).await?;
        finalize(&mut windows, &marks);
        let next_cursor = if windows.len() > q.limit {
            windows.truncate(q.limit);
            windows
                .last()
                .map(|w| Cursor::Windows(w.window_start_ms).encode())
        } else {
            None
        };
        Ok(WindowsPage {
            key: q.key.clone(),
            watermark: WatermarkInfo::of(&marks),
            windows,
            next_cursor,
        })
    }

    /// The index items of `view` with window start in `[lo, hi]`, oldest first, read until
    /// `enough` says so (given what was read) or none are left; with whether some are left.
    async fn view_items(
        &self,
        view: &str,
        lo: i64,
        hi: i64,
        mut enough: impl FnMut(&[Window]) -> bool,
    ) -> Result<(Vec<Window>, bool), Error> {
        let mut windows = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamo
                .query()
                .table_name(&self.table)
                .index_name(BY_VIEW_INDEX)
                .key_condition_expression("#v = :v AND window_start BETWEEN :lo AND :hi")
                .expression_attribute_names("#v", VIEW_NAME_ATTRIBUTE)
                .expression_attribute_values(":v", s(view))
                .expression_attribute_values(":lo", n(lo))
                .expression_attribute_values(":hi", n(hi))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable("Query by_view"))?;
            for item in page.items() {
                windows.push(window_of(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok((windows, false));
            }
            if enough(&windows) {
                return Ok((windows, true));
            }
        }
    }

    /// The start and length of the window of `view` that `at` falls in (or the latest with
    /// data, without `at`); none when the view has no data at or before it.
    async fn resolve_window(
        &self,
        view: &str,
        at: Option<i64>,
    ) -> Result<Option<(i64, u32)>, Error> {
        let latest = self
            .dynamo
            .query()
            .table_name(&self.table)
            .index_name(BY_VIEW_INDEX)
            .key_condition_expression("#v = :v AND window_start <= :at")
            .expression_attribute_names("#v", VIEW_NAME_ATTRIBUTE)
            .expression_attribute_values(":v", s(view))
            .expression_attribute_values(":at", n(at.unwrap_or(i64::MAX)))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(unavailable("Query by_view"))?;
        let Some(item) = latest.items().first() else {
            return Ok(None);
        };
        let found = window_of(item)?;
        let length_ms = i64::from(found.window_secs.max(1)) * 1000;
        Ok(Some(match at {
            // The window `at` falls in has no data: its start, on the same grid.
            Some(at) if at >= found.window_start_ms + length_ms => {
                (at - at.rem_euclid(length_ms), found.window_secs)
            }
            _ => (found.window_start_ms, found.window_secs),
        }))
    }

    /// `GET /v1/top`.
    pub async fn top(&self, q: &TopQuery) -> Result<TopPage, Error> {
        let marks = self.watermarks().await?;
        let resolved = match q.after {
            // The cursor's window, whatever is latest now: a page follows its first.
            Some((window, _)) => self
                .resolve_window(&q.view, Some(window))
                .await?
                .filter(|(start, _)| *start == window)
                .ok_or_else(|| {
                    Error::BadRequest("`cursor` names a window this view has no data in".into())
                })
                .map(Some)?,
            None => self.resolve_window(&q.view, q.at).await?,
        };
        let empty = TopPage {
            view: q.view.clone(),
            watermark: WatermarkInfo::of(&marks),
            by: q.by.name(),
            window_start: None,
            window_start_ms: None,
            window_secs: None,
            total_keys: 0,
            complete: true,
            keys: Vec::new(),
            next_cursor: None,
        };
        let Some((window_start, window_secs)) = resolved else {
            return Ok(empty);
        };
        let (mut keys, more) = self
            .view_items(&q.view, window_start, window_start, |read| {
                read.len() >= MAX_TOP_KEYS
            })
            .await?;
        keys.truncate(MAX_TOP_KEYS);
        finalize(&mut keys, &marks);
        keys.sort_by(|a, b| {
            b.rank_value(q.by)
                .total_cmp(&a.rank_value(q.by))
                .then_with(|| a.key.cmp(&b.key))
        });
        let first = q.after.map_or(0, |(_, rank)| rank);
        let total_keys = keys.len();
        let page: Vec<Ranked> = keys
            .into_iter()
            .enumerate()
            .skip(first)
            .take(q.limit)
            .map(|(i, window)| Ranked {
                rank: i + 1,
                window,
            })
            .collect();
        let next = first + page.len();
        Ok(TopPage {
            window_start: Some(rfc3339(window_start)),
            window_start_ms: Some(window_start),
            window_secs: Some(window_secs),
            total_keys,
            complete: !more,
            keys: page,
            next_cursor: (next < total_keys).then(|| Cursor::Top(window_start, next).encode()),
            ..empty
        })
    }

    /// `GET /v1/series`.
    pub async fn series(&self, q: &SeriesQuery) -> Result<SeriesPage, Error> {
        let lo = q.resume.unwrap_or(q.from);
        let hi = q.to - 1;
        let marks = self.watermarks().await?;
        let page = |points: Vec<Point>, next: Option<i64>| SeriesPage {
            view: q.view.clone(),
            watermark: WatermarkInfo::of(&marks),
            key: q.key.clone(),
            points,
            next_cursor: next.map(|from| Cursor::Series(from).encode()),
        };
        if let Some(key) = &q.key {
            let mut windows = self.key_windows(key, lo, hi, q.limit + 1).await?;
            finalize(&mut windows, &marks);
            let next = (windows.len() > q.limit).then(|| windows[q.limit].window_start_ms);
            windows.truncate(q.limit);
            return Ok(page(windows.iter().map(Point::of).collect(), next));
        }
        // Windows come in window-start order, each window's keys together: a window is
        // whole once the next one begins. Reading stops once a page's worth is whole, or
        // the item budget is spent.
        let limit = q.limit;
        let (mut items, more) = self
            .view_items(&q.view, lo, hi, |read| {
                read.len() >= MAX_SERIES_ITEMS || distinct_starts(read) > limit
            })
            .await?;
        finalize(&mut items, &marks);
        let mut points: Vec<Point> = Vec::new();
        for window in &items {
            match points.last_mut() {
                Some(point) if point.window_start_ms == window.window_start_ms => {
                    point.fold(window)
                }
                _ => points.push(Point::of(window)),
            }
        }
        let mut next = None;
        if points.len() > limit {
            // Whole windows beyond the page: the next page starts at the first of them.
            next = Some(points[limit].window_start_ms);
            points.truncate(limit);
        } else if more && points.len() > 1 {
            // The last window may be cut short by the read budget: read it again next.
            next = points.pop().map(|p| p.window_start_ms);
        } else if more && let Some(last) = points.last_mut() {
            // One window with more keys than a page reads: answered as far as read.
            last.complete = false;
            next = Some(last.window_start_ms + 1).filter(|from| *from <= hi);
        }
        Ok(page(points, next))
    }
}

/// Marks the windows the watermark made final.
fn finalize(windows: &mut [Window], marks: &Watermarks) {
    for w in windows {
        w.is_final = marks.is_final(&w.key, w.window_start_ms, w.window_secs);
    }
}

/// How many different window starts `read` holds (it is in window-start order).
fn distinct_starts(read: &[Window]) -> usize {
    read.windows(2)
        .filter(|pair| pair[0].window_start_ms != pair[1].window_start_ms)
        .count()
        + usize::from(!read.is_empty())
}
