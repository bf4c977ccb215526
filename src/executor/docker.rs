//! The docker evaluation mode (docs/containers.md §3): episodes run in environment containers on
//! every host of `KINITRO_EXECUTOR_EVAL_HOSTS`, and this executor only does HTTP.
//!
//! [`DockerEvaluator`] owns the fleet: it creates each host's containers at start (force-recreating
//! leftovers of the same executor id), hands each task to the healthy container of its family with
//! the most free slots, watches the containers (every 10 s, and at once after a failed call),
//! recreates a dead one, skips an unreachable host and retries it every 30 s, and removes every
//! container it created at shutdown. Calls run on one arbiter thread of their own (awc's client is
//! not `Send`); the fleet is shared state behind one mutex, touched only to pick or update a slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions,
};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::tasks::TaskResult;
use tokio::sync::{oneshot, watch, Notify};

use super::episode::EpisodeTask;
use crate::config::executor::{EvalNetwork, ExecutorConfig};
use crate::container::eval::{self, EvalContainer};
use crate::container::{self, image, Engine};
use crate::env_server::protocol::{CallRequest, CallResponse, CallStatus, EvalResult, Methods};
use crate::metrics::Metrics;

/// How often every container is inspected.
const WATCH_INTERVAL: Duration = Duration::from_secs(10);
/// How often an unreachable host is tried again.
const HOST_RETRY: Duration = Duration::from_secs(30);
/// Extra time a call may take beyond the episode budget before the executor gives up on it.
const CALL_GRACE: Duration = Duration::from_secs(30);
/// Per-request timeout of the engine API (image inspection, create, start, remove).
const ENGINE_TIMEOUT_SECS: u64 = 120;

/// A container's state in the fleet (the `state` label of `kinitro_eval_containers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, not yet healthy.
    Starting,
    /// Serving; its slots are offered.
    Healthy,
    /// Dead, unreachable or failing its health check; its slots are withheld.
    Unhealthy,
    /// Being replaced.
    Recreating,
}

/// One container of the fleet.
#[derive(Debug, Clone)]
struct Slot {
    /// What it was created from.
    spec: EvalContainer,
    /// Its engine id, once created.
    id: Option<String>,
    /// Where its server answers (`http://ip:port`), once known.
    url: Option<String>,
    /// Evaluations it runs at once (from its `/methods`).
    capacity: usize,
    /// Evaluations this executor has out to it.
    in_flight: usize,
    /// Its state.
    state: ContainerState,
    /// When the engine last (re)started it, to notice a restart between two inspections.
    started_at: Option<String>,
}

/// One host entry.
struct Host {
    /// The entry as configured.
    address: String,
    /// The engine, while reachable.
    engine: Option<Engine>,
    /// When it was last tried.
    last_try: Option<Instant>,
}

/// The fleet, shared by the dispatcher and the watcher.
struct Fleet {
    hosts: Vec<Host>,
    slots: Vec<Slot>,
}

/// What the evaluator's tasks share.
struct Shared {
    config: ExecutorConfig,
    fleet: Mutex<Fleet>,
    /// Wakes the watcher at once (a call failed).
    check_now: Notify,
    /// Turns true when in-flight calls must end (`Executor shutting down`).
    stop: watch::Sender<bool>,
    /// Where the container states and restarts are published.
    metrics: Option<Arc<Metrics>>,
}

impl ContainerState {
    /// The `state` label.
    pub fn label(self) -> &'static str {
        match self {
            ContainerState::Starting => "starting",
            ContainerState::Healthy => "healthy",
            ContainerState::Unhealthy => "unhealthy",
            ContainerState::Recreating => "recreating",
        }
    }

    const ALL: [ContainerState; 4] = [
        ContainerState::Starting,
        ContainerState::Healthy,
        ContainerState::Unhealthy,
        ContainerState::Recreating,
    ];
}

impl Shared {
    /// The settings and the shutdown flag a call needs.
    fn call_parts(&self) -> (&ExecutorConfig, &watch::Sender<bool>) {
        (&self.config, &self.stop)
    }

    /// Publishes `kinitro_eval_containers{host, family, state}` from the fleet.
    fn publish(&self) {
        let Some(m) = &self.metrics else { return };
        let fleet = self.fleet.lock().unwrap();
        let mut counts: HashMap<(usize, String, ContainerState), i64> = HashMap::new();
        for s in &fleet.slots {
            for state in ContainerState::ALL {
                *counts
                    .entry((s.spec.host, s.spec.family.clone(), state))
                    .or_default() += i64::from(s.state == state);
            }
        }
        for ((host, family, state), n) in counts {
            m.eval_containers
                .get_or_create(&vec![
                    ("host", host.to_string()),
                    ("family", family),
                    ("state", state.label().to_string()),
                ])
                .set(n);
        }
    }

    /// Counts one recreation of a container of `host` and `family`.
    fn count_restart(&self, host: usize, family: &str) {
        if let Some(m) = &self.metrics {
            m.eval_container_restarts
                .get_or_create(&vec![
                    ("host", host.to_string()),
                    ("family", family.to_string()),
                ])
                .inc();
        }
    }
}

/// The docker-mode evaluator: the fleet of environment containers and the dispatcher.
pub struct DockerEvaluator {
    shared: Arc<Shared>,
    /// Runs the calls and the watcher.
    arbiter: actix_rt::Arbiter,
}

/// The image of `family`: an explicit `--eval-image` for every family, else the family map.
pub fn image_for(config: &ExecutorConfig, family: &str) -> Option<String> {
    config
        .eval_image
        .clone()
        .or_else(|| config.eval_images.get(family).cloned())
}

pub(super) fn infra(task: &EpisodeTask, error: impl Into<String>) -> TaskResult {
    TaskResult {
        task_uuid: task.task_uuid.clone(),
        success: false,
        score: 0.0,
        total_reward: 0.0,
        timesteps: 0,
        error: Some(error.into()),
        failure_kind: Some(FailureKind::Infrastructure),
        action_time_mean: None,
        action_time_max: None,
        verification_passed: None,
        verification_score: None,
    }
}

/// A free loopback port for a container on the host's network.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

pub(super) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl DockerEvaluator {
    /// Connects to every host, checks the images, and starts every container (waiting until each
    /// is healthy). Fails when no host is reachable, an image is missing on a reachable host, or
    /// (with `--strict-image-version`) an image is of another version.
    pub async fn start(
        config: &ExecutorConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, String> {
        eval::parse_mem_limit(&config.eval_mem_limit)?;
        let families: Vec<String> = {
            let mut f: Vec<String> = super::served_tasks(config)
                .iter()
                .map(|t| kinitro_actors::envs::family(t.env_id()).to_string())
                .collect();
            f.dedup();
            f
        };
        let mut hosts = Vec::new();
        let mut errors = Vec::new();
        for address in &config.eval_hosts {
            let engine = match container::connect(address, ENGINE_TIMEOUT_SECS).await {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(host = %address, error = %e, "eval host unreachable; retrying every 30 s");
                    errors.push(e);
                    None
                }
            };
            hosts.push(Host {
                address: address.clone(),
                engine,
                last_try: Some(Instant::now()),
            });
        }
        if hosts.iter().all(|h| h.engine.is_none()) {
            return Err(format!("no eval host reachable: {}", errors.join("; ")));
        }
        let mut slots = Vec::new();
        for (k, host) in hosts.iter().enumerate() {
            for family in &families {
                let image = image_for(config, family).ok_or_else(|| {
                    format!("no image for family '{family}' (KINITRO_EXECUTOR_EVAL_IMAGES)")
                })?;
                if let Some(engine) = &host.engine {
                    check_image(engine, &image, config.strict_image_version).await?;
                }
                for i in 0..config.eval_replicas as usize {
                    let spec = EvalContainer {
                        name: eval::container_name(&config.executor_id, k, family, i),
                        image: image.clone(),
                        executor_id: config.executor_id.clone(),
                        host: k,
                        family: family.clone(),
                        token: random_token(),
                        port: eval::CONTAINER_PORT,
                        publish: false,
                        pools: 1,
                        tls: None,
                    };
                    slots.push(Slot {
                        spec,
                        id: None,
                        url: None,
                        capacity: 0,
                        in_flight: 0,
                        state: ContainerState::Starting,
                        started_at: None,
                    });
                }
            }
            if let Some(engine) = &host.engine {
                remove_owned(engine, &config.executor_id, Some(k)).await;
            }
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            fleet: Mutex::new(Fleet { hosts, slots }),
            check_now: Notify::new(),
            stop: watch::channel(false).0,
            metrics,
        });
        // Start every container of every reachable host, concurrently.
        let count = shared.fleet.lock().unwrap().slots.len();
        let starts = (0..count).map(|i| recreate(shared.clone(), i));
        let results = futures_util::future::join_all(starts).await;
        let healthy = results.iter().filter(|r| r.is_ok()).count();
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            tracing::warn!(error = %e, "an evaluation container did not start");
        }
        if healthy == 0 {
            let first = results
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_default();
            return Err(format!("no evaluation container became healthy: {first}"));
        }
        let arbiter = actix_rt::Arbiter::new();
        let watcher = shared.clone();
        arbiter.spawn_fn(move || {
            actix_rt::spawn(watch_loop(watcher));
        });
        Ok(Self { shared, arbiter })
    }

    /// Healthy slots in total.
    pub fn slots(&self) -> usize {
        let fleet = self.shared.fleet.lock().unwrap();
        fleet
            .slots
            .iter()
            .filter(|s| s.state == ContainerState::Healthy)
            .map(|s| s.capacity)
            .sum()
    }

    /// Healthy slots not running an evaluation.
    pub fn free_slots(&self) -> usize {
        let fleet = self.shared.fleet.lock().unwrap();
        fleet
            .slots
            .iter()
            .filter(|s| s.state == ContainerState::Healthy)
            .map(|s| s.capacity.saturating_sub(s.in_flight))
            .sum()
    }

    /// Evaluations out to containers.
    pub fn in_flight(&self) -> usize {
        let fleet = self.shared.fleet.lock().unwrap();
        fleet.slots.iter().map(|s| s.in_flight).sum()
    }

    /// Ends every call still out as `Executor shutting down`.
    pub fn stop_episodes(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// The containers' states, for tests and logs: (name, state, in flight).
    pub fn states(&self) -> Vec<(String, ContainerState, usize)> {
        let fleet = self.shared.fleet.lock().unwrap();
        fleet
            .slots
            .iter()
            .map(|s| (s.spec.name.clone(), s.state, s.in_flight))
            .collect()
    }

    /// Runs one task in the healthy container of its family with the most free slots; a task no
    /// container can take, and any failure of the call itself, is an infrastructure failure.
    pub fn run(&self, task: EpisodeTask) -> BoxFuture<'static, TaskResult> {
        let family = kinitro_actors::envs::family(&task.env_id).to_string();
        let picked = {
            let mut fleet = self.shared.fleet.lock().unwrap();
            let best = fleet
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| s.state == ContainerState::Healthy && s.spec.family == family)
                .max_by_key(|(i, s)| (s.capacity.saturating_sub(s.in_flight), usize::MAX - i));
            match best {
                Some((i, s)) if s.url.is_some() => {
                    s.in_flight += 1;
                    let target = Target {
                        url: s.url.clone().unwrap(),
                        token: s.spec.token.clone(),
                        name: s.spec.name.clone(),
                        cert_pem: s.spec.tls.as_ref().map(|t| t.cert_pem.clone()),
                    };
                    Some((i, target))
                }
                _ => None,
            }
        };
        let Some((index, target)) = picked else {
            let r = infra(
                &task,
                format!("Executor error: no healthy environment container for {family}"),
            );
            return async move { r }.boxed();
        };
        dispatch(
            &self.arbiter,
            self.shared.clone(),
            Shared::call_parts,
            task,
            target,
            move |shared, failed| {
                if let Some(s) = shared.fleet.lock().unwrap().slots.get_mut(index) {
                    s.in_flight = s.in_flight.saturating_sub(1);
                }
                if failed {
                    shared.check_now.notify_one();
                }
            },
        )
    }

    /// Removes every container this executor created, on every reachable host.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        let engines: Vec<Engine> = {
            let fleet = self.shared.fleet.lock().unwrap();
            fleet
                .hosts
                .iter()
                .filter_map(|h| h.engine.clone())
                .collect()
        };
        for engine in engines {
            remove_owned(&engine, &self.shared.config.executor_id, None).await;
        }
        self.arbiter.stop();
        tracing::info!(
            event = "eval_containers_removed",
            "evaluation containers removed"
        );
    }
}

/// Runs one call on `arbiter` (awc is not `Send`) and resolves to its result; a failed call is an
/// infrastructure failure. `done(shared, failed)` runs on the arbiter right after the call, to give
/// the slot back (the docker and basilica evaluators share everything else of a dispatch).
pub(super) fn dispatch<S: Send + Sync + 'static>(
    arbiter: &actix_rt::Arbiter,
    shared: Arc<S>,
    parts: fn(&S) -> (&ExecutorConfig, &watch::Sender<bool>),
    task: EpisodeTask,
    target: Target,
    done: impl FnOnce(&S, bool) + Send + 'static,
) -> BoxFuture<'static, TaskResult> {
    let (tx, rx) = oneshot::channel();
    let fallback = infra(&task, "Executor error: the dispatcher stopped");
    arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let (config, stop) = parts(&shared);
            let result = call(config, stop, &task, &target).await;
            done(&shared, result.is_err());
            let _ = tx.send(result.unwrap_or_else(|e| infra(&task, e)));
        });
    });
    async move { rx.await.unwrap_or(fallback) }.boxed()
}

/// Where one call goes: a container's server, its token and, on a remote engine, its certificate.
pub(super) struct Target {
    /// The server's base URL.
    pub url: String,
    /// Its bearer token.
    pub token: String,
    /// The container's (or deployment's) name, for errors.
    pub name: String,
    /// Its certificate, when it serves TLS.
    pub cert_pem: Option<String>,
}

thread_local! {
    /// The dispatcher's clients (on its arbiter), one per container address and certificate.
    static CLIENTS: std::cell::RefCell<HashMap<(String, Option<String>), awc::Client>> =
        Default::default();
}

/// The dispatcher's client for `target` (made on first use; pinned to its certificate).
fn client_for(target: &Target) -> Result<awc::Client, String> {
    CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        let key = (target.url.clone(), target.cert_pem.clone());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = container::tls::client(target.cert_pem.as_deref(), Duration::from_secs(3600))?;
        clients.retain(|(url, _), _| url != &target.url); // a recreated container's old certificate
        clients.insert(key, client.clone());
        Ok(client)
    })
}

/// One `evaluate` call; `Err` is an infrastructure failure of the call itself.
pub(super) async fn call(
    config: &ExecutorConfig,
    stop: &watch::Sender<bool>,
    task: &EpisodeTask,
    target: &Target,
) -> Result<TaskResult, String> {
    let Target {
        url, token, name, ..
    } = target;
    let kwargs = serde_json::json!({
        "task_id": task.seed, "seed": task.seed, "sim_seed": task.sim_seed,
        "base_url": task.miner_endpoint, "env_id": task.env_id,
        "max_timesteps": config.max_timesteps, "action_timeout": config.action_timeout.0,
        "use_images": config.use_images, "timeout": config.eval_timeout.0,
        "model": format!("miner-{}", task.miner_uid), "task_uuid": task.task_uuid,
    });
    let body = CallRequest {
        method: "evaluate".into(),
        args: Vec::new(),
        kwargs: kwargs.as_object().cloned().unwrap_or_default(),
    };
    let limit = Duration::from_secs_f64(config.eval_timeout.0) + CALL_GRACE;
    let request = client_for(target)
        .map_err(|e| format!("Executor error: environment container {name}: {e}"))?
        .post(format!("{url}/call"))
        .bearer_auth(token)
        .timeout(limit)
        .send_json(&body);
    let mut stop = stop.subscribe();
    let mut response = tokio::select! {
        r = request => r.map_err(|e| format!("Executor error: environment container {name}: {e}"))?,
        _ = stop.wait_for(|s| *s) => return Err("Executor shutting down".into()),
    };
    let status = response.status().as_u16();
    let bytes = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| format!("Executor error: environment container {name}: {e}"))?;
    if status != 200 {
        let text = String::from_utf8_lossy(&bytes);
        return Err(format!(
            "Executor error: environment container {name} answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    let answer: CallResponse = serde_json::from_slice(&bytes).map_err(|e| {
        format!("Executor error: environment container {name} answered malformed JSON: {e}")
    })?;
    match answer.status {
        CallStatus::Failed => Err(answer.result["error"].as_str().map_or_else(
            || format!("Executor error: {name} abandoned the call"),
            str::to_string,
        )),
        CallStatus::Success => {
            let result: EvalResult = serde_json::from_value(answer.result).map_err(|e| {
                format!(
                    "Executor error: environment container {name} answered an unknown result: {e}"
                )
            })?;
            Ok(result.into_task_result(task.task_uuid.clone()))
        }
    }
}

/// Checks that `image` is on `engine`, and its version label.
async fn check_image(engine: &Engine, image: &str, strict: bool) -> Result<(), String> {
    let inspect = engine.docker.inspect_image(image).await.map_err(|e| {
        format!(
            "image {image} is not on the Docker host {} ({e}); build it there with `kinitro env build metaworld --tag {image}`",
            engine.uri
        )
    })?;
    let ours = env!("CARGO_PKG_VERSION");
    let theirs = inspect
        .config
        .and_then(|c| c.labels)
        .and_then(|l| l.get(image::VERSION_LABEL).cloned());
    if theirs.as_deref() != Some(ours) {
        let message = format!(
            "image {image} on {} is of kinitro {} while this executor is {ours}",
            engine.uri,
            theirs.as_deref().unwrap_or("(unlabelled)")
        );
        if strict {
            return Err(format!("{message} (--strict-image-version)"));
        }
        tracing::warn!(image, "{message}");
    }
    Ok(())
}

/// Removes (forcibly) the containers of `executor_id`, of one host entry or of all.
async fn remove_owned(engine: &Engine, executor_id: &str, host: Option<usize>) {
    let mut labels = vec![format!("{}={executor_id}", eval::EXECUTOR_LABEL)];
    if let Some(k) = host {
        labels.push(format!("{}={k}", eval::HOST_LABEL));
    }
    let filters = HashMap::from([("label".to_string(), labels)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = engine.docker.list_containers(Some(options)).await else {
        return;
    };
    for c in list {
        if let Some(id) = c.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Err(e) = engine.docker.remove_container(&id, Some(options)).await {
                tracing::warn!(container = %id, error = %e, "cannot remove an evaluation container");
            }
        }
    }
}

/// The engine and spec of slot `index`, if its host is reachable.
fn slot_parts(shared: &Shared, index: usize) -> Option<(Engine, EvalContainer)> {
    let fleet = shared.fleet.lock().unwrap();
    let slot = fleet.slots.get(index)?;
    let engine = fleet.hosts.get(slot.spec.host)?.engine.clone()?;
    Some((engine, slot.spec.clone()))
}

fn set_state(shared: &Shared, index: usize, state: ContainerState) {
    if let Some(s) = shared.fleet.lock().unwrap().slots.get_mut(index) {
        s.state = state;
    }
    shared.publish();
}

/// (Re)creates slot `index`'s container and waits until it is healthy; the slot's capacity is
/// what its `/methods` reports.
async fn recreate(shared: Arc<Shared>, index: usize) -> Result<(), String> {
    let Some((engine, mut spec)) = slot_parts(&shared, index) else {
        return Err("its host is unreachable".into());
    };
    set_state(&shared, index, ContainerState::Recreating);
    let config = &shared.config;
    spec.token = random_token();
    let local = engine.uri.starts_with("unix://");
    let host_network = config.eval_network == EvalNetwork::Host;
    spec.port = if host_network {
        free_port()?
    } else {
        eval::CONTAINER_PORT
    };
    spec.publish = !local && !host_network;
    // A remote engine's containers are reached over the network: TLS pinned to a certificate made
    // for this container alone.
    spec.tls = if local {
        None
    } else {
        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        names.extend(remote_host(&engine));
        Some(container::tls::generate(&names)?)
    };
    spec.pools = match config.eval_pools {
        Some(p) => p,
        None => match config.eval_cpus {
            Some(c) => c.ceil().max(1.0) as usize,
            None => engine
                .docker
                .info()
                .await
                .ok()
                .and_then(|i| i.ncpu)
                .map_or(1, |n| n.max(1) as usize),
        },
    };
    if !host_network {
        ensure_network(&engine).await?;
    }
    let docker = &engine.docker;
    let _ = docker
        .remove_container(
            &spec.name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    let body = eval::create_body(config, &spec)?;
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&spec.name)
                    .build(),
            ),
            body,
        )
        .await
        .map_err(|e| format!("cannot create {} on {}: {e}", spec.name, engine.uri))?;
    docker
        .start_container(&created.id, None::<StartContainerOptions>)
        .await
        .map_err(|e| format!("cannot start {} on {}: {e}", spec.name, engine.uri))?;
    let inspect = docker
        .inspect_container(&created.id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("cannot inspect {}: {e}", spec.name))?;
    let url = container_url(&engine, &spec, &inspect, host_network)?;
    {
        let mut fleet = shared.fleet.lock().unwrap();
        let slot = &mut fleet.slots[index];
        slot.spec = spec.clone();
        slot.id = Some(created.id.clone());
        slot.url = Some(url.clone());
        slot.state = ContainerState::Starting;
        slot.started_at = inspect.state.as_ref().and_then(|s| s.started_at.clone());
    }
    let cert = spec.tls.as_ref().map(|t| t.cert_pem.as_str());
    let capacity = wait_ready(
        &url,
        &spec.token,
        cert,
        config.eval_start_timeout.duration(),
    )
    .await;
    let capacity = match capacity {
        Ok(c) => c,
        Err(e) => {
            set_state(&shared, index, ContainerState::Unhealthy);
            return Err(format!("{} did not become healthy: {e}", spec.name));
        }
    };
    {
        let mut fleet = shared.fleet.lock().unwrap();
        let slot = &mut fleet.slots[index];
        slot.capacity = capacity;
        slot.state = ContainerState::Healthy;
    }
    shared.publish();
    tracing::info!(event = "eval_container_ready", container = %spec.name, host = %engine.uri, %url, slots = capacity, "evaluation container ready");
    Ok(())
}

/// Where the executor reaches a container's server.
fn container_url(
    engine: &Engine,
    spec: &EvalContainer,
    inspect: &bollard::models::ContainerInspectResponse,
    host_network: bool,
) -> Result<String, String> {
    let remote_host = remote_host(engine);
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let settings = inspect.network_settings.as_ref();
    if host_network {
        return Ok(format!(
            "{scheme}://{}:{}",
            remote_host.as_deref().unwrap_or("127.0.0.1"),
            spec.port
        ));
    }
    if spec.publish {
        let port = settings
            .and_then(|n| n.ports.as_ref())
            .and_then(|p| p.get(&format!("{}/tcp", spec.port)).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .ok_or_else(|| format!("{} has no published port", spec.name))?;
        return Ok(format!(
            "{scheme}://{}:{port}",
            remote_host.as_deref().unwrap_or("127.0.0.1")
        ));
    }
    let ip = settings
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(eval::NETWORK))
        .and_then(|n| n.ip_address.clone())
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| format!("{} has no address on {}", spec.name, eval::NETWORK))?;
    Ok(format!("{scheme}://{ip}:{}", spec.port))
}

/// The host name of a remote engine's address (`tcp://host:port`), `None` for a local one.
fn remote_host(engine: &Engine) -> Option<String> {
    engine
        .uri
        .strip_prefix("tcp://")
        .or_else(|| engine.uri.strip_prefix("http://"))
        .and_then(|a| a.split(':').next())
        .map(str::to_string)
}

/// Whether the `kinitro-eval` network exists on `engine`.
async fn network_exists(engine: &Engine) -> bool {
    let options = None::<bollard::query_parameters::InspectNetworkOptions>;
    engine
        .docker
        .inspect_network(eval::NETWORK, options)
        .await
        .is_ok()
}

/// Creates the `kinitro-eval` bridge network when missing.
async fn ensure_network(engine: &Engine) -> Result<(), String> {
    if network_exists(engine).await {
        return Ok(());
    }
    let request = bollard::models::NetworkCreateRequest {
        name: eval::NETWORK.to_string(),
        driver: Some("bridge".into()),
        ..Default::default()
    };
    match engine.docker.create_network(request).await {
        Ok(_) => Ok(()),
        // Another executor may have created it meanwhile.
        Err(_) if network_exists(engine).await => Ok(()),
        Err(e) => Err(format!("cannot create the network {}: {e}", eval::NETWORK)),
    }
}

/// Polls `/health` until 200 within `limit`, then reads the slots from `/methods`.
pub(super) async fn wait_ready(
    url: &str,
    token: &str,
    cert_pem: Option<&str>,
    limit: Duration,
) -> Result<usize, String> {
    let deadline = Instant::now() + limit;
    let client = container::tls::client(cert_pem, Duration::from_secs(5))?;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match client.get(format!("{url}/health")).send().await {
            Ok(r) if r.status().as_u16() == 200 => {
                let mut m = client
                    .get(format!("{url}/methods"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| format!("/methods: {e}"))?;
                if m.status().as_u16() != 200 {
                    return Err(format!("/methods answered {}", m.status()));
                }
                let methods: Methods = m.json().await.map_err(|e| format!("/methods: {e}"))?;
                return Ok(methods.usage.slots.max(1));
            }
            Ok(r) => last = format!("/health answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("not healthy after {}s: {last}", limit.as_secs()))
}

/// Watches the fleet until the evaluator stops: inspects every container every 10 s (or at once
/// after a failed call), recreates dead or restarted ones, and retries unreachable hosts.
async fn watch_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = shared.check_now.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        retry_hosts(&shared).await;
        let count = shared.fleet.lock().unwrap().slots.len();
        for index in 0..count {
            if *shared.stop.borrow() {
                return;
            }
            if needs_recreation(&shared, index).await {
                let (host, family) = {
                    let fleet = shared.fleet.lock().unwrap();
                    (
                        fleet.slots[index].spec.host,
                        fleet.slots[index].spec.family.clone(),
                    )
                };
                shared.count_restart(host, &family);
                if let Err(e) = recreate(shared.clone(), index).await {
                    tracing::warn!(error = %e, "cannot recreate an evaluation container");
                }
            }
        }
    }
}

/// Reconnects hosts that were unreachable (every 30 s).
async fn retry_hosts(shared: &Arc<Shared>) {
    let due: Vec<(usize, String)> = {
        let fleet = shared.fleet.lock().unwrap();
        fleet
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                h.engine.is_none() && h.last_try.is_none_or(|t| t.elapsed() >= HOST_RETRY)
            })
            .map(|(k, h)| (k, h.address.clone()))
            .collect()
    };
    for (k, address) in due {
        let result = container::connect(&address, ENGINE_TIMEOUT_SECS).await;
        let mut fleet = shared.fleet.lock().unwrap();
        fleet.hosts[k].last_try = Some(Instant::now());
        match result {
            Ok(engine) => {
                tracing::info!(host = %address, "eval host reachable again");
                fleet.hosts[k].engine = Some(engine);
                for s in fleet.slots.iter_mut().filter(|s| s.spec.host == k) {
                    s.state = ContainerState::Unhealthy;
                }
            }
            Err(e) => tracing::warn!(host = %address, error = %e, "eval host still unreachable"),
        }
    }
}

/// Whether slot `index` must be recreated: not healthy, gone, stopped, or restarted by the engine
/// since it was last seen. A host that does not answer is marked unreachable (its slots withheld).
async fn needs_recreation(shared: &Arc<Shared>, index: usize) -> bool {
    let (engine, id, state, started_at, host) = {
        let fleet = shared.fleet.lock().unwrap();
        let s = &fleet.slots[index];
        let engine = fleet.hosts[s.spec.host].engine.clone();
        (
            engine,
            s.id.clone(),
            s.state,
            s.started_at.clone(),
            s.spec.host,
        )
    };
    let Some(engine) = engine else {
        return false;
    };
    let Some(id) = id else {
        return true;
    };
    if state != ContainerState::Healthy {
        return true;
    }
    match engine
        .docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
    {
        Ok(inspect) => {
            let running = inspect.state.as_ref().and_then(|s| s.running) == Some(true);
            let now_started = inspect.state.as_ref().and_then(|s| s.started_at.clone());
            if !running || now_started != started_at {
                tracing::warn!(event = "eval_container_died", container = %id, running, "an evaluation container died or restarted; recreating it");
                set_state(shared, index, ContainerState::Unhealthy);
                return true;
            }
            false
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            set_state(shared, index, ContainerState::Unhealthy);
            true
        }
        Err(e) => {
            tracing::warn!(host = %engine.uri, error = %e, "eval host unreachable; its containers are withheld");
            let mut fleet = shared.fleet.lock().unwrap();
            fleet.hosts[host].engine = None;
            fleet.hosts[host].last_try = Some(Instant::now());
            for s in fleet.slots.iter_mut().filter(|s| s.spec.host == host) {
                s.state = ContainerState::Unhealthy;
            }
            drop(fleet);
            shared.publish();
            false
        }
    }
}
