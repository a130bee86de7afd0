//! Crash points for the end-to-end tests: `HEARTH_FAILPOINT=NAME:N` makes the executor `SIGKILL`
//! itself the `N`-th time it reaches the point `NAME` (`N` defaults to 1), exactly as a `kill -9`
//! would, but at a chosen instant rather than a lucky one. Unset (always, outside tests), a point
//! costs one relaxed load.
//!
//! Points:
//! * [`AFTER_FORKED`]: a turn's FORKED records are written, its spawn requests not yet sent.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the point.
pub const ENV: &str = "HEARTH_FAILPOINT";

/// A turn's FORKED records are written; the keeper has not been asked to spawn yet.
pub const AFTER_FORKED: &str = "after-forked";

fn armed() -> Option<&'static (String, u32)> {
    static ARMED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let (name, n) = match spec.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some((name, n))
        })
        .as_ref()
}

/// The executor reached point `name`: die here if the test armed it for this visit.
pub fn reached(name: &str) {
    static VISITS: AtomicU32 = AtomicU32::new(0);
    let Some((armed, n)) = armed() else {
        return;
    };
    if armed == name && VISITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        tracing::warn!(point = name, "failpoint reached: killing the executor");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
