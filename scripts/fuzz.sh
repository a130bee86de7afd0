#!/usr/bin/env bash
# Run each checkpoint fuzz target for a bounded time (default 180 s each).
#   scripts/fuzz.sh [SECONDS]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds the record reader
# with the golden files; crashes land in checkpoints/fuzz/artifacts/<target>/.
set -euo pipefail

secs="${1:-180}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here/checkpoints"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz (and a nightly toolchain) are required: cargo install cargo-fuzz" >&2
    exit 2
fi

mkdir -p fuzz/corpus/record_reader fuzz/corpus/config_parser
cp "$here"/testdata/checkpoints/v1/*.ckpt fuzz/corpus/record_reader/
for f in "$here"/testdata/configs/*/*.json "$here"/../shared/thermos/executor_json/*.json; do
    [ -f "$f" ] && cp "$f" fuzz/corpus/config_parser/
done

status=0
for target in record_reader config_parser; do
    echo "== $target: ${secs}s"
    # -rss_limit_mb bounds memory; a crash or leak makes cargo fuzz exit non-zero.
    if ! cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -print_final_stats=1; then
        echo "== $target: FAILED (see fuzz/artifacts/$target)" >&2
        status=1
    fi
done
exit "$status"
