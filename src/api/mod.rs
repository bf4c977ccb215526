//! The HTTP API (spec: api.md), served by `kinitro api` and by `kinitro run`.
//!
//! This build serves `/health` and the weights endpoints the validators poll; the remaining routes of
//! api.md are the API issue's work and answer the spec's JSON 404 until then.

pub mod error;
pub mod health;
pub mod weights;

use actix_web::{web, App, HttpServer};

use crate::config::api::ApiConfig;
use crate::db::DbPool;

/// Shared, read-only state of every worker.
#[derive(Clone)]
pub struct AppState {
    /// The connection pool.
    pub pool: DbPool,
}

/// Registers every route on an actix-web service config.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health::health)))
        .service(web::resource("/v1/weights/latest").route(web::get().to(weights::latest)))
        .service(web::resource("/v1/weights/{block}").route(web::get().to(weights::by_block)));
}

/// Binds and starts the server; the returned future runs until shutdown (SIGINT/SIGTERM).
pub fn serve(config: &ApiConfig, state: AppState) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes)
            .default_service(web::to(error::not_found))
    })
    .workers(config.workers)
    .shutdown_timeout(30)
    .bind((config.host.as_str(), config.port))?
    .run();
    Ok(server)
}
