//! Core of kinitro: domain types, the environment registry, miner classification, task seeds,
//! task-result rules and scoring — plain data and pure functions, with no database, HTTP, chain or
//! simulator inside (ARCHITECTURE.md).

pub mod envs;
pub mod registry;
pub mod scoring;
pub mod seeds;
pub mod tasks;
