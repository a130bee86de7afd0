//! Hearth's compact scheduler.
//!
//! Always built (what executors and clients need):
//! * [`api`]: the status-report API — the JSON types an executor `POST`s, the endpoint path and
//!   the exactly-once, in-order delivery contract both sides keep.
//! * [`wire`]: the typed requests and responses of the scheduler's HTTP API (clients, agents).
//!
//! Feature `server` (the scheduler itself; pulls axum, tokio, rusqlite, argon2):
//! * [`model`]: jobs (validated from the Aurora job JSON), tasks, hosts;
//! * [`lifecycle`]: Aurora's task state machine, pure, with side effects as commands;
//! * [`placement`]: which host a task goes to, pure;
//! * [`state`]: the in-memory model and every operation on it (time passed in);
//! * [`storage`]: the storage trait and its SQLite implementation (versioned schema);
//! * [`core`]: the one writer — batches operations, commits once, then answers;
//! * [`auth`]: users, roles and Shiro permissions from an INI file, argon2id, agent tokens;
//! * [`http`]: the axum router of every endpoint; [`openapi`]: its document;
//! * [`server`]: [`SchedulerConfig`], [`serve`], [`restore`], [`hash_password`].
//!
//! Feature `receiver`: a minimal in-memory status receiver executor tests run against.

pub mod api;
#[cfg(feature = "receiver")]
pub mod receiver;
pub mod wire;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod core;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod lifecycle;
#[cfg(feature = "server")]
pub mod model;
#[cfg(feature = "server")]
pub mod openapi;
#[cfg(feature = "server")]
pub mod placement;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod storage;

#[cfg(feature = "server")]
pub use server::{SchedulerConfig, SchedulerError, hash_password, restore, serve};
