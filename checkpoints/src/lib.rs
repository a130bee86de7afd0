//! The on-disk contract of Hearth.
//!
//! * [`config`]: the task configuration model (Aurora job JSON, MesosTaskInstance JSON, bare Thermos
//!   task JSON), validated in two phases, and the template binder.
//! * [`record`]: the records of a checkpoint stream.
//! * [`codec`]: the Thrift binary encoding of records (shared with legacy Thermos streams).
//! * [`stream`]: framing, the group-commit writer, the reader that tolerates a torn tail.
//! * [`replay`]: folding records into a task's state with Thermos's transition rules.
//! * [`root`]: the layout of a checkpoint root, Hearth's or Thermos's, and task discovery.
//! * [`condition`]: a task's live condition beside its stream (checkpoint writes failing), in a
//!   side file that can be rewritten on a full disk.
//! * [`inspect`]: human and JSON renderings of a replayed task (`hearth inspect`, `hearth status`).
//!
//! This crate is a leaf: it depends on no other Hearth crate.

pub mod codec;
pub mod condition;
pub mod config;
pub mod inspect;
pub mod record;
pub mod replay;
pub mod root;
pub mod stream;

/// An error and its causes on one line, joined with `: ` — how every Hearth command reports an
/// error, once, where it is handled.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
