#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer: configures (once) build-sanitize/ with clang
# and -DOLM_SANITIZE=ON, builds the C API tests, the C example and the libFuzzer targets, then
# runs the C API tests and the C example under the sanitizers.
#   scripts/sanitize.sh            build, then run the C API tests and the C example
#   scripts/sanitize.sh build      build only (scripts/fuzz.sh calls this)
# OLM_SANITIZE_FILTER: a gtest filter for a subset of the C API tests (default: all).
# LibTorch is not instrumented: its own allocations are still seen by ASan (malloc/new are
# intercepted), and the leaks it keeps on purpose (static registries, thread pools) are
# suppressed by scripts/sanitize/lsan.supp rather than by turning leak detection off.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/sanitize/env.sh"
OLM_HOME="${OLM_HOME:-$HOME/.cache/olm}"
python="$OLM_HOME/venv/bin/python"
export CCACHE_DIR="${CCACHE_DIR:-$OLM_HOME/ccache}"
# Paths inside the checkout are hashed relative to it, so a fresh clone elsewhere (CI) reuses
# the cache of this one.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
# RelWithDebInfo: -g would put the checkout's path into the hash; the debug info keeps paths
# relative to the checkout instead.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
jobs="${OLM_BUILD_JOBS:-$(nproc)}"
build="$root/build-sanitize"
cc="${OLM_SANITIZE_CC:-$(command -v clang-14 || command -v clang)}"
cxx="${OLM_SANITIZE_CXX:-$(command -v clang++-14 || command -v clang++)}"
[ -x "$cc" ] && [ -x "$cxx" ] || { echo "[sanitize] clang not found (apt-get install clang-14 libclang-rt-14-dev libfuzzer-14-dev)" >&2; exit 1; }

if [ ! -f "$build/build.ninja" ]; then
  echo "[sanitize] configuring build-sanitize/ ($cxx)"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
    -DOLM_SANITIZE=ON -DOLM_CUDA=OFF -DOLM_PYTHON="$python" >/dev/null
fi
t0=$(date +%s)
echo "[sanitize] building (ninja -j$jobs): olm_capi_tests olm_example_c olm_fuzz"
cmake --build "$build" -j "$jobs" --target olm_capi_tests olm_example_c olm_fuzz
echo "[sanitize] build took $(( $(date +%s) - t0 ))s"
[ "${1:-}" = build ] && exit 0

# Every C API test fits the budget (27 tests in 12 s under ASan+UBSan on a loaded 2-core
# machine); OLM_SANITIZE_FILTER narrows it (a gtest filter).
filter="${OLM_SANITIZE_FILTER:-*}"
t0=$(date +%s)
echo "[sanitize] olm_capi_tests --gtest_filter=$filter"
( cd "$build/tests" && OLM_TEST_TMPDIR="$build/tests" ./olm_capi_tests --gtest_filter="$filter" --gtest_brief=1 )
echo "[sanitize] olm_example_c"
out="$("$build/examples/olm_example_c" "$root/examples/c/tiny_olmo2.json")"
echo "$out" | tail -3
echo "$out" | grep -Eq "loss [0-9.]+ = ce" || { echo "[sanitize] olm_example_c: unexpected output" >&2; exit 1; }
echo "[sanitize] ok: no ASan/UBSan reports ($(( $(date +%s) - t0 ))s)"
