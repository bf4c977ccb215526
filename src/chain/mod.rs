//! The chain side (docs/scheduler.md §9–10): the subxt client that reads the registry at the
//! finalized block ([`client`], which the scheduler wraps as its `MinerSource`), the raw-SCALE
//! decoder of commitment registrations, and the commitment crypto with its base85 encoding.

pub mod base85;
pub mod client;
pub mod crypto;
pub mod registration;
