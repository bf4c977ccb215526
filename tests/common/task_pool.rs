//! The task pool as tests see it: tasks inserted directly (one cycle), rows read back, and a wait
//! until every task is terminal; plus the reference-miner processes that episodes run against.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::sql_types::{Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use kinitro::config::DatabaseUrl;
use serde_json::Value;

/// One `task_pool` row.
#[derive(QueryableByName, Debug)]
pub struct Row {
    /// Task id.
    #[diesel(sql_type = Text)]
    pub task_uuid: String,
    /// Status as stored.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// The stored result, JSON text.
    #[diesel(sql_type = Nullable<Text>)]
    pub result: Option<String>,
}

impl Row {
    /// The stored result (`null` when none).
    pub fn result(&self) -> Value {
        serde_json::from_str(self.result.as_deref().unwrap_or("null")).unwrap()
    }
}

/// Every task, in insertion order.
pub async fn rows(url: &DatabaseUrl) -> Vec<Row> {
    let mut conn = kinitro::db::connect(url).await.unwrap();
    diesel::sql_query("SELECT task_uuid, status, result::text AS result FROM task_pool ORDER BY id")
        .load(&mut conn)
        .await
        .unwrap()
}

/// Inserts tasks (uuid, miner endpoint, env id, sim seed) of miner 0 with public seed 7 into one
/// cycle (created on first use).
pub async fn add_tasks<U: AsRef<str>, E: AsRef<str>>(
    url: &DatabaseUrl,
    tasks: &[(U, E, &str, i64)],
) {
    let mut conn = kinitro::db::connect(url).await.unwrap();
    let mut sql = String::from(
        "INSERT INTO evaluation_cycles (block_number, env_ids, episodes_per_env, registry_source) \
         SELECT 1, '[]', 1, 'file' WHERE NOT EXISTS (SELECT 1 FROM evaluation_cycles);",
    );
    for (uuid, endpoint, env, sim_seed) in tasks {
        let (uuid, endpoint) = (uuid.as_ref(), endpoint.as_ref());
        sql += &format!(
            "INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed) \
             VALUES ('{uuid}', 1, 0, 'hk', '{endpoint}', '{env}', 7, {sim_seed});"
        );
    }
    conn.batch_execute(&sql).await.unwrap();
}

/// The rows once every task is completed or failed, or after `secs` seconds as they are.
pub async fn wait_terminal(url: &DatabaseUrl, secs: u64) -> Vec<Row> {
    let start = Instant::now();
    loop {
        let r = rows(url).await;
        if r.iter()
            .all(|r| r.status == "completed" || r.status == "failed")
            || start.elapsed().as_secs() > secs
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A test's child process: SIGTERM on drop (so an executor removes what it made), then SIGKILL.
pub struct Proc(pub Child);

impl Proc {
    /// SIGTERM, then wait up to `secs` for the exit; true when it exited 0.
    pub fn terminate(&mut self, secs: u64) -> bool {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.terminate(30) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A `kinitro miner serve --policy <policy> --delay-ms <delay>` on a free port, and its endpoint.
pub fn miner(policy: &str, delay_ms: u64) -> (Proc, String) {
    let port = super::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "miner",
            "serve",
            "--policy",
            policy,
            "--port",
            &port.to_string(),
        ])
        .args(["--delay-ms", &delay_ms.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(super::wait_http_ok(port, "/health", 30));
    (Proc(child), format!("http://127.0.0.1:{port}"))
}
