//! Remote mode (docs/executor.md §3), `kinitro executor`: a fetch loop claiming batches through
//! `POST /v1/tasks/fetch`, and a submitter delivering results through `POST /v1/tasks/submit` from an
//! outbox backed by an append-only spool file, so an API outage or a restart loses nothing.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use tokio::sync::watch;

use super::episode::EpisodeTask;
use super::Evaluator;
use crate::config::executor::ExecutorConfig;
use crate::verify::spot::Spotter;
use crate::wire::{FetchRequest, Shard, SubmitRequest, SubmitResponse, TaskResultBody};

/// Results per submission.
const SUBMIT_BATCH: usize = 50;
/// Timeout of one API request.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// The tasks of a fetch answer that this executor understands. One that is not is left to the stale
/// reaper, which returns it to the pool, and logged by its `task_uuid` and the error with the value
/// it complains about withheld: a task carries its secret `sim_seed`, which never goes into a log.
fn claimed_tasks(answer: &Value) -> Vec<EpisodeTask> {
    let Some(tasks) = answer["tasks"].as_array() else {
        return Vec::new();
    };
    tasks
        .iter()
        .filter_map(|t| {
            serde_json::from_value(t.clone())
                .map_err(|e| {
                    tracing::error!(
                        task_uuid = t["task_uuid"].as_str(),
                        error = %withhold_values(&e.to_string()),
                        "claimed task not understood"
                    )
                })
                .ok()
        })
        .collect()
}

/// A serde error message without the value it complains about: `invalid type: string "12",
/// expected u64` → `invalid type: string (value withheld), expected u64`.
fn withhold_values(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| i + m.len()))
        .min()
    {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(", expected").unwrap_or(rest.len());
        match rest[..end].find(['`', '"']) {
            Some(quote) => {
                out.push_str(&rest[..quote]);
                out.push_str("(value withheld)");
            }
            None => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One undelivered result.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    executor_id: String,
    result: TaskResultBody,
}

/// One line of the spool file (docs/executor.md §3.4): a result and the executor that produced it.
#[derive(Serialize, Deserialize)]
struct SpoolLine<R> {
    executor_id: String,
    result: R,
}

impl SpoolLine<&TaskResultBody> {
    /// The line's text, newline included.
    fn text(executor_id: &str, result: &TaskResultBody) -> String {
        let line = SpoolLine {
            executor_id: executor_id.to_string(),
            result,
        };
        serde_json::to_string(&line).expect("a result serialises") + "\n"
    }
}

/// The outbox and its spool file.
struct Outbox {
    entries: Vec<Entry>,
    next_seq: u64,
    spool: Option<Flock<File>>,
    spool_path: Option<PathBuf>,
    last_rewrite: Instant,
}

/// The spool file name of an executor id (docs/executor.md §3.4).
pub fn spool_name(executor_id: &str) -> String {
    let safe: String = executor_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = hex::encode(sha2::Sha256::digest(executor_id.as_bytes()));
    format!("{safe}-{}.jsonl", &hash[..8])
}

/// The spool's lines; a line that does not parse (a write cut short by a crash) is skipped.
fn read_entries(file: &mut File) -> Vec<SpoolLine<TaskResultBody>> {
    use std::io::Seek;
    let _ = file.seek(std::io::SeekFrom::Start(0));
    std::io::BufReader::new(&*file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

impl Outbox {
    /// Opens (and locks) this executor's spool, loading what it and dead processes left behind.
    fn open(dir: Option<&Path>, executor_id: &str) -> Result<Self, String> {
        let mut outbox = Outbox {
            entries: Vec::new(),
            next_seq: 0,
            spool: None,
            spool_path: None,
            last_rewrite: Instant::now(),
        };
        let Some(dir) = dir else { return Ok(outbox) };
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the spool directory {}: {e}", dir.display()))?;
        let path = dir.join(spool_name(executor_id));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open the spool {}: {e}", path.display()))?;
        let mut locked = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            format!("executor id {executor_id} is already in use by a live process (spool {} is locked)", path.display())
        })?;
        let mut recovered = read_entries(&mut locked);
        let mut orphans = Vec::new();
        for other in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
            let p = other.path();
            if p == path || p.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            let Ok(f) = OpenOptions::new().read(true).write(true).open(&p) else {
                continue;
            };
            if let Ok(mut f) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                recovered.extend(read_entries(&mut f));
                orphans.push(p);
            }
        }
        outbox.spool = Some(locked);
        outbox.spool_path = Some(path);
        for line in recovered {
            outbox.push_entry(line.executor_id, line.result);
        }
        if !outbox.entries.is_empty() {
            outbox.rewrite()?; // the recovered entries now live in our own spool
            tracing::info!(
                event = "spool_recovered",
                count = outbox.entries.len(),
                "results recovered from the spool"
            );
        }
        for p in orphans {
            let _ = std::fs::remove_file(p);
        }
        Ok(outbox)
    }

    fn push_entry(&mut self, executor_id: String, result: TaskResultBody) {
        self.entries.push(Entry {
            seq: self.next_seq,
            executor_id,
            result,
        });
        self.next_seq += 1;
    }

    /// Appends a result to the spool (flushed) and then to the outbox.
    fn add(&mut self, executor_id: &str, result: TaskResultBody) {
        if let Some(spool) = self.spool.as_mut() {
            let line = SpoolLine::text(executor_id, &result);
            if let Err(e) = spool.write_all(line.as_bytes()).and_then(|_| spool.flush()) {
                tracing::error!(error = %e, "cannot append to the spool; the result is only in memory");
            }
        }
        self.push_entry(executor_id.to_string(), result);
    }

    /// Rewrites the spool with the undelivered entries only.
    fn rewrite(&mut self) -> Result<(), String> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        let mut text = String::new();
        for e in &self.entries {
            text += &SpoolLine::text(&e.executor_id, &e.result);
        }
        // Rewrite in place (the lock stays on this file): truncate and append the survivors.
        spool.set_len(0).map_err(|e| e.to_string())?;
        spool
            .write_all(text.as_bytes())
            .and_then(|_| spool.flush())
            .map_err(|e| e.to_string())?;
        self.last_rewrite = Instant::now();
        Ok(())
    }
}

/// The API client of an executor.
struct Api {
    client: awc::Client,
    base: String,
}

impl Api {
    fn new(config: &ExecutorConfig) -> Self {
        let mut builder = awc::Client::builder().timeout(API_TIMEOUT);
        if let Some(key) = &config.api_key {
            builder = builder.bearer_auth(key);
        }
        Self {
            client: builder.finish(),
            base: config.api_url.trim_end_matches('/').to_string(),
        }
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<(u16, Value), String> {
        let mut resp = self
            .client
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// Exponential backoff 1, 2, 4 … 30 s with up to 20 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = (1u64 << attempt.min(5)).min(30) as f64;
    Duration::from_secs_f64(base * (1.0 + 0.2 * rand::random::<f64>()))
}

/// Runs the executor until `shutdown` resolves (SIGINT/SIGTERM), then drains
/// (docs/executor.md §3.5).
pub async fn run(
    config: ExecutorConfig,
    pools: Arc<Evaluator>,
    spotter: Option<Arc<Spotter>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let outbox = Arc::new(Mutex::new(Outbox::open(
        config.spool_dir.as_deref(),
        &config.executor_id,
    )?));
    let api = std::rc::Rc::new(Api::new(&config));
    match api.client.get(format!("{}/health", api.base)).send().await {
        Ok(r) if r.status().is_success() => {}
        other => {
            tracing::warn!(api = %api.base, answer = ?other.map(|r| r.status()), "the API is not healthy yet; fetching will retry")
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let submitter = actix_web::rt::spawn(submit_loop(api.clone(), outbox.clone(), stop_rx.clone()));
    let fetcher = fetch_loop(
        &config,
        api,
        pools.clone(),
        spotter,
        outbox.clone(),
        stop_rx,
    );
    tokio::pin!(fetcher);
    tokio::select! {
        _ = shutdown => {}
        _ = &mut fetcher => {}
    }
    tracing::info!("shutting down: no more fetching; finishing in-flight episodes");
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs_f64(config.shutdown_grace.0);
    let deadline = Instant::now() + grace;
    while pools.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pools.stop_episodes();
    while pools.in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the finished episodes' results reach the outbox, then flush it for up to 30 s.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), submitter).await;
    pools.shutdown().await;
    let mut o = outbox.lock().unwrap();
    o.rewrite()?;
    if !o.entries.is_empty() {
        tracing::warn!(
            undelivered = o.entries.len(),
            "results left in the spool for the next start"
        );
    }
    Ok(())
}

async fn fetch_loop(
    config: &ExecutorConfig,
    api: std::rc::Rc<Api>,
    pools: Arc<Evaluator>,
    spotter: Option<Arc<Spotter>>,
    outbox: Arc<Mutex<Outbox>>,
    stop: watch::Receiver<bool>,
) {
    let env_ids: Vec<&str> = super::served_tasks(config)
        .iter()
        .map(|t| t.env_id())
        .collect();
    let mut failures = 0u32;
    while !*stop.borrow() {
        let free = pools.free_slots();
        if free == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let batch = free.min(config.batch_size as usize);
        let body = FetchRequest {
            batch_size: Some(batch as i64),
            env_ids: Some(env_ids.iter().map(|e| e.to_string()).collect()),
            executor_id: config.executor_id.clone(),
            shard: (config.shard_count > 1).then_some(Shard {
                count: config.shard_count.into(),
                index: config.shard_index.into(),
            }),
        };
        let wait = match api.post("/v1/tasks/fetch", &body).await {
            Ok((200, v)) => {
                failures = 0;
                let tasks = claimed_tasks(&v);
                tracing::info!(
                    event = "tasks_fetched",
                    count = tasks.len(),
                    total_pending = v["total_pending"].as_i64(),
                    "tasks fetched"
                );
                let got = tasks.len();
                for task in tasks {
                    let (pools, outbox, id, spotter) = (
                        pools.clone(),
                        outbox.clone(),
                        config.executor_id.clone(),
                        spotter.clone(),
                    );
                    if let Some(s) = &spotter {
                        s.consider(&task);
                    }
                    let fut = pools.run(task.clone());
                    actix_web::rt::spawn(async move {
                        let mut result = fut.await;
                        if let Some(s) = &spotter {
                            s.annotate(&task, &mut result);
                        }
                        outbox
                            .lock()
                            .unwrap()
                            .add(&id, TaskResultBody::from(&result));
                    });
                }
                if got < batch {
                    Duration::from_secs_f64(config.poll_interval.0)
                } else {
                    Duration::ZERO
                }
            }
            Ok((401, _)) => {
                tracing::error!("API rejected the executor key");
                Duration::from_secs(30)
            }
            Ok((status, body)) if (400..500).contains(&status) => {
                tracing::error!(status, body = %body, "the API refused the fetch request");
                Duration::from_secs(30)
            }
            Ok((status, _)) => {
                failures += 1;
                tracing::warn!(status, attempt = failures, "fetch failed; retrying");
                backoff(failures - 1)
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures, "fetch failed; retrying");
                backoff(failures - 1)
            }
        };
        if !wait.is_zero() {
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Delivers the outbox: batches of at most 50, every second (or at once when 50 wait); ends when
/// `stop` is set and the outbox is empty.
async fn submit_loop(
    api: std::rc::Rc<Api>,
    outbox: Arc<Mutex<Outbox>>,
    stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let batch: Vec<Entry> = {
            let o = outbox.lock().unwrap();
            let first = o.entries.first().map(|e| e.executor_id.clone());
            o.entries
                .iter()
                .filter(|e| Some(&e.executor_id) == first.as_ref())
                .take(SUBMIT_BATCH)
                .cloned()
                .collect()
        };
        if batch.is_empty() {
            if *stop.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let delivered = submit(&api, &batch, &mut failures).await;
        if !delivered.is_empty() {
            let mut o = outbox.lock().unwrap();
            o.entries.retain(|e| !delivered.contains(&e.seq));
            if o.last_rewrite.elapsed() >= Duration::from_secs(10) || o.entries.is_empty() {
                if let Err(e) = o.rewrite() {
                    tracing::warn!(error = %e, "cannot rewrite the spool");
                }
            }
        }
        let full = outbox.lock().unwrap().entries.len() >= SUBMIT_BATCH;
        if failures > 0 {
            tokio::time::sleep(backoff(failures - 1)).await;
        } else if !full {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Sends one batch; returns the sequence numbers that are final (delivered or dropped).
async fn submit(api: &Api, batch: &[Entry], failures: &mut u32) -> Vec<u64> {
    let body = SubmitRequest {
        executor_id: batch[0].executor_id.clone(),
        results: batch.iter().map(|e| e.result.clone()).collect(),
    };
    match api.post("/v1/tasks/submit", &body).await {
        Ok((200, v)) => {
            *failures = 0;
            let answer = SubmitResponse::deserialize(&v).unwrap_or_default();
            tracing::info!(
                event = "results_submitted",
                accepted = answer.accepted,
                rejected = answer.rejected,
                duplicates = answer.duplicates,
                requeued = answer.requeued,
                "results submitted"
            );
            if answer.rejected > 0 {
                tracing::warn!(errors = ?answer.errors, "results rejected");
            }
            batch.iter().map(|e| e.seq).collect()
        }
        Ok((413, _)) if batch.len() > 1 => {
            let (a, b) = batch.split_at(batch.len() / 2);
            let mut done = Box::pin(submit(api, a, failures)).await;
            done.extend(Box::pin(submit(api, b, failures)).await);
            done
        }
        Ok((422, v)) if batch.len() > 1 => {
            tracing::warn!(body = %v, "batch refused as malformed; resending one by one");
            let mut done = Vec::new();
            for e in batch {
                done.extend(Box::pin(submit(api, std::slice::from_ref(e), failures)).await);
            }
            done
        }
        Ok((422, v)) => {
            tracing::error!(body = %v, task_uuid = batch[0].result.task_uuid, "malformed result dropped");
            batch.iter().map(|e| e.seq).collect()
        }
        Ok((401, _)) => {
            tracing::error!("API rejected the executor key");
            *failures = 5;
            Vec::new()
        }
        Ok((status, v)) => {
            *failures += 1;
            tracing::warn!(event = "submit_retry", attempt = *failures, status, body = %v, "submission failed; retrying");
            Vec::new()
        }
        Err(e) => {
            *failures += 1;
            tracing::warn!(event = "submit_retry", attempt = *failures, error = %e, "submission failed; retrying");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A log sink for a scoped subscriber.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 23 item 13: a claimed task that is not understood is logged without its sim_seed, in
    /// the JSON format the executor logs in.
    #[test]
    fn a_task_not_understood_is_logged_without_its_sim_seed() {
        let task = |uuid: &str, sim_seed: Value| {
            json!({"task_uuid": uuid, "miner_uid": 3, "miner_endpoint": "https://m.example",
                   "env_id": "metaworld/reach-v3", "seed": 7, "sim_seed": sim_seed})
        };
        let mut no_env = task("t-no-env", json!(5_555_666_677_778_888u64));
        no_env.as_object_mut().unwrap().remove("env_id");
        let mut no_uuid = task("", json!(4_444_333_322_221_111u64));
        no_uuid.as_object_mut().unwrap().remove("task_uuid");
        no_uuid["seed"] = json!("x");
        let answer = json!({"tasks": [
            task("t-good", json!(1_111_222_233_334_444u64)),
            no_env,
            task("t-string-seed", json!("9999888877776666")),
            task("t-float-seed", json!(1.234_567_89e18)),
            task("t-negative-seed", json!(-7_777_666_655_554_444i64)),
            no_uuid,
        ]});
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let tasks = tracing::subscriber::with_default(subscriber, || claimed_tasks(&answer));
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task_uuid, "t-good");
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            log.matches("claimed task not understood").count(),
            5,
            "{log}"
        );
        for uuid in [
            "t-no-env",
            "t-string-seed",
            "t-float-seed",
            "t-negative-seed",
        ] {
            assert!(
                log.contains(&format!("\"task_uuid\":\"{uuid}\"")),
                "{uuid}: {log}"
            );
        }
        assert!(log.contains("missing field `env_id`"), "{log}");
        assert!(log.contains("(value withheld)"), "{log}");
        for secret in [
            "1111222233334444",
            "5555666677778888",
            "9999888877776666",
            "123456789",
            "7777666655554444",
            "4444333322221111",
        ] {
            assert!(!log.contains(secret), "a sim_seed in the log: {log}");
        }
    }

    #[test]
    fn withheld_values() {
        assert_eq!(
            withhold_values("invalid type: string \"12\", expected u64"),
            "invalid type: string (value withheld), expected u64"
        );
        assert_eq!(
            withhold_values("invalid value: integer `-5`, expected u64"),
            "invalid value: integer (value withheld), expected u64"
        );
        assert_eq!(
            withhold_values("invalid type: map, expected u64"),
            "invalid type: map, expected u64"
        );
        assert_eq!(
            withhold_values("missing field `env_id`"),
            "missing field `env_id`"
        );
    }

    #[test]
    fn spool_names() {
        let a = spool_name("executor-1");
        assert!(a.starts_with("executor-1-") && a.ends_with(".jsonl"));
        assert_ne!(
            spool_name("a/b"),
            spool_name("a_b"),
            "ids that sanitise alike get different files"
        );
        assert!(spool_name("a/b").starts_with("a_b-"));
    }

    /// A failed result for `task_uuid`.
    fn failed(task_uuid: &str) -> TaskResultBody {
        TaskResultBody {
            action_time_max: None,
            action_time_mean: None,
            error: Some("boom".into()),
            failure_kind: None,
            score: Some(0.0),
            success: false,
            task_uuid: task_uuid.into(),
            timesteps: Some(3),
            total_reward: Some(0.0),
            verification_passed: None,
            verification_score: None,
        }
    }

    #[test]
    fn spool_survives_a_restart_and_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(Some(dir.path()), "ex-1").unwrap();
            o.add("ex-1", failed("t1"));
            o.add("ex-1", failed("t2"));
            let err = Outbox::open(Some(dir.path()), "ex-1").err().unwrap();
            assert!(err.contains("already in use by a live process"), "{err}");
            o.entries.retain(|e| e.result.task_uuid == "t2");
            o.rewrite().unwrap();
        }
        let o = Outbox::open(Some(dir.path()), "ex-1").unwrap();
        assert_eq!(o.entries.len(), 1);
        assert_eq!(o.entries[0].result, failed("t2"));
        drop(o);
        // Another executor adopts the dead process's file, keeping the original executor id.
        let o = Outbox::open(Some(dir.path()), "ex-2").unwrap();
        assert_eq!(o.entries.len(), 1);
        assert_eq!(o.entries[0].executor_id, "ex-1");
        assert!(!dir.path().join(spool_name("ex-1")).exists());
    }
}
