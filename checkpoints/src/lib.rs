//! The on-disk contract of Hearth.
//!
//! * [`config`]: the task configuration model (Aurora job JSON, MesosTaskInstance JSON, bare Thermos
//!   task JSON), validated in two phases, and the template binder.
//! * [`record`]: the records of a checkpoint stream.
//! * [`replay`]: folding records into a task's state with Thermos's transition rules.
//!
//! This crate is a leaf: it depends on no other Hearth crate.

pub mod config;
pub mod record;
pub mod replay;
