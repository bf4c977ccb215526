//! `kinitro miner serve` (miner-protocol.md 8): `POST /reset`, `POST /act`, `GET /health` over
//! actix-web, for local demos, tests and executor benchmarks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::policy::{Policy, PolicyError};
use crate::config::miner::MinerConfig;

struct Shared {
    policy: Mutex<Policy>,
    delay: Duration,
    started: Instant,
}

fn detail(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "detail": message }))
}

async fn reset(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.get("task_config").is_some_and(Value::is_object) => HttpResponse::Ok()
            .json(json!({"status": "ok", "episode_id": hex::encode(rand::random::<[u8; 16]>())})),
        _ => detail(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "body must be {\"task_config\": {...}}",
        ),
    }
}

async fn act(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let obs = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut o)) if o.get("obs").is_some_and(Value::is_object) => {
            o.remove("obs").unwrap_or_default()
        }
        _ => {
            return detail(
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                "body must be {\"obs\": {...}}",
            )
        }
    };
    let answer = shared.policy.lock().unwrap().act(&obs);
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    match answer {
        Ok(action) => HttpResponse::Ok().json(json!({ "action": action })),
        Err(PolicyError::Unprocessable(m)) => {
            detail(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &m)
        }
        Err(PolicyError::NotImplemented(m)) => {
            detail(actix_web::http::StatusCode::NOT_IMPLEMENTED, &m)
        }
    }
}

async fn health(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "healthy", "model_loaded": true, "uptime_seconds": shared.started.elapsed().as_secs_f64()
    }))
}

/// Binds and starts the server; the returned future runs until SIGINT/SIGTERM.
pub fn serve(config: &MinerConfig) -> std::io::Result<actix_web::dev::Server> {
    let shared = web::Data::new(Shared {
        policy: Mutex::new(Policy::new(config.policy, config.seed)),
        delay: Duration::from_millis(config.delay_ms),
        started: Instant::now(),
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
            .route("/reset", web::post().to(reset))
            .route("/act", web::post().to(act))
            .route("/health", web::get().to(health))
    })
    .bind((config.host.as_str(), config.port))?
    .run())
}
