//! The view query API: the materialized view read over HTTP as JSON, for analysts and
//! dashboards, without DynamoDB credentials or knowledge of its item format.
//!
//! Endpoints (all GET, all paginated with `limit` and an opaque `cursor`):
//! - `/v1/windows?key=K&from=&to=`: one key's windows over a time range;
//! - `/v1/top?view=V&at=&by=count|sum|max|min|mean`: the keys of a view in one window,
//!   ranked (the latest window with data unless `at` names an instant);
//! - `/v1/series?view=V[&key=K]&from=&to=`: per window, the view's keys folded together
//!   (or one key's), for plotting.
//!
//! Layout: `params` reads and checks a request (every 400 is decided there, pure); `view`
//! reads the table (one key's windows) and its `by_view` index (a view's keys per window);
//! `api` is the router; `auth` the middleware (IAM behind a function URL on AWS, bearer
//! tokens locally); `error` the error bodies; `config` the environment.
//!
//! Metrics: one `ServerErrors` EMF line per 5xx answer, under `Service` = [`SERVICE`].

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod params;
pub mod view;

pub use api::router;
pub use auth::Auth;
pub use config::Config;
pub use error::Error;
pub use view::ViewReader;

/// The service's name: its template, binary and metrics' `Service` dimension.
pub const SERVICE: &str = "view-query";
