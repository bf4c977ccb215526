//! Core of kinitro: domain types, the environment registry, task-result rules and scoring — plain
//! data and pure functions, with no database, HTTP, chain or simulator inside (ARCHITECTURE.md).

pub mod envs;
pub mod scoring;
pub mod tasks;
