#!/usr/bin/env bash
# Observer load benchmark: a synthetic root of 1,000 finished and 100 active tasks (one with a
# 1 GiB log), served on loopback; wrk measures /main, /j/task_ids and /logdata tails, then the
# observer's idle CPU is measured. Needs wrk (apt-get install wrk).
# Env: OBSERVER_BENCH_SECS (each wrk run, default 10), OBSERVER_BENCH_IDLE_SECS (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is missing: apt-get install wrk" >&2
  exit 1
fi
exec cargo bench -p hearth-observer --bench load "$@"
