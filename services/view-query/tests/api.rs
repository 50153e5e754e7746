//! The query API against the local DynamoDB (moto) through the real SDK: the view table
//! created from `infra/platform.yaml` (its `by_view` index included), items written as the
//! aggregator writes them, the router served on a loopback socket and called over HTTP.
//!
//! One emulator serves every scenario; each scenario has its own table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use reqwest::StatusCode;
use riffle_local::Emulators;
use riffle_view::{Aggregate, ViewKey, ViewRow, row_item};
use riffle_view_query::{Auth, ViewReader, router};
use serde_json::Value;

const TOKEN: &str = "analyst-token";
/// 2026-12-07T00:00:00Z, a window boundary.
const T0: i64 = 1_796_601_600_000;
const MINUTE: i64 = 60_000;

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .get(reqwest::Url::parse_with_params(&format!("{}{path}", self.url), query).unwrap())
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Every page of `path`, following `next_cursor`, with `field`'s entries joined.
    async fn all(&self, path: &str, query: &[(&str, &str)], field: &str) -> (Vec<Value>, usize) {
        let mut entries = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let (status, body) = self.get(path, &q).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            pages += 1;
            entries.extend(body[field].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return (entries, pages),
            }
        }
    }
}

async fn serve(dynamo: Client, table: &str, auth: Auth) -> Api {
    serve_reader(ViewReader::new(dynamo, table), auth).await
}

async fn serve_reader(reader: ViewReader, auth: Auth) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(reader, auth);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api {
        url,
        http: reqwest::Client::new(),
    }
}

async fn view_table(dynamo: &Client, name: &str) {
    platform_table(dynamo, "ViewTable", name).await;
}

/// Creates the table `logical` of `infra/platform.yaml` as `name`.
async fn platform_table(dynamo: &Client, logical: &str, name: &str) {
    let plan = riffle_plan::plan(
        &riffle_plan::project_root().unwrap().join("infra"),
        riffle_plan::LOCAL_ENV,
    )
    .unwrap();
    let spec = plan.tables.iter().find(|t| t.logical == logical).unwrap();
    assert!(
        logical != "ViewTable"
            || spec
                .global_indexes
                .iter()
                .any(|i| i.name == riffle_view::BY_VIEW_INDEX),
        "the template declares the index the API reads"
    );
    riffle_aws::table::create_table(dynamo, name, spec.shape())
        .unwrap()
        .send()
        .await
        .unwrap();
}

fn row(key: &str, window_start: i64, count: i64, sum: f64) -> ViewRow {
    ViewRow {
        key: ViewKey {
            agg_key: key.to_owned(),
            window_start,
        },
        window_secs: 60,
        aggregate: Aggregate {
            count,
            sum,
            min: -1.0,
            max: sum,
        },
        updated_at: window_start + 61_000,
        expires_at: window_start / 1000 + 86_400,
        version: 1,
        applied: BTreeMap::new(),
    }
}

async fn put(dynamo: &Client, table: &str, rows: &[ViewRow]) {
    for chunk in rows.chunks(25) {
        let writes = chunk
            .iter()
            .map(|r| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(row_item(r)))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        let out = dynamo
            .batch_write_item()
            .request_items(table, writes)
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items().is_none_or(HashMap::is_empty));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_each_endpoint_pages_and_refuses_what_it_should() {
    let state = std::env::temp_dir().join(format!("riffle-view-query-{}", std::process::id()));
    let emulators = Emulators::start(&state).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let dynamo = Client::new(&sdk);
    let table = "view-query-test";
    view_table(&dynamo, table).await;

    // One key over 250 windows; 25 keys of `orders` in each of 5 windows; another view.
    let mut rows: Vec<ViewRow> = (0..250)
        .map(|i| row("pageviews:device=MOBILE", T0 + i * MINUTE, i + 1, i as f64))
        .collect();
    for w in 0..5 {
        for k in 0..25 {
            rows.push(row(
                &format!("orders:category=c{k:02}"),
                T0 + w * MINUTE,
                (k * 7) % 25 + 1 + w,
                ((k * 11) % 25) as f64 * 1.5,
            ));
        }
    }
    rows.push(row("sensors:site=a", T0 + 10 * MINUTE, 3, 9.0));
    put(&dynamo, table, &rows).await;
    let api = serve(dynamo.clone(), table, Auth::Bearer(vec![TOKEN.to_owned()])).await;
    let t = |ms: i64| ms.to_string();

    // windows: every window of the key in range, oldest first, over three pages.
    let (windows, pages) = api
        .all(
            "/v1/windows",
            &[
                ("key", "pageviews:device=MOBILE"),
                ("from", &t(T0)),
                ("to", &t(T0 + 250 * MINUTE)),
            ],
            "windows",
        )
        .await;
    assert_eq!((windows.len(), pages), (250, 3));
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["window_start_ms"], T0 + i as i64 * MINUTE);
        assert_eq!(w["count"], i as i64 + 1);
        assert_eq!(w["window_secs"], 60);
        assert_eq!(w["key"], "pageviews:device=MOBILE");
    }
    assert_eq!(windows[0]["window_start"], "2026-12-07T00:00:00.000Z");
    // A range is [from, to): the window starting at `to` is out, at `from` in.
    let (status, body) = api
        .get(
            "/v1/windows",
            &[
                ("key", "pageviews:device=MOBILE"),
                ("from", &t(T0 + 10 * MINUTE)),
                ("to", &t(T0 + 12 * MINUTE)),
                ("limit", "5"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let starts: Vec<i64> = body["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window_start_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, [T0 + 10 * MINUTE, T0 + 11 * MINUTE]);
    assert!(body["next_cursor"].is_null());
    // A key with no data: an empty page, not an error.
    let (status, body) = api
        .get("/v1/windows", &[("key", "orders:category=none")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["windows"], serde_json::json!([]));

    // top: all 25 keys of a window, ranked, over three pages; ties broken by key.
    let window2 = t(T0 + 2 * MINUTE + 30_000);
    let (ranked, pages) = api
        .all(
            "/v1/top",
            &[("view", "orders"), ("at", &window2), ("limit", "10")],
            "keys",
        )
        .await;
    assert_eq!((ranked.len(), pages), (25, 3));
    let mut expected: Vec<(i64, String)> = rows
        .iter()
        .filter(|r| r.key.window_start == T0 + 2 * MINUTE && r.key.agg_key.starts_with("orders:"))
        .map(|r| (r.aggregate.count, r.key.agg_key.clone()))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let got: Vec<(i64, String)> = ranked
        .iter()
        .map(|k| {
            (
                k["count"].as_i64().unwrap(),
                k["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(ranked[0]["rank"], 1);
    assert_eq!(ranked[24]["rank"], 25);
    // By sum; the window's own fields.
    let (status, body) = api
        .get(
            "/v1/top",
            &[
                ("view", "orders"),
                ("at", &window2),
                ("by", "sum"),
                ("limit", "3"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["window_start_ms"], T0 + 2 * MINUTE);
    assert_eq!(
        (body["total_keys"].as_i64(), body["complete"].as_bool()),
        (Some(25), Some(true))
    );
    let sums: Vec<f64> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["sum"].as_f64().unwrap())
        .collect();
    assert_eq!(sums, [36.0, 34.5, 33.0]);
    // No `at`: the latest window with data (the fifth).
    let (_, body) = api
        .get("/v1/top", &[("view", "orders"), ("limit", "1")])
        .await;
    assert_eq!(body["window_start_ms"], T0 + 4 * MINUTE);
    // An instant in a window without data: that window, empty, on the same grid.
    let (_, body) = api
        .get(
            "/v1/top",
            &[("view", "orders"), ("at", &t(T0 + 7 * MINUTE + 5))],
        )
        .await;
    assert_eq!(body["window_start_ms"], T0 + 7 * MINUTE);
    assert_eq!(body["keys"], serde_json::json!([]));
    // A view with no data at all.
    let (status, body) = api.get("/v1/top", &[("view", "nothing")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["window_start"].is_null());

    // series: per window, the view's keys folded; two points a page.
    let (from, to) = (t(T0), t(T0 + 60 * MINUTE));
    let range: [(&str, &str); 4] = [
        ("view", "orders"),
        ("from", &from),
        ("to", &to),
        ("limit", "2"),
    ];
    let (points, pages) = api.all("/v1/series", &range, "points").await;
    assert_eq!((points.len(), pages), (5, 3));
    for (w, point) in points.iter().enumerate() {
        let w = w as i64;
        let of_window: Vec<&ViewRow> = rows
            .iter()
            .filter(|r| {
                r.key.window_start == T0 + w * MINUTE && r.key.agg_key.starts_with("orders:")
            })
            .collect();
        assert_eq!(point["window_start_ms"], T0 + w * MINUTE);
        assert_eq!(point["keys"], 25);
        assert_eq!(
            point["count"],
            of_window.iter().map(|r| r.aggregate.count).sum::<i64>()
        );
        let sum: f64 = of_window.iter().map(|r| r.aggregate.sum).sum();
        assert!((point["sum"].as_f64().unwrap() - sum).abs() < 1e-9);
        assert_eq!(point["complete"], true);
    }
    // One key's series is its windows.
    let (status, body) = api
        .get(
            "/v1/series",
            &[
                ("view", "sensors"),
                ("key", "sensors:site=a"),
                ("from", &t(T0)),
                ("to", &t(T0 + 60 * MINUTE)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["points"][0]["count"], 3);
    assert_eq!(body["points"].as_array().unwrap().len(), 1);

    // Refusals: each class of bad request is a 400 naming what to change.
    for (path, query, says) in [
        ("/v1/windows", vec![], "`key` is required"),
        (
            "/v1/windows",
            vec![("key", "k"), ("from", "tomorrow")],
            "`from` = \"tomorrow\"",
        ),
        (
            "/v1/windows",
            vec![("key", "k"), ("from", "now"), ("to", "-1h")],
            "before `to`",
        ),
        (
            "/v1/windows",
            vec![("key", "k"), ("limit", "5000")],
            "from 1 to 1000",
        ),
        (
            "/v1/windows",
            vec![("key", "k"), ("cursor", "forged")],
            "`cursor`",
        ),
        (
            "/v1/windows",
            vec![("key", "k"), ("colour", "red")],
            "unknown parameter",
        ),
        ("/v1/top", vec![("view", "orders"), ("by", "p99")], "`by`"),
        (
            "/v1/series",
            vec![("view", "orders"), ("key", "sensors:site=a")],
            "not a key of view",
        ),
    ] {
        let (status, body) = api.get(path, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {query:?}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    // A cursor of one endpoint is refused by another.
    let (_, first) = api
        .get("/v1/top", &[("view", "orders"), ("limit", "1")])
        .await;
    let top_cursor = first["next_cursor"].as_str().unwrap();
    let (status, _) = api
        .get("/v1/windows", &[("key", "k"), ("cursor", top_cursor)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api.get("/v2/anything", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let post = api
        .http
        .post(format!("{}/v1/top", api.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Credentials: none -> 401 with a challenge; another scheme -> 401; wrong -> 403.
    let plain = api
        .http
        .get(format!("{}/v1/top?view=orders", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
    assert!(
        plain.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let basic = api
        .http
        .get(format!("{}/v1/top?view=orders", api.url))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let wrong = api
        .http
        .get(format!("{}/v1/top?view=orders", api.url))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(
        !body.to_string().contains("guess"),
        "the sent credential is not echoed: {body}"
    );

    // The view unreadable (no such table): 503, and nothing about the table in the answer.
    let broken = serve(
        dynamo.clone(),
        "no-such-table",
        Auth::Bearer(vec![TOKEN.to_owned()]),
    )
    .await;
    let (status, body) = broken.get("/v1/windows", &[("key", "k")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.to_string().contains("no-such-table"), "{body}");
    // An item the aggregator would not write: 500, its content not in the answer.
    let mut corrupt = row_item(&row("orders:category=bad", T0 + 30 * MINUTE, 1, 1.0));
    corrupt.insert("count".into(), AttributeValue::S("secret-ish".into()));
    dynamo
        .put_item()
        .table_name(table)
        .set_item(Some(corrupt))
        .send()
        .await
        .unwrap();
    let (status, body) = api
        .get(
            "/v1/windows",
            &[
                ("key", "orders:category=bad"),
                ("from", &t(T0)),
                ("to", &t(T0 + 60 * MINUTE)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains("secret-ish"), "{body}");

    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_are_final_once_the_watermark_passes_their_end_and_lateness() {
    use riffle_view::watermark::{WATERMARK_KEY, shard_value};
    let state = std::env::temp_dir().join(format!("riffle-view-final-{}", std::process::id()));
    let emulators = Emulators::start(&state).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let dynamo = Client::new(&sdk);
    let (table, claims) = ("view-final", "claims-final");
    view_table(&dynamo, table).await;
    platform_table(&dynamo, "ClaimsTable", claims).await;
    let mut rows: Vec<ViewRow> = (0..3)
        .map(|i| row("pageviews:device=MOBILE", T0 + i * MINUTE, 1, 1.0))
        .collect();
    rows.push(row("orders:category=c1", T0, 2, 2.0));
    put(&dynamo, table, &rows).await;
    let reader = ViewReader::new(dynamo.clone(), table).with_watermark(claims);
    let api = serve_reader(reader, Auth::Bearer(vec![TOKEN.to_owned()])).await;
    let t = |ms: i64| ms.to_string();
    let windows = || async {
        let (status, body) = api
            .get(
                "/v1/windows",
                &[
                    ("key", "pageviews:device=MOBILE"),
                    ("from", &t(T0)),
                    ("to", &t(T0 + 3 * MINUTE)),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    let finals = |body: &Value, field: &str| -> Vec<bool> {
        body[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["final"].as_bool().unwrap())
            .collect()
    };

    // No watermark yet: nothing is final.
    let body = windows().await;
    assert_eq!(body["watermark"], Value::Null, "{body}");
    assert_eq!(finals(&body, "windows"), vec![false; 3]);

    // Two aggregator shards at T0 + 3.5 min and T0 + 5 min, one silent for ten minutes
    // before them (a shard a reshard closed); orders allow 5 minutes of lateness, page views
    // the default two.
    let now = T0 + 60 * MINUTE;
    dynamo
        .put_item()
        .table_name(claims)
        .item("pk", AttributeValue::S(WATERMARK_KEY.into()))
        .item("s:shardId-0", shard_value(T0 + 7 * MINUTE / 2, now))
        .item("s:shardId-1", shard_value(T0 + 5 * MINUTE, now - 1_000))
        .item("s:shardId-9", shard_value(T0, now - 10 * MINUTE))
        .item("l:pageviews", AttributeValue::N("120000".into()))
        .item("l:orders", AttributeValue::N("300000".into()))
        .send()
        .await
        .unwrap();
    let body = windows().await;
    assert_eq!(body["watermark_ms"], T0 + 7 * MINUTE / 2, "{body}");
    assert_eq!(body["watermark"], "2026-12-07T00:03:30.000Z");
    // [T0, T0 + 1 min) closed at T0 + 3 min; the next closes at T0 + 4 min.
    assert_eq!(finals(&body, "windows"), vec![true, false, false]);
    let (status, top) = api.get("/v1/top", &[("view", "orders")]).await;
    assert_eq!(status, StatusCode::OK, "{top}");
    assert_eq!(top["watermark_ms"], T0 + 7 * MINUTE / 2);
    // Five minutes of lateness: the orders window of T0 closes at T0 + 6 min.
    assert_eq!(finals(&top, "keys"), vec![false]);
    let (status, series) = api
        .get(
            "/v1/series",
            &[
                ("view", "pageviews"),
                ("from", &t(T0)),
                ("to", &t(T0 + 3 * MINUTE)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(finals(&series, "points"), vec![true, false, false]);

    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}
