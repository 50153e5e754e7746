//! The routes: `GET /v1/windows`, `/v1/top` and `/v1/series`, JSON in, JSON out, behind
//! the auth middleware; every answer that is not data is an [`Error`] body.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use riffle_telemetry::{Metrics, names};

use crate::auth::{self, Auth};
use crate::error::Error;
use crate::params::{SeriesQuery, TopQuery, WindowsQuery};
use crate::view::ViewReader;

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The API over `reader`, with `auth` in front of every route (and of the 404s).
pub fn router(reader: ViewReader, auth: Auth) -> Router {
    Router::new()
        .route("/v1/windows", get(windows))
        .route("/v1/top", get(top))
        .route("/v1/series", get(series))
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .with_state(Arc::new(reader))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            auth::require,
        ))
        // Outermost, so every answer passes, refusals included.
        .layer(axum::middleware::map_response(count_server_errors))
}

/// One `ServerErrors` EMF line per 5xx answer, for the alarm (Lambda counts such answers
/// as successful invocations). Nothing for the rest: a line per request would cost more in
/// log ingestion than the request.
async fn count_server_errors(response: Response) -> Response {
    if response.status().is_server_error() {
        let mut metrics = Metrics::new(crate::SERVICE);
        metrics.count(names::SERVER_ERRORS, 1);
        metrics.flush();
    }
    response
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn query_pairs(query: Pairs) -> Result<Vec<(String, String)>, Error> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|_| Error::BadRequest("the query string is not form-encoded".into()))
}

fn answer<T: serde::Serialize>(result: Result<T, Error>) -> Response {
    match result {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn windows(State(reader): State<Arc<ViewReader>>, query: Pairs) -> Response {
    let result = async {
        let q = WindowsQuery::parse(&query_pairs(query)?, now_ms())?;
        reader.windows(&q).await
    };
    answer(result.await)
}

async fn top(State(reader): State<Arc<ViewReader>>, query: Pairs) -> Response {
    let result = async {
        let q = TopQuery::parse(&query_pairs(query)?, now_ms())?;
        reader.top(&q).await
    };
    answer(result.await)
}

async fn series(State(reader): State<Arc<ViewReader>>, query: Pairs) -> Response {
    let result = async {
        let q = SeriesQuery::parse(&query_pairs(query)?, now_ms())?;
        reader.series(&q).await
    };
    answer(result.await)
}
