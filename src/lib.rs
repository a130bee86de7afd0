//! What the `hearth` and `hearth-executor` executables share: the `run` command's arguments and
//! its hand-over ([`run_cmd`]), `.aurora` configs on the command line ([`aurora_cmd`]), and the
//! logging set-up ([`logging`]). `hearth`'s other commands are in `src/main.rs` and its modules.

pub mod aurora_cmd;
pub mod logging;
pub mod run_cmd;
