//! `kinitro env serve` (docs/containers.md §2): the environment server an environment container
//! runs. It speaks affinetes' "function_based" protocol ([`protocol`]) and runs each `evaluate` call
//! as one episode on the executor's own pools ([`crate::executor::Pools`]), so an episode in a
//! container is the very episode of the in-process mode.
//!
//! Capacity: the server runs at most `pools × episodes_per_pool` evaluations at once; as many more
//! calls wait for a slot, and beyond that a call is answered 503 `busy` (back-pressure the caller
//! retries, never a miner failure).

pub mod protocol;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use kinitro_actors::scoring::aggregate::FailureKind;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::env_serve::EnvServeConfig;
use crate::executor::episode::{EpisodeTask, Limits};
use crate::executor::Pools;
use crate::metrics::Metrics;
use protocol::{
    CallRequest, CallResponse, CallStatus, Detail, EvalResult, EvaluateArgs, MethodInfo, Methods,
    Usage,
};

/// Grace after an evaluation's budget before the server abandons the call (upstream's 10 s).
const TIMEOUT_GRACE: Duration = Duration::from_secs(10);

/// What every request handler shares.
struct Shared {
    /// The pools, once the scenes are loaded (`/health` answers 503 until then).
    pools: OnceLock<Arc<Pools>>,
    /// One permit per evaluation slot.
    slots: Semaphore,
    /// Calls waiting for a slot now.
    waiting: AtomicUsize,
    /// Calls that may wait before the server answers `busy`.
    queue: usize,
    /// The bearer token, when the server has one.
    token: Option<String>,
    /// The container's episode settings (reset timeout, response cap, address guard, images).
    config: EnvServeConfig,
    /// Names each call's episode when the caller gives no task id.
    next_call: AtomicU64,
    /// Episode metrics, served at `/metrics`.
    metrics: Arc<Metrics>,
}

fn detail(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(Detail {
        detail: message.into(),
    })
}

/// A refused request: its status and the text of its `{"detail": …}` body.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }

    fn response(self) -> HttpResponse {
        detail(self.0, self.1)
    }
}

impl Shared {
    /// 401 unless the request carries the server's token (constant-time compare).
    fn authorize(&self, req: &HttpRequest) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid or missing token",
            ))
        }
    }

    fn usage(&self) -> Usage {
        let e = &self.config.executor;
        let slots = e.pools * e.episodes_per_pool as usize;
        Usage {
            slots,
            pools: e.pools,
            episodes_per_pool: e.episodes_per_pool as usize,
            in_flight: self.pools.get().map_or(0, |p| p.in_flight()),
        }
    }

    /// Runs one `evaluate` call to its HTTP answer body: `Ok` with the call's answer, `Err` with
    /// an error response (422 for arguments that are not `evaluate`'s, 503 while loading or busy).
    async fn evaluate(&self, kwargs: Map<String, Value>) -> Result<CallResponse, Refusal> {
        let args: EvaluateArgs = serde_json::from_value(Value::Object(kwargs))
            .map_err(|e| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        let Some(pools) = self.pools.get() else {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "not ready"));
        };
        let exec = &self.config.executor;
        if args.use_images != exec.use_images {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "use_images={} but this server renders {} (KINITRO_EXECUTOR_USE_IMAGES)",
                    args.use_images,
                    if exec.use_images {
                        "images"
                    } else {
                        "no images"
                    }
                ),
            ));
        }
        if !(1..=500).contains(&args.max_timesteps)
            || args.action_timeout <= 0.0
            || args.action_timeout.is_nan()
            || args.budget() <= 0.0
            || args.budget().is_nan()
        {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "max_timesteps must be 1 to 500, action_timeout and timeout positive",
            ));
        }
        let success = |result: &EvalResult| CallResponse {
            status: CallStatus::Success,
            result: serde_json::to_value(result).unwrap_or(Value::Null),
            error: None,
        };
        if !args.env_id.starts_with("metaworld/") {
            let r = EvalResult::error(
                &args,
                protocol::invalid_env_id(&args.env_id),
                FailureKind::Infrastructure,
            );
            return Ok(success(&r));
        }
        // Back-pressure: a full queue answers at once instead of growing.
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "busy"));
                }
                let p = self.slots.acquire().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                p.map_err(|_| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?
            }
        };
        let task = EpisodeTask {
            task_uuid: args.task_uuid.clone().unwrap_or_else(|| {
                format!("call-{}", self.next_call.fetch_add(1, Ordering::Relaxed))
            }),
            miner_uid: 0,
            miner_endpoint: args.base_url.clone(),
            env_id: args.env_id.clone(),
            seed: args.public_seed(),
            // Without a secret seed the public one seeds the simulator, as upstream does.
            sim_seed: args.sim_seed.unwrap_or(args.public_seed() as u64),
            miner: Default::default(),
            limits: Some(Limits {
                max_timesteps: args.max_timesteps,
                action_timeout: args.action_timeout,
                reset_timeout: exec.reset_timeout.0,
                eval_timeout: args.budget(),
                max_response_bytes: exec.max_response_bytes,
                allow_private_endpoints: exec.allow_private_endpoints,
            }),
        };
        let started = Instant::now();
        let budget = args.budget();
        let run = pools.run(task);
        let outcome =
            tokio::time::timeout(Duration::from_secs_f64(budget) + TIMEOUT_GRACE, run).await;
        drop(permit);
        Ok(match outcome {
            Ok(result) => success(&EvalResult::from_task_result(
                &args,
                &result,
                started.elapsed().as_secs_f64(),
            )),
            Err(_) => CallResponse {
                status: CallStatus::Failed,
                result: json!({ "error": protocol::timeout_error(budget) }),
                error: None,
            },
        })
    }

    fn list_environments(&self) -> Vec<&'static str> {
        crate::executor::served_tasks(&self.config.executor)
            .iter()
            .map(|t| t.env_id())
            .collect()
    }

    /// One method call; the answer of `/call`.
    async fn call(
        &self,
        method: &str,
        kwargs: Map<String, Value>,
    ) -> Result<CallResponse, Refusal> {
        match method {
            "evaluate" => self.evaluate(kwargs).await,
            "list_environments" => Ok(CallResponse {
                status: CallStatus::Success,
                result: json!(self.list_environments()),
                error: None,
            }),
            other => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("Method not found: {other}"),
            )),
        }
    }
}

async fn health(shared: web::Data<Shared>) -> HttpResponse {
    if shared.pools.get().is_some() {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        detail(StatusCode::SERVICE_UNAVAILABLE, "loading scenes")
    }
}

async fn methods(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = shared.authorize(&req) {
        return r.response();
    }
    let method = |name: &str, signature: &str| MethodInfo {
        name: name.into(),
        signature: signature.into(),
        source: "Actor".into(),
        endpoint: format!("POST /{name}"),
    };
    HttpResponse::Ok().json(Methods {
        methods: vec![
            method(
                "evaluate",
                "(task_id: int, base_url: str, seed: int = None, model: str = None, \
                 env_id: str = 'metaworld/pick-place-v3', max_timesteps: int = 500, \
                 action_timeout: float = 0.5, use_images: bool = True, timeout: int = 300, \
                 sim_seed: int = None, task_uuid: str = None)",
            ),
            method("list_environments", "()"),
        ],
        usage: shared.usage(),
    })
}

async fn serve_metrics(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = shared.authorize(&req) {
        return r.response();
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(shared.metrics.encode())
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object",
        )),
        Err(e) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("malformed JSON: {e}"),
        )),
    }
}

async fn call(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = shared.authorize(&req) {
        return r.response();
    }
    let request = match parse_object(&body).and_then(|m| {
        serde_json::from_value::<CallRequest>(Value::Object(m))
            .map_err(|e| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
    }) {
        Ok(r) => r,
        Err(r) => return r.response(),
    };
    match shared.call(&request.method, request.kwargs).await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(r) => r.response(),
    }
}

/// `POST /<method>`: the body is `{"args", "kwargs"}` or the flat kwargs; the answer is the bare
/// result.
async fn direct(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = shared.authorize(&req) {
        return r.response();
    }
    let mut object = if body.is_empty() {
        Map::new()
    } else {
        match parse_object(&body) {
            Ok(m) => m,
            Err(r) => return r.response(),
        }
    };
    let kwargs = match object.remove("kwargs") {
        Some(Value::Object(k)) => k,
        Some(_) => return detail(StatusCode::UNPROCESSABLE_ENTITY, "kwargs must be an object"),
        None => {
            object.remove("args");
            object
        }
    };
    match shared.call(&path, kwargs).await {
        Ok(CallResponse {
            status: CallStatus::Success,
            result,
            ..
        }) => HttpResponse::Ok().json(result),
        Ok(failed) => HttpResponse::Ok().json(failed),
        Err(r) => r.response(),
    }
}

/// Runs the environment server until SIGINT/SIGTERM: the HTTP server starts at once (`/health`
/// answers 503), the scenes are checked and the pools started, then `/health` answers 200.
pub async fn serve(config: EnvServeConfig) -> Result<(), String> {
    let exec = &config.executor;
    let slots = exec.pools * exec.episodes_per_pool as usize;
    let metrics = Arc::new(Metrics::new());
    let shared = web::Data::new(Shared {
        pools: OnceLock::new(),
        slots: Semaphore::new(slots),
        waiting: AtomicUsize::new(0),
        queue: slots,
        token: config.token.clone(),
        config: config.clone(),
        next_call: AtomicU64::new(1),
        metrics: metrics.clone(),
    });
    let app_data = shared.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_data.clone())
            .route("/health", web::get().to(health))
            .route("/methods", web::get().to(methods))
            .route("/metrics", web::get().to(serve_metrics))
            .route("/call", web::post().to(call))
            .route("/{method}", web::post().to(direct))
    })
    .workers(2);
    let address = (config.host.as_str(), config.port);
    let server = match &config.tls {
        Some(tls) => {
            let tls = crate::container::tls::server_config(&tls.cert_pem, &tls.key_pem)?;
            server.bind_rustls_0_23(address, tls)
        }
        None => server.bind(address),
    }
    .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?
    .run();
    let handle = server.handle();
    // Serving starts now, so `/health` answers 503 while the scenes load.
    let server = actix_web::rt::spawn(server);
    let addr = format!("{}:{}", config.host, config.port);
    tracing::info!(event = "env_server_listening", %addr, slots, auth = config.token.is_some(), tls = config.tls.is_some(), "environment server listening; loading scenes");
    let assets = crate::config::metaworld_assets_dir().map_err(|e| e.to_string())?;
    let probe_assets = assets.clone();
    let tasks = crate::executor::served_tasks(exec);
    let images = exec.use_images;
    let loaded = tokio::task::spawn_blocking(move || {
        crate::sim::assets::check(&probe_assets)?;
        crate::executor::worker::probe(&probe_assets, &tasks, images)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    if let Err(e) = loaded {
        handle.stop(false).await;
        return Err(e);
    }
    let pools = Arc::new(Pools::start(exec, assets, Some(metrics)));
    let _ = shared.pools.set(pools.clone());
    tracing::info!(event = "env_server_ready", %addr, slots = pools.slots(), "environment server ready");
    let result = match server.await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    shared.slots.close();
    pools.stop_episodes();
    result
}
