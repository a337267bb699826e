#!/usr/bin/env bash
# Runs the fidelity suite (`cargo test -p cachelock-conformance --test fidelity`) N times
# in a row (default 20), stopping at the first failure. Prints each run's wall time and
# the total. The test binary is built once, before the first timed run.
#
#   conformance/scripts/fidelity-loop.sh [N]
#
# Exit code: 0 when all N runs passed, else the failing run's cargo exit code.
set -u
n="${1:-20}"
case "$n" in
  '' | *[!0-9]*) echo "usage: $0 [N]   (N: a number of runs, default 20)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.." || exit 2
jobs="${CARGO_BUILD_JOBS:-2}"
echo "fidelity-loop: building the fidelity test (and the cachelock binary it plays)"
cargo build -j"$jobs" -p cachelock --bins >/dev/null 2>&1 || {
  cargo build -j"$jobs" -p cachelock --bins; exit $?; }
cargo test -j"$jobs" -p cachelock-conformance --test fidelity --no-run >/dev/null 2>&1 || {
  cargo test -j"$jobs" -p cachelock-conformance --test fidelity --no-run; exit $?; }
log="$(mktemp -t fidelity-loop.XXXXXX)"
total_start=$(date +%s.%N)
for i in $(seq 1 "$n"); do
  start=$(date +%s.%N)
  cargo test -j"$jobs" -p cachelock-conformance --test fidelity >"$log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -ne 0 ]; then
    echo "run $i/$n: FAILED after ${secs}s (exit $rc); its output:"
    cat "$log"
    total=$(awk -v a="$total_start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    echo "fidelity-loop: $((i - 1)) of $n runs passed before the failure; total ${total}s"
    rm -f "$log"
    exit "$rc"
  fi
  echo "run $i/$n: passed in ${secs}s"
done
rm -f "$log"
end=$(date +%s.%N)
total=$(awk -v a="$total_start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "fidelity-loop: all $n runs passed; total ${total}s"
