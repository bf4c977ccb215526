//! Core of kinitro: domain types, the environment registry, miner classification, task seeds,
//! task-result rules, scoring, the ports the application implements and the scheduler's actors —
//! plain data, pure functions and actix actors, with no database, HTTP, chain or simulator inside
//! (docs/architecture.md).

pub mod cycle_actor;
pub mod envs;
#[cfg(feature = "test-util")]
pub mod memory;
pub mod messages;
pub mod ports;
pub mod registry;
pub mod registry_actor;
pub mod scoring;
pub mod seeds;
pub mod states;
pub mod task_queue_actor;
pub mod tasks;
pub mod weights_actor;
