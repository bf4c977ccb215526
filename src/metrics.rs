//! Telemetry: the OpenMetrics registry of this process, produced with prometheus-client. Every
//! service records into it; the API serves it at `/metrics` (docs/api.md §4.12).
//!
//! Every metric of docs/api.md §4.12 is registered at start-up, and every labelled counter or gauge
//! whose label values are known in advance is created at 0, so all names appear on a fresh install.
//! Values derived from the database are refreshed on scrape, at most every 10 s.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use kinitro_actors::envs::ENV_IDS;
use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::states::{CycleStatus, TaskStatus};
use kinitro_actors::tasks::TaskResult;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::telemetry::metrics_snapshot;
use crate::db::DbError;

type Labels = Vec<(&'static str, String)>;

/// How often database-derived values are refreshed.
const DB_REFRESH: Duration = Duration::from_secs(10);

/// Cycle statuses counted by `kinitro_eval_cycles_total`.
pub const CYCLE_STATUSES: [CycleStatus; 2] = [CycleStatus::Completed, CycleStatus::Failed];
/// Task statuses of `kinitro_tasks`.
pub const TASK_STATUSES: [TaskStatus; 5] = TaskStatus::ALL;
/// Episode outcomes of `kinitro_episodes_total`.
pub const OUTCOMES: [&str; 4] = ["success", "failure", "miner_error", "infrastructure_error"];
/// Task-queue events of `kinitro_task_events_total`.
pub const TASK_EVENTS: [&str; 7] = [
    "claimed",
    "accepted",
    "rejected",
    "duplicate",
    "requeued",
    "given_up",
    "reaped",
];

fn label(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_string())]
}

const CYCLE_BUCKETS: &[f64] = &[60.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0];
const ACTION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0];
const RESET_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const FAST_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

type HistFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn action_histogram() -> Histogram {
    Histogram::new(ACTION_BUCKETS.iter().copied())
}

fn fast_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS.iter().copied())
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS.iter().copied())
}

#[derive(Default)]
struct DbSeen {
    refreshed: Option<Instant>,
    cycles: [i64; 2],
    last_duration_cycle: i32,
}

/// Every metric of docs/api.md §4.12.
pub struct Metrics {
    registry: Registry,
    eval_cycles: Family<Labels, Counter>,
    eval_duration: Histogram,
    miners_active: Gauge,
    miner_scores: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tasks: Family<Labels, Gauge>,
    task_events: Family<Labels, Counter>,
    episodes: Family<Labels, Counter>,
    /// `/act` round trips per env (executor).
    pub action_latency: HistFamily,
    /// `/reset` round trips (executor).
    pub reset_latency: Histogram,
    /// Physics per step per env (executor).
    pub sim_step: HistFamily,
    /// Both cameras per observation (executor).
    pub render: Histogram,
    /// Observation building and encoding (executor).
    pub obs_encode: Histogram,
    /// Episodes running in this process (executor).
    pub episodes_in_flight: Gauge,
    /// Docker mode: evaluation containers per host, family and state.
    pub eval_containers: Family<Labels, Gauge>,
    /// Docker mode: evaluation containers recreated after dying or restarting.
    pub eval_container_restarts: Family<Labels, Counter>,
    verifications: Family<Labels, Counter>,
    http: HistFamily,
    database_up: Gauge,
    seen: Mutex<DbSeen>,
}

impl Metrics {
    /// Registers every metric and creates the known label values at 0.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            eval_cycles: Family::default(),
            eval_duration: Histogram::new(CYCLE_BUCKETS.iter().copied()),
            miners_active: Gauge::default(),
            miner_scores: Family::default(),
            tasks: Family::default(),
            task_events: Family::default(),
            episodes: Family::default(),
            action_latency: Family::new_with_constructor(action_histogram),
            reset_latency: Histogram::new(RESET_BUCKETS.iter().copied()),
            sim_step: Family::new_with_constructor(fast_histogram),
            render: Histogram::new(FAST_BUCKETS.iter().copied()),
            obs_encode: Histogram::new(FAST_BUCKETS.iter().copied()),
            episodes_in_flight: Gauge::default(),
            eval_containers: Family::default(),
            eval_container_restarts: Family::default(),
            verifications: Family::default(),
            http: Family::new_with_constructor(http_histogram),
            database_up: Gauge::default(),
            seen: Mutex::new(DbSeen::default()),
            registry: Registry::default(),
        };
        registry.register(
            "kinitro_eval_cycles",
            "Finished evaluation cycles",
            m.eval_cycles.clone(),
        );
        registry.register(
            "kinitro_eval_duration_seconds",
            "Durations of completed cycles",
            m.eval_duration.clone(),
        );
        registry.register(
            "kinitro_miners_active",
            "Active miners in the latest registry snapshot",
            m.miners_active.clone(),
        );
        registry.register(
            "kinitro_miner_scores",
            "Success rate per miner and env in the latest completed cycle",
            m.miner_scores.clone(),
        );
        registry.register(
            "kinitro_tasks",
            "Tasks currently in each status",
            m.tasks.clone(),
        );
        registry.register(
            "kinitro_task_events",
            "Task-queue events handled by this process",
            m.task_events.clone(),
        );
        registry.register("kinitro_episodes", "Episode outcomes", m.episodes.clone());
        registry.register(
            "kinitro_miner_action_latency_seconds",
            "One /act round trip",
            m.action_latency.clone(),
        );
        registry.register(
            "kinitro_miner_reset_latency_seconds",
            "One /reset round trip",
            m.reset_latency.clone(),
        );
        registry.register(
            "kinitro_sim_step_seconds",
            "Physics part of one env step",
            m.sim_step.clone(),
        );
        registry.register(
            "kinitro_render_seconds",
            "Rendering both cameras for one observation",
            m.render.clone(),
        );
        registry.register(
            "kinitro_obs_encode_seconds",
            "Building and serialising one observation",
            m.obs_encode.clone(),
        );
        registry.register(
            "kinitro_episodes_in_flight",
            "Episodes running in this process",
            m.episodes_in_flight.clone(),
        );
        registry.register(
            "kinitro_eval_containers",
            "Docker mode: evaluation containers per host, family and state",
            m.eval_containers.clone(),
        );
        registry.register(
            "kinitro_eval_container_restarts",
            "Docker mode: evaluation containers recreated after dying or restarting",
            m.eval_container_restarts.clone(),
        );
        registry.register(
            "kinitro_verifications",
            "Verifications stored through this API process, by outcome",
            m.verifications.clone(),
        );
        registry.register(
            "kinitro_http_request_duration_seconds",
            "API request latency",
            m.http.clone(),
        );
        registry.register(
            "kinitro_database_up",
            "1 if the last database access succeeded",
            m.database_up.clone(),
        );
        let build_info: Family<Labels, Gauge> = Family::default();
        build_info
            .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        registry.register("kinitro_build_info", "Build information", build_info);
        for s in CYCLE_STATUSES {
            let _ = m.eval_cycles.get_or_create(&label("status", s.as_str()));
        }
        for s in TASK_STATUSES {
            let _ = m.tasks.get_or_create(&label("status", s.as_str()));
        }
        for o in OUTCOMES {
            let _ = m.episodes.get_or_create(&label("outcome", o));
        }
        for o in crate::wire::VerificationOutcome::ALL {
            let _ = m.verifications.get_or_create(&label("outcome", o.as_str()));
        }
        for e in TASK_EVENTS {
            let _ = m.task_events.get_or_create(&label("event", e));
        }
        for env in ENV_IDS {
            let _ = m.action_latency.get_or_create(&label("env", env));
            let _ = m.sim_step.get_or_create(&label("env", env));
        }
        Self { registry, ..m }
    }

    /// Counts `n` task-queue events.
    pub fn task_event(&self, event: &str, n: u64) {
        if n > 0 {
            self.task_events
                .get_or_create(&label("event", event))
                .inc_by(n);
        }
    }

    /// Counts one accepted episode result by its settled blame (`TaskResult::settled`); the second
    /// argument, the task's new status, does not change the outcome.
    pub fn episode(&self, r: &TaskResult, _status: &str) {
        let outcome = match r.failure_kind {
            _ if r.success => "success",
            Some(FailureKind::Miner) => "miner_error",
            Some(FailureKind::Infrastructure) => "infrastructure_error",
            None => "failure",
        };
        self.episodes
            .get_or_create(&label("outcome", outcome))
            .inc();
    }

    /// Counts one stored verification.
    pub fn verification(&self, outcome: crate::wire::VerificationOutcome) {
        self.verifications
            .get_or_create(&label("outcome", outcome.as_str()))
            .inc();
    }

    /// Records one HTTP request.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .observe(seconds);
    }

    /// Marks whether the database answered.
    pub fn database(&self, up: bool) {
        self.database_up.set(i64::from(up));
    }

    /// Whether the database-derived values are due for a refresh (and claims the refresh).
    pub fn refresh_due(&self) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if seen.refreshed.is_some_and(|t| t.elapsed() < DB_REFRESH) {
            return false;
        }
        seen.refreshed = Some(Instant::now());
        true
    }

    /// Refreshes the database-derived values.
    pub async fn refresh(&self, conn: &mut AsyncPgConnection) -> Result<(), DbError> {
        let last_seen = self.seen.lock().unwrap().last_duration_cycle;
        let snapshot = metrics_snapshot(conn, last_seen).await?;
        let mut seen = self.seen.lock().unwrap();
        for (i, s) in CYCLE_STATUSES.iter().enumerate() {
            let now = snapshot
                .cycles
                .iter()
                .find(|(status, _)| status == s)
                .map_or(0, |(_, n)| *n);
            if now > seen.cycles[i] {
                self.eval_cycles
                    .get_or_create(&label("status", s.as_str()))
                    .inc_by((now - seen.cycles[i]) as u64);
                seen.cycles[i] = now;
            }
        }
        for (id, seconds) in snapshot.durations {
            self.eval_duration.observe(seconds);
            seen.last_duration_cycle = id;
        }
        for s in TASK_STATUSES {
            let n = snapshot
                .tasks
                .iter()
                .find(|(status, _)| *status == s)
                .map_or(0, |(_, n)| *n);
            self.tasks
                .get_or_create(&label("status", s.as_str()))
                .set(n);
        }
        self.miners_active.set(snapshot.active_miners);
        self.miner_scores.clear();
        for (uid, env_id, success_rate) in snapshot.scores {
            self.miner_scores
                .get_or_create(&vec![("uid", uid.to_string()), ("env", env_id)])
                .set(success_rate);
        }
        Ok(())
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
