//! Hearth's compact scheduler.
//!
//! For now this crate holds what executors need from it:
//! * [`api`]: the status-report API — the JSON types an executor `POST`s, the endpoint path and
//!   the exactly-once, in-order delivery contract both sides keep.
//! * [`wire`]: the typed requests and responses of the scheduler's HTTP API (clients, agents).
//! * `receiver` (feature `receiver`): a minimal server that receives status updates and applies
//!   them under that contract, keeping them in memory. Executor tests run against it.

pub mod api;
#[cfg(feature = "receiver")]
pub mod receiver;
pub mod wire;
