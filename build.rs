//! Link the `hearth-executor` executable position-dependent (`-no-pie`).
//!
//! Each task runs two long-lived `hearth-executor` processes, the executor and its keeper. As a
//! PIE, the loader must relocate the binary's `.data.rel.ro` (vtables, panic locations, format
//! tables) at every start, turning those pages into private dirty memory in every task. Linked at
//! a fixed address, the same pages stay clean, shared page cache, mapped only where touched. The
//! cost: the executable's own image is not placed at a random address (shared libraries, heap,
//! stacks and mappings still are). `hearth` itself, which serves HTTP as the scheduler, the agent
//! and the observer, stays a PIE. Measured by `cargo bench --bench executor`, row (a); see
//! ARCHITECTURE.md, "Memory".
fn main() {
    println!("cargo::rustc-link-arg-bin=hearth-executor=-no-pie");
    println!("cargo::rerun-if-changed=build.rs");
}
