//! Arbitrary text as a task config: parsing must never panic (errors are fine).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hearth_checkpoints::config::parse(text);
    }
});
