//! The basilica evaluation mode (docs/containers.md §4): the family image runs as a Basilica
//! deployment instead of a container on a Docker host, reached at the deployment's URL with the
//! protocol of docs/containers.md §2 (the calls are the docker mode's, [`super::docker::call`]).
//!
//! Unlike upstream, which makes one deployment per episode, the executor keeps one deployment per
//! family for its life: created at start (after deleting any left under the same name), polled every
//! 5 s until it runs, recreated when a call finds it gone or before its TTL runs out, and deleted at
//! shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use kinitro_actors::tasks::TaskResult;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::docker::{dispatch, infra, random_token, wait_ready, Target};
use super::episode::EpisodeTask;
use crate::config::executor::ExecutorConfig;
use crate::container::eval::{self, EvalContainer};

/// The deployments API's address when `BASILICA_API_URL` is unset.
pub const DEFAULT_API_URL: &str = "https://api.basilica.ai";
/// How often a deployment is polled until it runs.
const POLL: Duration = Duration::from_secs(5);
/// A deployment's lifetime; it is renewed an hour before.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// How often the deployments are checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// The deployments API (`BASILICA_API_URL`, bearer `BASILICA_API_TOKEN`).
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
}

impl Api {
    /// The API from `BASILICA_API_URL` (default [`DEFAULT_API_URL`]) and `BASILICA_API_TOKEN`
    /// (required). Read directly: these are Basilica's names, not settings of ours.
    pub fn from_env() -> Result<Self, String> {
        let token = std::env::var("BASILICA_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or("eval mode 'basilica' needs BASILICA_API_TOKEN")?;
        let base = std::env::var("BASILICA_API_URL").unwrap_or_else(|_| DEFAULT_API_URL.into());
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .bearer_auth(&self.token)
            .finish();
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => client.post(&url),
            "DELETE" => client.delete(&url),
            _ => client.get(&url),
        };
        let sent = match body {
            Some(b) => request.send_json(b).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| format!("Basilica API {method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .body()
            .limit(1 << 20)
            .await
            .map_err(|e| format!("Basilica API {method} {path}: {e}"))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Deletes a deployment (a missing one is fine).
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        match self
            .request("DELETE", &format!("/deployments/{name}"), None)
            .await?
        {
            (s, _) if s < 300 || s == 404 => Ok(()),
            (s, v) => Err(format!("Basilica refused to delete {name}: HTTP {s} {v}")),
        }
    }
}

/// One family's deployment.
struct Deployment {
    family: String,
    name: String,
    token: String,
    url: Option<String>,
    capacity: usize,
    in_flight: usize,
    healthy: bool,
    created: Instant,
}

impl Shared {
    /// The settings and the shutdown flag a call needs.
    fn call_parts(&self) -> (&ExecutorConfig, &watch::Sender<bool>) {
        (&self.config, &self.stop)
    }
}

struct Shared {
    config: ExecutorConfig,
    api: Api,
    deployments: Mutex<Vec<Deployment>>,
    check_now: Notify,
    stop: watch::Sender<bool>,
}

/// The basilica-mode evaluator.
pub struct BasilicaEvaluator {
    shared: Arc<Shared>,
    arbiter: actix_rt::Arbiter,
}

/// The deployment name of an executor's family (lower case, letters, digits and `-`).
pub fn deployment_name(executor_id: &str, family: &str) -> String {
    let id: String = executor_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("kinitro-{id}-{family}")
}

/// The deployment's memory: the container memory limit in `Mi`.
fn memory(config: &ExecutorConfig) -> Result<String, String> {
    Ok(format!(
        "{}Mi",
        eval::parse_mem_limit(&config.eval_mem_limit)? >> 20
    ))
}

/// Creates (replacing any of the same name) and waits for one deployment; returns its URL.
async fn deploy(shared: &Shared, family: &str, name: &str, token: &str) -> Result<String, String> {
    let config = &shared.config;
    let image = super::docker::image_for(config, family)
        .ok_or_else(|| format!("no image for family '{family}' (KINITRO_EXECUTOR_EVAL_IMAGES)"))?;
    let spec = EvalContainer {
        name: name.to_string(),
        image: image.clone(),
        executor_id: config.executor_id.clone(),
        host: 0,
        family: family.to_string(),
        token: token.to_string(),
        port: eval::CONTAINER_PORT,
        publish: false,
        pools: config.eval_pools.unwrap_or(2),
        tls: None,
    };
    let env: serde_json::Map<String, Value> = eval::container_env(config, &spec)
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), json!(v))))
        .collect();
    shared.api.delete(name).await?;
    let body = json!({
        "instance_name": name, "image": image, "replicas": 1, "port": eval::CONTAINER_PORT,
        "env": env, "resources": {"cpu": "2000m", "memory": memory(config)?},
        "ttl_seconds": TTL.as_secs(), "public": true,
    });
    match shared
        .api
        .request("POST", "/deployments", Some(&body))
        .await?
    {
        (s, _) if s < 300 => {}
        (s, v) => {
            return Err(format!(
                "Basilica refused the deployment {name}: HTTP {s} {v}"
            ))
        }
    }
    let deadline = Instant::now() + config.eval_start_timeout.duration();
    loop {
        let (status, v) = shared
            .api
            .request("GET", &format!("/deployments/{name}"), None)
            .await?;
        let state = v["state"].as_str().unwrap_or_default();
        if status == 200 && (state == "Failed" || v["phase"] == "failed") {
            let _ = shared.api.delete(name).await;
            return Err(format!("Basilica deployment {name} failed: {v}"));
        }
        let (ready, desired) = (
            v["replicas"]["ready"].as_u64(),
            v["replicas"]["desired"].as_u64(),
        );
        if status == 200
            && matches!(state, "Active" | "Running")
            && ready == desired
            && desired > Some(0)
        {
            if let Some(url) = v["url"].as_str() {
                return Ok(url.trim_end_matches('/').to_string());
            }
        }
        if Instant::now() >= deadline {
            let _ = shared.api.delete(name).await;
            return Err(format!(
                "Basilica deployment {name} not running after {}s: {v}",
                config.eval_start_timeout.0
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// (Re)creates deployment `index` and waits until its server answers.
async fn renew(shared: &Shared, index: usize) -> Result<(), String> {
    let (family, name) = {
        let mut d = shared.deployments.lock().unwrap();
        d[index].healthy = false;
        d[index].token = random_token();
        (d[index].family.clone(), d[index].name.clone())
    };
    let token = shared.deployments.lock().unwrap()[index].token.clone();
    let url = deploy(shared, &family, &name, &token).await?;
    let capacity = wait_ready(
        &url,
        &token,
        None,
        shared.config.eval_start_timeout.duration(),
    )
    .await?;
    let mut d = shared.deployments.lock().unwrap();
    let slot = &mut d[index];
    (slot.url, slot.capacity, slot.healthy, slot.created) =
        (Some(url.clone()), capacity, true, Instant::now());
    tracing::info!(event = "basilica_deployment_ready", deployment = %name, %url, slots = capacity, "Basilica deployment ready");
    Ok(())
}

impl BasilicaEvaluator {
    /// Creates one deployment per served family and waits until each serves.
    pub async fn start(config: &ExecutorConfig) -> Result<Self, String> {
        let api = Api::from_env()?;
        let mut families: Vec<String> = super::served_tasks(config)
            .iter()
            .map(|t| kinitro_actors::envs::family(t.env_id()).to_string())
            .collect();
        families.dedup();
        let deployments = families
            .into_iter()
            .map(|family| Deployment {
                name: deployment_name(&config.executor_id, &family),
                family,
                token: String::new(),
                url: None,
                capacity: 0,
                in_flight: 0,
                healthy: false,
                created: Instant::now(),
            })
            .collect::<Vec<_>>();
        let count = deployments.len();
        let shared = Arc::new(Shared {
            config: config.clone(),
            api,
            deployments: Mutex::new(deployments),
            check_now: Notify::new(),
            stop: watch::channel(false).0,
        });
        for i in 0..count {
            renew(&shared, i).await?;
        }
        let arbiter = actix_rt::Arbiter::new();
        let watcher = shared.clone();
        arbiter.spawn_fn(move || {
            actix_rt::spawn(watch_loop(watcher));
        });
        Ok(Self { shared, arbiter })
    }

    /// Slots of the healthy deployments.
    pub fn slots(&self) -> usize {
        let d = self.shared.deployments.lock().unwrap();
        d.iter().filter(|d| d.healthy).map(|d| d.capacity).sum()
    }

    /// Healthy slots not running an evaluation.
    pub fn free_slots(&self) -> usize {
        let d = self.shared.deployments.lock().unwrap();
        d.iter()
            .filter(|d| d.healthy)
            .map(|d| d.capacity.saturating_sub(d.in_flight))
            .sum()
    }

    /// Evaluations out to deployments.
    pub fn in_flight(&self) -> usize {
        self.shared
            .deployments
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.in_flight)
            .sum()
    }

    /// Ends every call still out as `Executor shutting down`.
    pub fn stop_episodes(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// Runs one task on its family's deployment; a failed call is an infrastructure failure and
    /// has the deployment checked at once.
    pub fn run(&self, task: EpisodeTask) -> BoxFuture<'static, TaskResult> {
        let family = kinitro_actors::envs::family(&task.env_id).to_string();
        let picked = {
            let mut d = self.shared.deployments.lock().unwrap();
            d.iter_mut()
                .enumerate()
                .find(|(_, d)| d.healthy && d.family == family && d.url.is_some())
                .map(|(i, d)| {
                    d.in_flight += 1;
                    let target = Target {
                        url: d.url.clone().unwrap_or_default(),
                        token: d.token.clone(),
                        name: d.name.clone(),
                        cert_pem: None,
                    };
                    (i, target)
                })
        };
        let Some((index, target)) = picked else {
            let r = infra(
                &task,
                format!("Executor error: no running Basilica deployment for {family}"),
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
                let mut d = shared.deployments.lock().unwrap();
                d[index].in_flight = d[index].in_flight.saturating_sub(1);
                if failed {
                    d[index].healthy = false;
                    drop(d);
                    shared.check_now.notify_one();
                }
            },
        )
    }

    /// Deletes every deployment of this executor.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        let names: Vec<String> = {
            let d = self.shared.deployments.lock().unwrap();
            d.iter().map(|d| d.name.clone()).collect()
        };
        for name in names {
            if let Err(e) = self.shared.api.delete(&name).await {
                tracing::warn!(error = %e, "cannot delete a Basilica deployment");
            }
        }
        self.arbiter.stop();
    }
}

/// Recreates unhealthy deployments, and healthy ones an hour before their TTL once idle.
async fn watch_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = shared.check_now.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let due: Vec<usize> = {
            let d = shared.deployments.lock().unwrap();
            d.iter()
                .enumerate()
                .filter(|(_, d)| {
                    !d.healthy
                        || (d.in_flight == 0
                            && d.created.elapsed() + Duration::from_secs(3600) >= TTL)
                })
                .map(|(i, _)| i)
                .collect()
        };
        for index in due {
            if *shared.stop.borrow() {
                return;
            }
            if let Err(e) = renew(&shared, index).await {
                tracing::warn!(error = %e, "cannot renew a Basilica deployment; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_are_lower_case_and_safe() {
        assert_eq!(
            deployment_name("Ex_1/a", "metaworld"),
            "kinitro-ex-1-a-metaworld"
        );
    }
}
