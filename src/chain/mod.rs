//! The chain side (spec: chain.md): commitment crypto now; the subxt client (`MinerSource` over the
//! chain) is not in this build yet.

pub mod base85;
pub mod client;
pub mod crypto;
pub mod registration;
