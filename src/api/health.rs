//! `GET /health` (docs/api.md §4.1): `SELECT 1` with a 2 s timeout.

use std::time::Duration;

use crate::wire::Health;
use actix_web::{web, HttpResponse};

use super::AppState;

/// How long the probe query may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn database_up(state: &AppState) -> bool {
    let probe = async {
        let mut conn = state.pool.get().await.ok()?;
        crate::db::views::ping(&mut conn).await.ok()
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(_))
    )
}

/// 200 when the database answers, 503 otherwise.
#[utoipa::path(get, path = "/health", responses((status = 200, body = crate::wire::Health), (status = 503, body = crate::wire::Health)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let body = |status: &str, database: &str| Health {
        database: database.into(),
        status: status.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    if database_up(&state).await {
        HttpResponse::Ok().json(body("healthy", "connected"))
    } else {
        HttpResponse::ServiceUnavailable().json(body("unhealthy", "disconnected"))
    }
}
