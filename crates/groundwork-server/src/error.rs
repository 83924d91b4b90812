//! The one HTTP error type: every failure leaves the server as
//! `{"error": {"code": "...", "message": "..."}}` with the matching status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use groundwork_core::{Classify, ErrorKind};
use groundwork_db::DbError;
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`, `conflict`,
    /// `payload_too_large`, `unprocessable`, `unavailable`, `internal`.
    pub code: &'static str,
    /// What went wrong, for a person. Never contains internal details.
    pub message: String,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 404: nothing there.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500, logged with its cause; the client only learns that something failed.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code matching the status.
    #[must_use]
    pub fn code(&self) -> &'static str {
        code_for(self.status)
    }
}

/// The contract's code for each status the server sends.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::RANGE_NOT_SATISFIABLE => "range_not_satisfiable",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err.kind() {
            ErrorKind::BadRequest => Self::bad_request(err.to_string()),
            ErrorKind::NotFound => Self::not_found(err.to_string()),
            ErrorKind::Conflict => Self::new(StatusCode::CONFLICT, err.to_string()),
            ErrorKind::Invalid => Self::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()),
            ErrorKind::Unavailable => {
                if matches!(err, DbError::CircuitOpen { .. }) {
                    // Refused without trying: the breaker logged when it opened; a line per
                    // refused request would flood the logs during an outage.
                    tracing::debug!(error = %err, "database unavailable");
                } else {
                    tracing::warn!(error = %error_chain(&err), "database unavailable");
                }
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )
            }
            _ => Self::internal(&err),
        }
    }
}

impl From<groundwork_cache::CacheError> for ApiError {
    fn from(err: groundwork_cache::CacheError) -> Self {
        match err.kind() {
            ErrorKind::Unavailable => {
                tracing::warn!(error = %error_chain(&err), "cache source unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable and nothing is cached for this request; retry later",
                )
            }
            _ => Self::internal(&err),
        }
    }
}

pub(crate) use groundwork_core::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_kinds_map_to_statuses() {
        let cases = [
            (
                DbError::not_found("agent", 42),
                StatusCode::NOT_FOUND,
                "agent 42 not found",
            ),
            (DbError::conflict("taken"), StatusCode::CONFLICT, "taken"),
            (
                DbError::invalid("bad"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad",
            ),
        ];
        for (err, status, message) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status(), status);
            assert_eq!(api.message, message);
        }
        let api = ApiError::from(DbError::Unavailable(sqlx_timeout()));
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code(), "unavailable");
        let api = ApiError::from(DbError::Internal(sqlx_timeout()));
        assert_eq!(
            (api.status(), api.message.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        );
    }

    fn sqlx_timeout() -> sqlx::Error {
        sqlx::Error::PoolTimedOut
    }
}
