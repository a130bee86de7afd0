//! Shared by the executor's tests and benchmarks: the `hearth-test-server` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>/hearth-test-server`, built once per test or bench binary (it belongs to the
/// root package, so cargo does not build it for this crate's targets).
pub fn test_server_bin() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(build_test_server).clone()
}

fn build_test_server() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory above the test binary")?
        .to_owned();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "-q",
            "--bin",
            "hearth-test-server",
            "--manifest-path",
        ])
        .arg(&manifest);
    if !dir.ends_with("debug") {
        build.arg("--release");
    }
    let ok = build.status().map_err(|e| e.to_string())?.success();
    if !ok {
        return Err("building hearth-test-server failed".into());
    }
    Ok(dir.join("hearth-test-server"))
}
