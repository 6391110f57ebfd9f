#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/*.cpp) for N seconds each (default 20) over its committed
# seed corpus fuzz/corpus/<target>/, after building them (scripts/sanitize.sh build).
#   scripts/fuzz.sh [seconds]
#   OLM_FUZZ_RUNS=1000000 scripts/fuzz.sh      a fixed number of executions instead of a time
#                                             (with [seconds] too: whichever comes first)
#   OLM_FUZZ_TARGETS="npy safetensors"        a subset
#   OLM_FUZZ_SEED=1                           libFuzzer's -seed (default 0: a new one each run);
#                                             the test command fixes it so a CI run replays
#   OLM_FUZZ_JOBS=4                           targets run in parallel (default 1)
#   OLM_FUZZ_BUILD=0                          use build-sanitize/ as it is
#   OLM_FUZZ_TIMEOUT=25                       seconds one input may take (raise on a loaded machine)
# New inputs found go to build-sanitize/fuzz-work/<target>/ (the committed corpus is only read);
# a crash or a failed property leaves build-sanitize/fuzz-artifacts/<target>-crash-* and fails
# the script, printing the line that replays it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-20}"
[ "${OLM_FUZZ_BUILD:-1}" = 0 ] || "$root/scripts/sanitize.sh" build
source "$root/scripts/sanitize/env.sh"
build="$root/build-sanitize"
targets="${OLM_FUZZ_TARGETS:-config_json config_flatbuffer train_config_json train_config_flatbuffer safetensors checkpoint npy token_file tokenizer_json sentencepiece_model}"
jobs="${OLM_FUZZ_JOBS:-1}"
mkdir -p "$build/fuzz-work" "$build/fuzz-artifacts" "$build/fuzz-logs"
export OLM_FUZZ_TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/olm-fuzz.XXXXXX")"
trap 'rm -rf "$OLM_FUZZ_TMPDIR"' EXIT
if [ -n "${OLM_FUZZ_RUNS:-}" ]; then
  limit=(-runs="$OLM_FUZZ_RUNS"); what="$OLM_FUZZ_RUNS runs"
  # With an explicit time as well, whichever comes first.
  if [ -n "${1:-}" ]; then limit+=(-max_total_time="$seconds"); what="$what or ${seconds}s"; fi
else
  limit=(-max_total_time="$seconds"); what="${seconds}s"
fi

run_one() {
  local t="$1" log="$build/fuzz-logs/$1.log"
  mkdir -p "$build/fuzz-work/$t"
  local rc=0 seeds=()
  [ -d "$root/fuzz/corpus/$t" ] && seeds=("$root/fuzz/corpus/$t")
  # The checkpoint target writes seeds from its own fixture (current formats) into its work dir.
  OLM_FUZZ_WRITE_SEEDS="$build/fuzz-work/$t" \
  "$build/fuzz/fuzz_$t" "${limit[@]}" -seed="${OLM_FUZZ_SEED:-0}" -timeout="${OLM_FUZZ_TIMEOUT:-25}" -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-artifacts/$t-" "$build/fuzz-work/$t" "${seeds[@]}" >"$log" 2>&1 || rc=$?
  local execs; execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  local cov; cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)"
  if [ "$rc" -eq 0 ]; then
    printf '[fuzz] %-24s ok    %10s execs  %s\n' "$t" "${execs:-?}" "$cov"
  else
    printf '[fuzz] %-24s FAIL  (exit %s; log %s)\n' "$t" "$rc" "$log"
    grep -E 'olm fuzz:|ERROR: |runtime error|Test unit written' "$log" | head -5 | sed 's/^/[fuzz]   /'
    local a; a="$(grep -o "Test unit written to .*" "$log" | sed 's/Test unit written to //' | tail -1)"
    [ -n "$a" ] && echo "[fuzz]   replay: $build/fuzz/fuzz_$t $a"
    return 1
  fi
}

# Every committed finding replays first: each is a regression test of its fix.
failed=0
for f in "$root"/fuzz/findings/*; do
  [ -f "$f" ] || continue
  t="$(basename "$f")"; t="${t%%-*}"
  if "$build/fuzz/fuzz_$t" "$f" >"$build/fuzz-logs/finding-$(basename "$f").log" 2>&1; then
    echo "[fuzz] finding $(basename "$f"): fixed"
  else
    echo "[fuzz] finding $(basename "$f"): FAILS again (log $build/fuzz-logs/finding-$(basename "$f").log)"
    failed=1
  fi
done
echo "[fuzz] $what per target: $targets"
if [ "$jobs" -le 1 ]; then
  for t in $targets; do run_one "$t" || failed=1; done
else
  pids=()
  for t in $targets; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
    run_one "$t" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
fi
[ "$failed" -eq 0 ] && echo "[fuzz] ok" || { echo "[fuzz] failures above"; exit 1; }
