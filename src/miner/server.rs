//! `kinitro miner serve` (docs/miner-protocol.md §8): `POST /reset`, `POST /act`, `GET /health`
//! over actix-web, for local demos, tests and executor benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::policy::{privileged_state, Policy, PolicyError};
use crate::config::miner::MinerConfig;
use crate::sim::task::Task;

/// Episodes remembered for `X-Kinitro-Episode` (the oldest are forgotten beyond this).
const MAX_EPISODES: usize = 100_000;

/// The task of each episode by its `X-Kinitro-Episode`, and of the latest `/reset`.
#[derive(Default)]
struct Episodes {
    by_header: HashMap<String, Option<Task>>,
    latest: Option<Task>,
}

struct Shared {
    policy: Mutex<Policy>,
    episodes: Mutex<Episodes>,
    delay: Duration,
    started: Instant,
}

fn detail(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "detail": message }))
}

fn episode_header(req: &actix_web::HttpRequest) -> Option<String> {
    req.headers()
        .get("x-kinitro-episode")?
        .to_str()
        .ok()
        .map(str::to_owned)
}

async fn reset(
    shared: web::Data<Shared>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.get("task_config").is_some_and(Value::is_object) => {
            let task = v
                .pointer("/task_config/env_id")
                .and_then(Value::as_str)
                .and_then(Task::from_env_id);
            let mut episodes = shared.episodes.lock().unwrap();
            episodes.latest = task;
            if let Some(id) = episode_header(&req) {
                if episodes.by_header.len() >= MAX_EPISODES {
                    episodes.by_header.clear();
                }
                episodes.by_header.insert(id, task);
            }
            HttpResponse::Ok().json(
                json!({"status": "ok", "episode_id": hex::encode(rand::random::<[u8; 16]>())}),
            )
        }
        _ => detail(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "body must be {\"task_config\": {...}}",
        ),
    }
}

/// The `extra` member of an `/act` body's observation (`{"obs": {...}}`, anything else is refused);
/// the observation's other members are checked as JSON and skipped. Building the whole observation
/// as a `Value` (maps, vectors, boxed numbers) was a fifth of this server's time per step, and none
/// of the reference policies reads more than `extra.state`.
struct ObsExtra(Option<Value>);

/// An observation member's name, as far as [`ObsExtra`] cares (no string is built for it).
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Member {
    Extra,
    #[serde(other)]
    Other,
}

impl<'de> serde::Deserialize<'de> for ObsExtra {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = ObsExtra;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an observation object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ObsExtra, A::Error> {
                let mut extra = None;
                while let Some(member) = m.next_key::<Member>()? {
                    match member {
                        Member::Extra => extra = Some(m.next_value()?),
                        Member::Other => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(ObsExtra(extra))
            }
        }
        // A map only: serde_json would also build a derived struct from an array.
        d.deserialize_map(Members)
    }
}

/// An `/act` body as the reference policies read it.
#[derive(serde::Deserialize)]
struct ActBody {
    obs: ObsExtra,
}

async fn act(
    shared: web::Data<Shared>,
    req: actix_web::HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let Ok(ActBody { obs }) = serde_json::from_slice::<ActBody>(&body) else {
        return detail(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "body must be {\"obs\": {...}}",
        );
    };
    let task = {
        let episodes = shared.episodes.lock().unwrap();
        episode_header(&req)
            .and_then(|id| episodes.by_header.get(&id).copied())
            .unwrap_or(episodes.latest)
    };
    let state = obs.0.as_ref().and_then(privileged_state);
    let answer = shared.policy.lock().unwrap().act(task, state.as_deref());
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    match answer {
        Ok(action) => HttpResponse::Ok().json(json!({ "action": action })),
        Err(PolicyError::Unprocessable(m)) => {
            detail(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &m)
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
    serve_on(
        config,
        std::net::TcpListener::bind((config.host.as_str(), config.port))?,
    )
}

/// Starts the server on a bound listener (the demo binds port 0 first).
pub fn serve_on(
    config: &MinerConfig,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let shared = web::Data::new(Shared {
        policy: Mutex::new(Policy::new(config.policy, config.seed)),
        episodes: Mutex::default(),
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
    .listen(listener)?
    .run())
}
