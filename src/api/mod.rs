//! The HTTP API (docs/api.md), served by `kinitro api` and by `kinitro run`: stateless apart from
//! per-process caches, so any number of instances can run behind a load balancer.

pub mod auth;
pub mod body;
pub mod cache;
pub mod claims;
pub mod cycles;
pub mod error;
pub mod health;
pub mod miners;
pub mod openapi;
pub mod pacing;
pub mod scores;
pub mod status;
pub mod tasks;
pub mod verifications;
pub mod weights;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpResponse, HttpServer};
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::AsyncPgConnection;

use crate::config::api::ApiConfig;
use crate::db::DbPool;
use error::ApiError;
use kinitro_actors::ports::StoreError;
use kinitro_actors::task_queue_actor::reap_stale_round;

/// How often the API re-queues stale tasks (docs/database.md §5).
const REAPER_PERIOD: Duration = Duration::from_secs(30);

/// Connections of the public read endpoints (docs/api.md §1.3), apart from the executors' pool.
pub const PUBLIC_POOL_SIZE: usize = 2;

/// The answers of the public read endpoints, each reused for [`cache::MAX_AGE`].
pub struct PublicAnswers {
    /// `GET /v1/status`.
    pub status: cache::Cached<(), cache::Serialized<crate::wire::Status>, ApiError>,
    /// `GET /v1/miners`.
    pub miners: cache::Cached<(), cache::Serialized<crate::wire::Miners>, ApiError>,
    /// `GET /v1/environments`.
    pub environments: cache::Cached<(), cache::Serialized<Vec<crate::wire::Environment>>, ApiError>,
    /// `GET /v1/tasks/stats`, by its `cycle_id` parameter.
    pub task_counts: cache::Cached<Option<i64>, crate::db::tasks::TaskCounts, ApiError>,
    /// The dashboard's results-in-the-last-minute count, by cycle.
    pub pace: cache::Cached<i32, i64, ApiError>,
}

impl Default for PublicAnswers {
    fn default() -> Self {
        Self {
            status: cache::Cached::new(cache::MAX_AGE),
            miners: cache::Cached::new(cache::MAX_AGE),
            environments: cache::Cached::new(cache::MAX_AGE),
            task_counts: cache::Cached::new(cache::MAX_AGE),
            pace: cache::Cached::new(cache::MAX_AGE),
        }
    }
}

/// Shared state of every worker: the pools, the keys and the per-process caches.
#[derive(Clone)]
pub struct AppState {
    /// The pool of the task endpoints (and of everything not listed as public).
    pub pool: DbPool,
    /// The small pool of the public read endpoints, with a statement timeout (docs/api.md §1.3).
    pub public_pool: DbPool,
    /// Recent answers of the public read endpoints.
    pub public: Arc<PublicAnswers>,
    /// Task-endpoint authentication.
    pub auth: auth::Auth,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Fetches waiting to be claimed together.
    pub claims: claims::ClaimQueue,
    /// `total_pending` of the last fetch, with when it was counted.
    pub pending_cache: Arc<Mutex<Option<(Instant, i64)>>>,
    /// The serialised latest-weights body, with when it was read.
    pub weights_cache: Arc<Mutex<Option<(Instant, bytes::Bytes)>>>,
    /// The metrics registry.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    /// State for a service configured by `config`.
    pub fn new(
        config: &ApiConfig,
        pool: DbPool,
        public_pool: DbPool,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            pool,
            public_pool,
            public: Arc::default(),
            auth: auth::Auth::new(
                &config.api_keys,
                &config.executor_keys,
                config.auth_disabled,
            ),
            max_body_bytes: config.max_body_bytes,
            claims: claims::ClaimQueue::default(),
            pending_cache: Arc::default(),
            weights_cache: Arc::default(),
            metrics,
        }
    }

    /// A pooled connection; a pool or connection failure is a 503 (and `kinitro_database_up` 0).
    pub async fn conn(&self) -> Result<Object<AsyncPgConnection>, ApiError> {
        self.checkout(&self.pool).await
    }

    /// A connection of the public read endpoints' pool, as [`Self::conn`].
    pub async fn public_conn(&self) -> Result<Object<AsyncPgConnection>, ApiError> {
        self.checkout(&self.public_pool).await
    }

    async fn checkout(&self, pool: &DbPool) -> Result<Object<AsyncPgConnection>, ApiError> {
        let conn = pool.get().await;
        self.metrics.database(conn.is_ok());
        conn.map_err(|e| {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::database_unavailable()
        })
    }
}

/// One route: `method` to `handler`, any other method a JSON 405.
fn route<F, Args>(path: &str, method: actix_web::Route, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(method.to(handler))
        .default_service(web::to(error::method_not_allowed))
}

/// The route table, written once: [`routes`] registers it and [`ROUTE_PATTERNS`] lists its
/// patterns for the OpenAPI consistency test. A path may name a second method and handler.
macro_rules! route_table {
    ($($path:literal => $method:ident $handler:path $(, $method2:ident $handler2:path)?);* $(;)?) => {
        /// Registers every route of docs/api.md §4 (the literal `latest` routes before the numeric
        /// ones).
        pub fn routes(cfg: &mut web::ServiceConfig) {
            $(cfg.service(route($path, web::$method(), $handler)$(.route(web::$method2().to($handler2)))?);)*
        }

        /// The route patterns [`routes`] registers, for the OpenAPI consistency test.
        pub const ROUTE_PATTERNS: &[&str] = &[$($path),*];
    };
}

route_table! {
    "/health" => get health::health;
    "/v1/status" => get status::status;
    "/v1/weights/latest" => get weights::latest;
    "/v1/weights/{block}" => get weights::by_block;
    "/v1/scores/latest" => get scores::latest;
    "/v1/scores/{cycle_id}" => get scores::by_cycle;
    "/v1/miners" => get miners::miners;
    "/v1/environments" => get status::environments;
    "/v1/tasks/fetch" => post tasks::fetch;
    "/v1/tasks/submit" => post tasks::submit;
    "/v1/tasks/stats" => get tasks::stats;
    "/v1/verifications" => get verifications::list, post verifications::report;
    "/metrics" => get metrics_endpoint;
    "/openapi.json" => get openapi::openapi_json;
}

/// `GET /metrics`: refreshes the database-derived values when due, then encodes.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    if state.metrics.refresh_due() {
        match state.public_conn().await {
            Ok(mut conn) => {
                let ok = state.metrics.refresh(&mut conn).await.is_ok();
                state.metrics.database(ok);
            }
            Err(_) => state.metrics.database(false),
        }
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

/// The `method` label: the standard methods by name, anything else `other`, so a client cannot mint
/// label values (issue 23 item 2). The `route` label is the matched pattern or `unmatched`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Times every request for `kinitro_http_request_duration_seconds` and logs it at DEBUG.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let res = next.call(req).await?;
    let elapsed = start.elapsed();
    let status = res.status().as_u16();
    if let Some(m) = metrics {
        m.http_request(method, &route, status, elapsed.as_secs_f64());
    }
    tracing::debug!(
        event = "http_request",
        method,
        route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0
    );
    Ok(res)
}

/// Runs the stale-task reaper every 30 s until the process ends.
pub fn spawn_reaper(state: AppState, threshold_seconds: f64) {
    actix_web::rt::spawn(async move {
        let mut tick = actix_web::rt::time::interval(REAPER_PERIOD);
        loop {
            tick.tick().await;
            let Ok(mut conn) = state.conn().await else {
                continue;
            };
            let reap = async {
                crate::db::tasks::reap_stale(&mut conn, threshold_seconds)
                    .await
                    .map_err(|e| StoreError(e.to_string()))
            };
            let observe = |event: &'static str, n: u64| state.metrics.task_event(event, n);
            let _ = reap_stale_round(reap, &observe).await;
        }
    });
}

/// Binds and starts the server; the returned future runs until shutdown (SIGINT/SIGTERM).
pub fn serve(config: &ApiConfig, state: AppState) -> std::io::Result<actix_web::dev::Server> {
    spawn_reaper(state.clone(), config.task_stale_threshold.0);
    let data = web::Data::new(state);
    let pacer = pacing::Pacer::new(config.public_reads_per_second).map(web::Data::new);
    let server = HttpServer::new(move || {
        let app = App::new().app_data(data.clone());
        let app = match &pacer {
            Some(pacer) => app.app_data(pacer.clone()),
            None => app,
        };
        // Observed outermost, so paced waits and refusals show in the request metrics.
        app.wrap(from_fn(pacing::pace))
            .wrap(from_fn(observe))
            .configure(routes)
            .configure(crate::dashboard::routes)
            .default_service(web::to(error::not_found))
    })
    .workers(config.workers)
    .shutdown_timeout(30)
    .bind((config.host.as_str(), config.port))?
    .run();
    Ok(server)
}
