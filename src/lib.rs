//! kinitro: the evaluation backend of a Bittensor subnet that rewards generalist robot policies.
//!
//! This crate is the application: the command line, configuration, and the adapters (PostgreSQL,
//! HTTP API, …) around the core crate `kinitro-actors`. See docs/architecture.md for the map.

pub mod api;
pub mod chain;
pub mod cli;
pub mod config;
pub mod container;
pub mod dashboard;
pub mod db;
pub mod env_server;
pub mod executor;
pub mod logging;
pub mod metrics;
pub mod miner;
pub mod scheduler;
pub mod sim;
pub mod verify;
pub mod wire;
