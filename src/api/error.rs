//! Error bodies: always `{"detail": "<message>"}` (docs/api.md §1.1).

use crate::wire::ErrorBody;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// An API error with its status and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `detail` text.
    pub detail: String,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            detail: detail.into(),
        }
    }

    /// 401; the response carries `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, detail)
    }

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
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorBody {
            detail: self.detail.clone(),
        })
    }
}

/// Any database failure is a 503 to the client; the cause goes to the log.
impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::warn!(error = %e, "database unavailable");
        Self::database_unavailable()
    }
}

/// Known routes with another method.
pub async fn method_not_allowed() -> HttpResponse {
    ApiError::new(405, "Method Not Allowed").error_response()
}

/// Unknown routes.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found("Not Found").error_response()
}
