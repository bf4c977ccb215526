//! The miner side of the protocol (docs/miner-protocol.md): reference policies and the server that
//! speaks the protocol (`kinitro miner serve`). The executor's client comes with the executor.

pub mod policy;
pub mod server;
