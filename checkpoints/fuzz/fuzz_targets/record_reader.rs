//! Arbitrary bytes as a checkpoint stream: replay must never panic, and what it reports must be
//! consistent with the bytes.
#![no_main]

use hearth_checkpoints::stream::{StreamEnd, read_records, replay_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = replay_bytes(data);
    assert!(r.valid_len <= data.len() as u64);
    match &r.end {
        StreamEnd::Clean => assert_eq!(r.valid_len, data.len() as u64),
        StreamEnd::Torn { offset, .. }
        | StreamEnd::Corrupt { offset, .. }
        | StreamEnd::Invalid { offset, .. } => assert!(*offset <= data.len() as u64),
    }
    // The valid prefix replays to the same state, cleanly.
    let prefix = &data[..r.valid_len as usize];
    let again = replay_bytes(prefix);
    if r.valid_len > 0 {
        assert_eq!(again.replay, r.replay);
    }
    let (_, records, _) = read_records(data);
    assert!(records.len() as u64 >= r.records);
});
