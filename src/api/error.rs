//! Error bodies: always `{"detail": "<message>"}` (api.md 1.1).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// An API error with its status and message.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `detail` text.
    pub detail: String,
}

impl ApiError {
    /// 404 with a message.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            detail: detail.into(),
        }
    }

    /// 422 with a message.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: detail.into(),
        }
    }

    /// 503: the database cannot be reached or timed out.
    pub fn database_unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "Database unavailable".into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "detail": self.detail }))
    }
}

/// Any database failure is a 503 to the client; the cause goes to the log.
impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::warn!(error = %e, "database unavailable");
        Self::database_unavailable()
    }
}

/// Unknown routes.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found("Not Found").error_response()
}
