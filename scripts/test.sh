#!/usr/bin/env bash
# The test command: installs what is missing, builds, then runs the C++/C API/parity suite
# (ctest), the Rust suite, the Go suite, the fuzz targets and the sanitizer run. Every suite
# runs even when an earlier one failed; the command fails at the end if any did, after a
# one-line summary of each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
# The CPU-only library and CLI too (build/cpu-only), so the packaging tests check a build that
# links no CUDA library and package it (OLM_BUILD_CPU_ONLY=0 skips them).
OLM_BUILD_CPU_ONLY="${OLM_BUILD_CPU_ONLY:-1}" "$root/scripts/build.sh"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

summary=()
failed=0
# run NAME COMMAND...: runs one suite, records "NAME: passed|FAILED (exit N) in Ss".
run() {
  local name=$1 start=$SECONDS status=0
  shift
  echo "[test] $name"
  "$@" || status=$?
  if ((status == 0)); then
    summary+=("$name: passed in $((SECONDS - start)) s")
  else
    summary+=("$name: FAILED (exit $status) in $((SECONDS - start)) s")
    failed=$((failed + 1))
  fi
}

run ctest ctest --test-dir "$root/build" --output-on-failure -j "${OLM_TEST_JOBS:-2}"
run rust "$root/bindings/rust/test.sh"
run go "$root/bindings/go/test.sh"
# Every libFuzzer target for OLM_FUZZ_SECONDS (default 20) after replaying the committed
# findings, with a fixed seed so that a failure replays (scripts/fuzz.sh alone explores with a
# new seed each run), then the C API tests and the C example under ASan + UBSan.
OLM_FUZZ_SEED="${OLM_FUZZ_SEED:-1}" run fuzz "$root/scripts/fuzz.sh" "${OLM_FUZZ_SECONDS:-20}"
run sanitize "$root/scripts/sanitize.sh"

echo "[test] summary"
for line in "${summary[@]}"; do echo "[test]   $line"; done
if ((failed)); then
  echo "[test] $failed of ${#summary[@]} suites failed"
  exit 1
fi
echo "[test] all ${#summary[@]} suites passed"
