//! The API's one error type and how each is answered: a status, a stable code and a message
//! that says what to change, never what the view holds nor what failed inside (that goes to
//! the log).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request was not answered with data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not say something the API can answer (400).
    #[error("{0}")]
    BadRequest(String),
    /// No credential, or one of another scheme (401, with `WWW-Authenticate`).
    #[error("a credential is required: send Authorization: Bearer <token>")]
    Unauthenticated,
    /// A credential that is not one of the configured ones (403).
    #[error("the credential is not valid for this API")]
    Forbidden,
    /// No such route (404).
    #[error("no such endpoint: the API serves GET /v1/windows, /v1/top and /v1/series")]
    RouteNotFound,
    /// A route asked with another method (405).
    #[error("only GET is served")]
    MethodNotAllowed,
    /// The view could not be read (503); the detail is logged, not answered.
    #[error("the view could not be read just now; try again")]
    Unavailable(String),
    /// An item of the view does not have the aggregator's shape (500); logged.
    #[error("the view holds an item this API cannot read; the operators have it in the log")]
    Corrupt(String),
    /// The process cannot start as configured.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::RouteNotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Corrupt(_) | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden => "forbidden",
            Error::RouteNotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Unavailable(_) => "unavailable",
            Error::Corrupt(_) | Error::Config(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Unavailable(detail) => tracing::warn!(%detail, "view read failed"),
            Error::Corrupt(detail) | Error::Config(detail) => {
                tracing::error!(%detail, "answered 500");
            }
            _ => {}
        }
        let body = Body {
            error: self.code(),
            message: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}
