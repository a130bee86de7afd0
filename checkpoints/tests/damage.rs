//! Damaged golden files: every truncation and thousands of seeded bit flips. Nothing panics, the
//! longest valid prefix is replayed, a torn tail is reported as torn and corruption with the
//! offset of the damaged frame.

use std::path::PathBuf;

use hearth_checkpoints::stream::{FILE_HEADER_LEN, StreamEnd, read_records, replay_bytes};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const GOLDEN: [&str; 3] = ["success.ckpt", "retries.ckpt", "killed.ckpt"];

fn golden(name: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/checkpoints/v1")
            .join(name),
    )
}

/// Frame boundaries of an intact stream: the file header's end, then each frame's end.
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let (_, records, end) = read_records(bytes);
    assert_eq!(end, StreamEnd::Clean);
    let mut b: Vec<usize> = records.iter().map(|(o, _)| *o as usize).collect();
    b.push(bytes.len());
    assert_eq!(b[0], FILE_HEADER_LEN);
    b
}

#[test]
fn truncation_at_every_offset_replays_the_whole_frames_and_reports_the_rest_torn() -> TestResult {
    for name in GOLDEN {
        let bytes = golden(name)?;
        let bounds = boundaries(&bytes);
        for cut in 0..=bytes.len() {
            let r = replay_bytes(&bytes[..cut]);
            // Whole frames before the cut.
            let whole = bounds.iter().filter(|&&b| b <= cut).count();
            let last = if whole == 0 { 0 } else { bounds[whole - 1] };
            let frames = whole.saturating_sub(1) as u64;
            assert_eq!(r.valid_len, last as u64, "{name} cut {cut}");
            assert_eq!(r.records, frames, "{name} cut {cut}");
            if cut == last && cut >= FILE_HEADER_LEN {
                assert_eq!(r.end, StreamEnd::Clean, "{name} cut {cut}");
            } else {
                assert!(
                    matches!(r.end, StreamEnd::Torn { offset, .. } if offset == last as u64),
                    "{name} cut {cut}: {:?}",
                    r.end
                );
            }
            // The state is exactly the replay of the valid prefix.
            assert_eq!(
                r.replay,
                replay_bytes(&bytes[..last]).replay,
                "{name} cut {cut}"
            );
        }
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn a_flipped_bit_is_reported_at_its_frame_and_the_frames_before_it_replay() -> TestResult {
    let mut rng = Rng(0x4845_4152_5448_434b);
    let mut cases = 0;
    for name in GOLDEN {
        let bytes = golden(name)?;
        let bounds = boundaries(&bytes);
        for _ in 0..1500 {
            let pos = rng.below(bytes.len());
            let bit = rng.below(8);
            let mut damaged = bytes.clone();
            damaged[pos] ^= 1 << bit;
            let r = replay_bytes(&damaged);
            cases += 1;
            let ctx = format!("{name}: bit {bit} of byte {pos}: {:?}", r.end);
            if pos < FILE_HEADER_LEN {
                // Magic (read as a legacy stream whose first length is impossible), version or flags.
                let at = [0, 8, 12][(pos >= 8) as usize + (pos >= 12) as usize];
                assert!(
                    matches!(r.end, StreamEnd::Corrupt { offset, .. } if offset == at),
                    "{ctx}"
                );
                assert_eq!(r.records, 0, "{ctx}");
                continue;
            }
            // The frame holding the flipped byte.
            let i = bounds.iter().rposition(|&b| b <= pos).ok_or("no frame")?;
            let (start, is_last) = (bounds[i] as u64, i + 2 == bounds.len());
            match &r.end {
                StreamEnd::Corrupt { offset, .. } => assert_eq!(*offset, start, "{ctx}"),
                StreamEnd::Torn { offset, .. } if is_last => assert_eq!(*offset, start, "{ctx}"),
                _ => panic!("{ctx}: expected corruption at byte {start}"),
            }
            assert_eq!(r.records, i as u64, "{ctx}");
            assert_eq!(r.valid_len, start, "{ctx}");
            assert_eq!(
                r.replay,
                replay_bytes(&bytes[..start as usize]).replay,
                "{ctx}"
            );
        }
    }
    assert_eq!(cases, 4500);
    Ok(())
}

#[test]
fn a_zero_filled_tail_after_a_crash_is_torn_not_corrupt() -> TestResult {
    let mut bytes = golden("success.ckpt")?;
    let len = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    let r = replay_bytes(&bytes);
    assert!(
        matches!(r.end, StreamEnd::Torn { offset, .. } if offset == len),
        "{:?}",
        r.end
    );
    assert_eq!(r.valid_len, len);
    Ok(())
}

#[test]
fn garbage_after_a_whole_frame_is_corrupt_and_never_panics() -> TestResult {
    let mut bytes = golden("killed.ckpt")?;
    let len = bytes.len() as u64;
    // A frame header declaring 2 GiB.
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5]);
    let r = replay_bytes(&bytes);
    assert!(
        matches!(r.end, StreamEnd::Corrupt { offset, .. } if offset == len),
        "{:?}",
        r.end
    );
    Ok(())
}

#[test]
fn a_damaged_length_that_runs_past_the_end_is_corrupt_when_whole_frames_follow() -> TestResult {
    let bytes = golden("retries.ckpt")?;
    let bounds = boundaries(&bytes);
    let mut damaged = bytes.clone();
    // Make the first frame after the file header declare (almost) a MiB.
    damaged[bounds[0] + 2] = 0x0f;
    let r = replay_bytes(&damaged);
    assert!(
        matches!(r.end, StreamEnd::Corrupt { offset, .. } if offset == bounds[0] as u64),
        "{:?}",
        r.end
    );
    Ok(())
}

/// Found by the `record_reader` fuzz target: the unknown fields of a record that replay then
/// rejected were counted in the state, so the state differed from the replay of the prefix.
#[test]
fn a_rejected_record_leaves_no_trace_in_the_replayed_state() -> TestResult {
    use hearth_checkpoints::codec::encode;
    use hearth_checkpoints::record::{ProcessStatus, Record};

    let mut bytes = golden("success.ckpt")?;
    let good = bytes.len();
    // A process record without its state, carrying an unknown i32 field 99.
    let mut payload = Vec::new();
    encode(
        &Record::Process(ProcessStatus {
            seq: 0,
            process: "late".to_owned(),
            ..ProcessStatus::default()
        }),
        &mut payload,
    );
    let stops = payload.split_off(payload.len() - 2);
    payload.extend_from_slice(&[0x08, 0x00, 99, 0, 0, 0, 1]);
    payload.extend_from_slice(&stops);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);

    let r = replay_bytes(&bytes);
    assert!(
        matches!(r.end, StreamEnd::Invalid { offset, .. } if offset == good as u64),
        "{:?}",
        r.end
    );
    assert_eq!(r.replay.unknown_fields, 0);
    assert_eq!(r.replay, replay_bytes(&bytes[..good]).replay);
    Ok(())
}
