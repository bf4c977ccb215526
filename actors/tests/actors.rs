//! The scheduler's actors on the in-memory ports: a full cycle with a test executor claiming and
//! reporting through the TaskQueueActor, no evaluable miner, the cycle timeout, stale reassignment and
//! the attempts cap, a registry outage, a store outage while results arrive, a lost lock and a graceful
//! shutdown.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use kinitro_actors::cycle_actor::{
    CycleActor, CycleConfig, CyclePeers, SchedulerExit, SHUTDOWN_ERROR, TIMEOUT_ERROR,
};
use kinitro_actors::memory::{MemoryData, MemoryStore, StaticMiners};
use kinitro_actors::messages::{Claim, GetLatestWeights, GetMiners, Report, Shutdown};
use kinitro_actors::ports::{QueuedTask, RegistrySource, SubmitOutcome, TaskFilter};
use kinitro_actors::registry::{MinerEntry, MinerStatus};
use kinitro_actors::registry_actor::MinerRegistryActor;
use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::scoring::ScoringParams;
use kinitro_actors::seeds;
use kinitro_actors::states::{CycleStatus, TaskStatus};
use kinitro_actors::task_queue_actor::{QueueConfig, TaskQueueActor};
use kinitro_actors::tasks::TaskResult;
use kinitro_actors::weights_actor::WeightsActor;
use tokio::sync::oneshot;

const ENVS: [&str; 2] = ["metaworld/reach-v3", "metaworld/push-v3"];
const SECRET: &[u8] = b"test secret";

fn miner(uid: u16, endpoint: Option<&str>, commit_block: u64) -> MinerEntry {
    MinerEntry {
        uid,
        hotkey: format!("hotkey-{uid}"),
        commitment: None,
        endpoint_override: endpoint.map(str::to_string),
        commit_block: Some(commit_block),
        repo: Some(format!("test/miner-{uid}")),
        revision: None,
    }
}

/// uid 0 and 1 active, uid 2 without a commitment.
fn three_miners() -> Vec<MinerEntry> {
    vec![
        miner(0, Some("http://127.0.0.1:9000"), 100),
        miner(1, Some("http://127.0.0.1:9001"), 101),
        miner(2, None, 102),
    ]
}

struct Timings {
    eval_interval: Duration,
    cycle_timeout: Duration,
    stale_threshold: Duration,
    max_attempts: u32,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            eval_interval: Duration::from_secs(60),
            cycle_timeout: Duration::from_secs(60),
            stale_threshold: Duration::from_secs(60),
            max_attempts: 3,
        }
    }
}

struct Scheduler {
    store: Rc<MemoryStore>,
    source: Rc<StaticMiners>,
    cycle: Addr<CycleActor>,
    queue: Addr<TaskQueueActor>,
    weights: Addr<WeightsActor>,
    registry: Addr<MinerRegistryActor>,
    exit: oneshot::Receiver<SchedulerExit>,
}

fn start(source: StaticMiners, t: Timings) -> Scheduler {
    let store = Rc::new(MemoryStore::default());
    let source = Rc::new(source);
    let env_ids: Vec<String> = ENVS.iter().map(|e| e.to_string()).collect();
    let registry =
        MinerRegistryActor::new(source.clone(), None, vec![Duration::from_millis(10)]).start();
    let queue = TaskQueueActor::new(
        store.clone(),
        QueueConfig {
            poll_interval: Duration::from_millis(20),
            stale_threshold: t.stale_threshold,
            progress_interval: Duration::from_secs(60),
            commit_retry_pause: Duration::from_millis(20),
            commit_attempts: 100,
        },
    )
    .start();
    let params = ScoringParams {
        episodes_per_env: 2,
        temperature: 0.01,
        threshold_z: 1.5,
        threshold_min_gap: 0.02,
        threshold_max_gap: 0.1,
    };
    let weights = WeightsActor::new(store.clone(), env_ids.clone(), params).start();
    let (tx, exit) = oneshot::channel();
    let cycle = CycleActor::new(
        store.clone(),
        CyclePeers {
            registry: registry.clone(),
            queue: queue.clone(),
            weights: weights.clone(),
        },
        CycleConfig {
            env_ids,
            episodes_per_env: 2,
            eval_interval: t.eval_interval,
            cycle_timeout: t.cycle_timeout,
            heartbeat_interval: Duration::from_millis(50),
            task_max_attempts: t.max_attempts,
            seed_secret: SECRET.to_vec(),
            source: source.kind(),
            verification_policy: kinitro_actors::ports::VerificationPolicy::Log,
        },
        tx,
    )
    .start();
    Scheduler {
        store,
        source,
        cycle,
        queue,
        weights,
        registry,
        exit,
    }
}

use kinitro_actors::ports::MinerSource;

/// Waits (up to 5 s) until `f` holds for the store's data.
async fn until(store: &MemoryStore, what: &str, f: impl Fn(&MemoryData) -> bool) -> MemoryData {
    for _ in 0..500 {
        let d = store.data();
        if f(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}\n{:#?}", store.data());
}

async fn claim_all(queue: &Addr<TaskQueueActor>, executor: &str, want: usize) -> Vec<QueuedTask> {
    let mut got = Vec::new();
    for _ in 0..500 {
        let batch = queue
            .send(Claim {
                executor_id: executor.into(),
                max: 3,
                filter: TaskFilter::default(),
            })
            .await
            .unwrap()
            .unwrap();
        got.extend(batch);
        if got.len() >= want {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("claimed only {} of {want} tasks", got.len());
}

fn result(task: &QueuedTask, success: bool) -> TaskResult {
    TaskResult {
        task_uuid: task.task_uuid.clone(),
        success,
        score: if success { 1.0 } else { 0.0 },
        total_reward: if success { 10.0 } else { 1.0 },
        timesteps: 50,
        error: None,
        failure_kind: None,
        action_time_mean: Some(0.01),
        action_time_max: Some(0.02),
        verification_passed: None,
        verification_score: None,
    }
}

async fn report(s: &Scheduler, executor: &str, r: TaskResult) -> SubmitOutcome {
    s.queue
        .send(Report {
            executor_id: executor.into(),
            result: r,
        })
        .await
        .unwrap()
}

fn with_timeout<F: Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(5), f)
}

#[actix::test]
async fn a_full_cycle_scores_the_successful_miner_highest_then_the_next_one_starts() {
    let s = start(
        StaticMiners::new(three_miners(), None),
        Timings {
            eval_interval: Duration::from_millis(300),
            ..Timings::default()
        },
    );
    let tasks = claim_all(&s.queue, "exec-a", 8).await;
    assert_eq!(tasks.len(), 8, "2 active miners × 2 envs × 2 episodes");
    assert!(
        tasks.iter().all(|t| t.miner_uid != 2),
        "inactive uid 2 got tasks"
    );
    for t in &tasks {
        assert_eq!(t.seed, seeds::task_seed(&t.task_uuid));
        assert_eq!(t.sim_seed, seeds::sim_seed(SECRET, &t.task_uuid) as i64);
    }
    let snapshot = s.registry.send(GetMiners).await.unwrap().unwrap();
    assert_eq!(snapshot.miners[2].status, MinerStatus::Inactive);
    for t in &tasks {
        let outcome = report(&s, "exec-a", result(t, t.miner_uid == 0)).await;
        assert!(
            matches!(outcome, SubmitOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
    // A repeated report is idempotent.
    assert_eq!(
        report(&s, "exec-a", result(&tasks[0], true)).await,
        SubmitOutcome::Duplicate
    );
    let d = until(&s.store, "cycle 1 completed", |d| {
        d.cycles
            .first()
            .is_some_and(|c| c.status == CycleStatus::Completed)
    })
    .await;
    let record = d.cycles[0].record.clone().unwrap();
    let w0 = record.weights["0"].as_f64().unwrap();
    let w1 = record.weights["1"].as_f64().unwrap();
    assert!(w0 > 0.9 && w0 > w1, "weights {}", record.weights);
    assert_eq!(record.scores.len(), 4, "2 miners × 2 envs");
    assert_eq!(record.hotkeys[&0], "hotkey-0");
    let latest = s.weights.send(GetLatestWeights).await.unwrap().unwrap();
    assert_eq!(latest.cycle_id, 1);
    assert_eq!(latest.weights[0].0, 0);
    assert_eq!(latest.weights[0].1, w0);
    // The heartbeat shows the next cycle's start once this one is done, and the next one comes.
    let d = until(&s.store, "next_cycle_at in a heartbeat", |d| {
        d.heartbeats.iter().any(|h| h.next_cycle_at.is_some())
    })
    .await;
    assert!(d
        .heartbeats
        .iter()
        .all(|h| h.chain_ok && h.source == RegistrySource::File && h.current_block.is_some()));
    let d = until(&s.store, "cycle 2 started", |d| d.cycles.len() == 2).await;
    assert!(
        d.cycles[1].block > d.cycles[0].block,
        "synthetic blocks increase"
    );
}

#[actix::test]
async fn no_evaluable_miner_fails_the_cycle_and_keeps_the_latest_weights() {
    let s = start(
        StaticMiners::new(vec![miner(2, None, 1), miner(3, Some("ftp://x"), 1)], None),
        Timings::default(),
    );
    let d = until(&s.store, "cycle 1 failed", |d| {
        d.cycles
            .first()
            .is_some_and(|c| c.status == CycleStatus::Failed)
    })
    .await;
    assert_eq!(d.cycles[0].error.as_deref(), Some("no evaluable miners"));
    assert!(d.tasks.is_empty());
    assert_eq!(s.weights.send(GetLatestWeights).await.unwrap(), None);
    let snapshot = s.registry.send(GetMiners).await.unwrap().unwrap();
    assert_eq!(snapshot.miners[1].status, MinerStatus::InvalidCommitment);
}

#[actix::test]
async fn a_cycle_timeout_cancels_the_open_tasks_and_the_next_cycle_follows() {
    let s = start(
        StaticMiners::new(three_miners(), None),
        Timings {
            cycle_timeout: Duration::from_millis(200),
            eval_interval: Duration::from_millis(100),
            ..Timings::default()
        },
    );
    let d = until(&s.store, "cycle 1 timed out", |d| {
        d.cycles
            .first()
            .is_some_and(|c| c.status == CycleStatus::Failed)
    })
    .await;
    assert_eq!(d.cycles[0].error.as_deref(), Some(TIMEOUT_ERROR));
    let first: Vec<_> = d.tasks.iter().filter(|t| t.cycle_id == 1).collect();
    assert_eq!(first.len(), 8);
    for t in first {
        assert_eq!(t.state.status, TaskStatus::Cancelled);
        assert_eq!(
            t.result.as_ref().unwrap()["error"],
            format!("Cycle cancelled: {TIMEOUT_ERROR}")
        );
    }
    until(&s.store, "cycle 2 running", |d| {
        d.cycles
            .get(1)
            .is_some_and(|c| c.status == CycleStatus::Running)
    })
    .await;
}

#[actix::test]
async fn stale_tasks_are_reassigned_then_given_up_at_the_attempts_cap() {
    let s = start(
        StaticMiners::new(three_miners(), None),
        Timings {
            stale_threshold: Duration::from_millis(100),
            max_attempts: 2,
            ..Timings::default()
        },
    );
    let first = claim_all(&s.queue, "exec-a", 8).await;
    // exec-a dies; the reaper puts its tasks back and exec-b gets them.
    let second = claim_all(&s.queue, "exec-b", 8).await;
    let mut a: Vec<_> = first.iter().map(|t| &t.task_uuid).collect();
    let mut b: Vec<_> = second.iter().map(|t| &t.task_uuid).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same tasks are reassigned");
    let late = report(&s, "exec-a", result(&first[0], true)).await;
    assert!(
        matches!(&late, SubmitOutcome::Rejected(m) if m.contains("not assigned")),
        "{late:?}"
    );
    // exec-b dies too: attempt 2 of 2, so the tasks are given up, and with nothing countable the
    // cycle fails.
    let d = until(&s.store, "cycle 1 failed", |d| {
        d.cycles
            .first()
            .is_some_and(|c| c.status == CycleStatus::Failed)
    })
    .await;
    assert_eq!(d.cycles[0].error.as_deref(), Some("no countable results"));
    for t in &d.tasks {
        assert_eq!(t.state.status, TaskStatus::Failed);
        assert_eq!(t.state.attempts, 2);
        assert_eq!(t.result.as_ref().unwrap()["error"], "max attempts exceeded");
    }
}

#[actix::test]
async fn an_infrastructure_failure_requeues_the_task_without_charging_the_miner() {
    let s = start(StaticMiners::new(three_miners(), None), Timings::default());
    let tasks = claim_all(&s.queue, "exec-a", 8).await;
    let mut broken = result(&tasks[0], false);
    broken.error = Some("simulator error: boom".into());
    broken.failure_kind = Some(FailureKind::Infrastructure);
    assert_eq!(report(&s, "exec-a", broken).await, SubmitOutcome::Requeued);
    let again = claim_all(&s.queue, "exec-b", 1).await;
    assert_eq!(again[0].task_uuid, tasks[0].task_uuid);
    for t in tasks.iter().skip(1).chain(&again) {
        let executor = if t.task_uuid == tasks[0].task_uuid {
            "exec-b"
        } else {
            "exec-a"
        };
        report(&s, executor, result(t, true)).await;
    }
    let d = until(&s.store, "cycle 1 completed", |d| {
        d.cycles
            .first()
            .is_some_and(|c| c.status == CycleStatus::Completed)
    })
    .await;
    let scores = &d.cycles[0].record.as_ref().unwrap().scores;
    assert!(scores
        .iter()
        .all(|p| p.episodes_completed == 2 && p.episodes_failed == 0));
}

#[actix::test]
async fn a_store_outage_while_results_arrive_loses_no_result() {
    let s = start(StaticMiners::new(three_miners(), None), Timings::default());
    let tasks = claim_all(&s.queue, "exec-a", 8).await;
    s.store.set_down(true);
    let pending: Vec<_> = tasks
        .iter()
        .map(|t| {
            s.queue.send(Report {
                executor_id: "exec-a".into(),
                result: result(t, true),
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.store.set_down(false);
    for p in pending {
        let outcome = with_timeout(p).await.unwrap().unwrap();
        assert!(
            matches!(outcome, SubmitOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
    let d = until(&s.store, "cycle 1 completed", |d| {
        d.cycles
            .first()
            .is_some_and(|c| c.status == CycleStatus::Completed)
    })
    .await;
    assert!(d
        .tasks
        .iter()
        .all(|t| t.state.status == TaskStatus::Completed));
}

#[actix::test]
async fn a_registry_outage_is_retried_and_reported_in_the_heartbeat() {
    let source = StaticMiners::new(three_miners(), Some(5_000));
    source.set_error(Some("chain unreachable"));
    let s = start(
        source,
        Timings {
            eval_interval: Duration::from_millis(200),
            ..Timings::default()
        },
    );
    let d = until(&s.store, "a heartbeat with the chain error", |d| {
        d.heartbeats.iter().any(|h| !h.chain_ok)
    })
    .await;
    let bad = d.heartbeats.iter().find(|h| !h.chain_ok).unwrap();
    assert_eq!(bad.chain_error.as_deref(), Some("chain unreachable"));
    assert_eq!(bad.source, RegistrySource::Chain);
    assert!(d.cycles.is_empty(), "no cycle without a registry");
    for _ in 0..100 {
        if s.source.reads() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.source.reads() >= 2, "the read is retried");
    assert!(
        s.store.data().cycles.is_empty(),
        "no cycle without a registry"
    );
    s.source.set_error(None);
    let d = until(&s.store, "a cycle at the chain block", |d| {
        !d.cycles.is_empty()
    })
    .await;
    assert_eq!(d.cycles[0].block, 5_000);
    until(&s.store, "a healthy heartbeat", |d| {
        d.heartbeats
            .last()
            .is_some_and(|h| h.chain_ok && h.current_block == Some(5_000))
    })
    .await;
}

#[actix::test]
async fn a_lost_lock_stops_the_scheduler_at_once_and_nothing_more_is_written() {
    let s = start(StaticMiners::new(three_miners(), None), Timings::default());
    until(&s.store, "cycle 1 running", |d| !d.cycles.is_empty()).await;
    s.store.set_lock_held(false);
    let exit = with_timeout(s.exit).await.unwrap().unwrap();
    assert_eq!(exit, SchedulerExit::LockLost);
    let before = s.store.data();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = s.store.data();
    assert_eq!(before.heartbeats.len(), after.heartbeats.len());
    assert_eq!(
        after.cycles[0].status,
        CycleStatus::Running,
        "a scheduler without the lock writes nothing"
    );
    assert!(!s.cycle.connected());
}

#[actix::test]
async fn a_graceful_shutdown_cancels_the_running_cycle() {
    let s = start(StaticMiners::new(three_miners(), None), Timings::default());
    until(&s.store, "cycle 1 running", |d| !d.cycles.is_empty()).await;
    with_timeout(s.cycle.send(Shutdown)).await.unwrap().unwrap();
    let exit = with_timeout(s.exit).await.unwrap().unwrap();
    assert_eq!(exit, SchedulerExit::Shutdown);
    let d = s.store.data();
    assert_eq!(d.cycles[0].status, CycleStatus::Failed);
    assert_eq!(d.cycles[0].error.as_deref(), Some(SHUTDOWN_ERROR));
    assert!(d
        .tasks
        .iter()
        .all(|t| t.state.status == TaskStatus::Cancelled
            && t.result.as_ref().unwrap()["error"] == "Cycle cancelled on scheduler shutdown"));
    assert_eq!(d.heartbeats.last().unwrap().next_cycle_at, None);
}
