//! The Hearth executor: runs one task.
//!
//! * [`planner`]: pure scheduling logic (ordering, retries, daemons, ephemerals, finals).
//! * [`cgroup`]: the task's cgroup on v1, v2 or hybrid hosts, or none.

pub mod cgroup;
pub mod planner;
