//! The crate's one error type, and how each error is told to an HTTP client.
//!
//! Clients branch on the numeric `error_code` of the JSON body, not on the message, so the
//! codes follow the registry API that Confluent-compatible clients already understand.

use axum::http::StatusCode;

/// Everything that can go wrong in the registry, from a bad request to a failing store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema text is not a valid schema of its type.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// The subject name cannot be stored (empty or too long).
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// A version path segment that is neither `latest` nor a positive integer.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// The subject has no versions.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// The subject exists but not at this version.
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: u32,
    },
    /// No schema has this id.
    #[error("Schema {0} not found")]
    SchemaIdNotFound(u32),
    /// The schema is not registered under the subject (lookup).
    #[error("Schema not found")]
    SchemaNotFound,
    /// The new schema does not follow the subject's existing ones at its compatibility level.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        messages.join("; ")
    )]
    Incompatible {
        /// The subject registered under.
        subject: String,
        /// Why, one line per failed rule.
        messages: Vec<String>,
    },
    /// Every version of the subject is soft deleted already.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject with live versions.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// The version is soft deleted already.
    #[error(
        "Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a live version.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no level of its own (and the caller did not ask for the global one).
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// A compatibility level name the API does not know.
    #[error(
        "Invalid compatibility level: {0}. Valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL and FULL_TRANSITIVE"
    )]
    InvalidCompatibilityLevel(String),
    /// No credential, or one that matches no configured user or token.
    #[error("Unauthorized")]
    Unauthenticated,
    /// A valid credential that may not do this (a read-only user writing).
    #[error("Forbidden: this credential may only read")]
    Forbidden,
    /// `iam` mode, and the request carries no IAM caller: it did not come through a function
    /// URL with AuthType `AWS_IAM`, so nobody vouched for who sent it.
    #[error(
        "Unauthorized: no IAM caller in the request; call the registry's function URL with SigV4"
    )]
    NoIamCaller,
    /// `iam` mode: the caller is in none of the registry's role lists (or is a kind of
    /// principal they cannot name, such as a federated user). The principal is the one IAM
    /// authenticated, in the form the lists take.
    #[error("Forbidden: principal {0} is granted no access to this registry")]
    PrincipalNotGranted(String),
    /// `iam` mode: the caller may read, and register under other subjects perhaps, but not
    /// under this one.
    #[error("Forbidden: principal {principal} may not register schemas under subject '{subject}'")]
    SubjectNotGranted {
        /// The caller.
        principal: String,
        /// The subject it tried to register under.
        subject: String,
    },
    /// `iam` mode: deleting and setting compatibility levels are for admins only.
    #[error(
        "Forbidden: principal {principal} is a {role}; deleting and setting compatibility levels take an admin"
    )]
    AdminOnly {
        /// The caller.
        principal: String,
        /// Its highest role: `reader`, `subject writer` or `writer`.
        role: &'static str,
    },
    /// The request body is not the JSON the endpoint expects.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body has a media type the API does not speak.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// No route matches the path.
    #[error("HTTP 404 Not Found")]
    RouteNotFound,
    /// The route exists but not for this method.
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// The backing store failed; `retryable` tells whether the same call may succeed later.
    #[error("store error during {op}: {message}")]
    Store {
        /// The store operation that failed.
        op: &'static str,
        /// What the store said.
        message: String,
        /// Throttling, timeouts and 5xx heal; validation errors and bad items do not.
        retryable: bool,
    },
    /// Concurrent writers kept winning the race for a new version.
    #[error("gave up after {0} conflicting attempts to write a new version")]
    Contention(u32),
    /// The process is misconfigured (environment).
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// Store failures and lost races heal on retry; everything the caller sent wrong does not.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. } => *retryable,
            Error::Contention(_) => true,
            _ => false,
        }
    }

    /// The HTTP status and the API's numeric error code for this error.
    pub fn status_and_code(&self) -> (StatusCode, u32) {
        match self {
            Error::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            Error::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            // 42208 is the API's code for a malformed subject name.
            Error::InvalidSubject(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            Error::InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Error::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            Error::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Error::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            Error::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            Error::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            Error::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            Error::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Error::Unauthenticated | Error::NoIamCaller => (StatusCode::UNAUTHORIZED, 40101),
            Error::Forbidden
            | Error::PrincipalNotGranted(_)
            | Error::SubjectNotGranted { .. }
            | Error::AdminOnly { .. } => (StatusCode::FORBIDDEN, 40301),
            Error::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            Error::SchemaIdNotFound(_) | Error::SchemaNotFound => (StatusCode::NOT_FOUND, 40403),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415),
            Error::RouteNotFound => (StatusCode::NOT_FOUND, 404),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 405),
            Error::Store { .. } | Error::Contention(_) | Error::Config(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, 50001)
            }
        }
    }
}

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_side_failures_are_retryable() {
        let store = Error::Store {
            op: "get",
            message: "throttled".into(),
            retryable: true,
        };
        assert!(store.retryable());
        assert!(Error::Contention(3).retryable());
        assert!(!Error::InvalidSchema("x".into()).retryable());
        assert!(!Error::SchemaIdNotFound(1).retryable());
    }

    #[test]
    fn codes_follow_the_api() {
        assert_eq!(
            Error::SchemaIdNotFound(7).status_and_code(),
            (StatusCode::NOT_FOUND, 40403)
        );
        assert_eq!(
            Error::InvalidVersion("x".into()).status_and_code(),
            (StatusCode::UNPROCESSABLE_ENTITY, 42202)
        );
        assert_eq!(
            Error::Incompatible {
                subject: "s".into(),
                messages: vec![]
            }
            .status_and_code(),
            (StatusCode::CONFLICT, 409)
        );
        assert_eq!(
            Error::Unauthenticated.status_and_code(),
            (StatusCode::UNAUTHORIZED, 40101)
        );
        assert_eq!(
            Error::Forbidden.status_and_code(),
            (StatusCode::FORBIDDEN, 40301)
        );
        assert_eq!(
            Error::Contention(3).status_and_code().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
