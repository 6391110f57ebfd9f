#!/usr/bin/env bash
# The CPU-only build (-DOLM_CUDA=OFF) in a second build directory, BUILD_DIR/cpu-only, of just
# the library and the CLI (the whole project would compile every test again): it links no
# CUDA library (tests/install/linkage_test.sh cpu), and its prefix installs and runs on its own
# (tests/install/install_test.sh). Its first build compiles the core again (ccache makes later
# ones quick), so it runs only where the directory exists: scripts/build.sh creates it when
# OLM_BUILD_CPU_ONLY=1. Exit 77 (skipped) otherwise.
# usage: cpu_build_test.sh BUILD_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cpu="$build/cpu-only"
if [ ! -f "$cpu/build.ninja" ] && [ ! -f "$cpu/Makefile" ]; then
  echo "cpu-only: SKIPPED: $cpu is not configured (OLM_BUILD_CPU_ONLY=1 ./scripts/build.sh makes it)"
  exit 77
fi
grep -qE '^OLM_CUDA:[A-Z]+=OFF' "$cpu/CMakeCache.txt" || { echo "cpu-only: FAILED: $cpu is not OLM_CUDA=OFF" >&2; exit 1; }
cmake --build "$cpu" --target olm olm_cli > "$cpu/last_build.log" 2>&1 || {
  tail -30 "$cpu/last_build.log" >&2; echo "cpu-only: FAILED: build" >&2; exit 1; }
"$here/linkage_test.sh" "$cpu/libolm.so" cpu
readelf -d "$cpu/bin/olm" | grep -E 'NEEDED.*\[lib(cuda|cudart|torch_cuda|c10_cuda|nccl)' && {
  echo "cpu-only: FAILED: bin/olm NEEDs CUDA libraries" >&2; exit 1; }
"$here/install_test.sh" "$cpu"
