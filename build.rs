//! Link the `hearth` executable position-dependent (`-no-pie`).
//!
//! Each task runs two long-lived `hearth` processes, the executor and its keeper. As a PIE, the
//! loader must relocate the binary's ~320 KiB of `.data.rel.ro` (vtables, panic locations, format
//! tables) at every start, turning those pages into private dirty memory in every task — about a
//! twelfth of a task's whole overhead. Linked at a fixed address, the same pages stay clean, shared
//! page cache, mapped only where touched. The cost: the executable's own image is not placed at a
//! random address (shared libraries, heap, stacks and mappings still are). Measured by
//! `cargo bench --bench executor`, row (a); see ARCHITECTURE.md, "Memory".
fn main() {
    println!("cargo::rustc-link-arg-bin=hearth=-no-pie");
    println!("cargo::rerun-if-changed=build.rs");
}
