#!/usr/bin/env bash
# Configures (once) and builds olm into build/ with ccache and precompiled headers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OLM_HOME="${OLM_HOME:-$HOME/.cache/olm}"
python="$OLM_HOME/venv/bin/python"
export PATH="/usr/local/cuda/bin:$PATH"
export CCACHE_DIR="${CCACHE_DIR:-$OLM_HOME/ccache}"
# Paths inside the checkout are hashed relative to it, so a fresh clone elsewhere (CI) reuses
# the cache of this one.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
jobs="${OLM_BUILD_JOBS:-$(nproc)}"
if [ ! -f "$root/build/build.ninja" ]; then
  echo "[build] configuring build/"
  cmake -S "$root" -B "$root/build" -G Ninja -DOLM_PYTHON="$python" >/dev/null
fi
echo "[build] building (ninja -j$jobs)"
cmake --build "$root/build" -j "$jobs"

# OLM_BUILD_CPU_ONLY=1: also the CPU-only library and CLI (-DOLM_CUDA=OFF) in build/cpu-only,
# which the packaging tests check (no CUDA library linked) and package (.deb). Its first build
# compiles the core again; ccache makes later ones quick.
if [ "${OLM_BUILD_CPU_ONLY:-0}" = 1 ]; then
  torch_root="$(sed -n 's/^OLM_TORCH_ROOT:PATH=//p' "$root/build/CMakeCache.txt")"
  if [ ! -f "$root/build/cpu-only/build.ninja" ]; then
    echo "[build] configuring build/cpu-only (OLM_CUDA=OFF)"
    cmake -S "$root" -B "$root/build/cpu-only" -G Ninja -DOLM_TORCH_ROOT="$torch_root" -DOLM_CUDA=OFF \
      -DOLM_BUILD_TESTS=OFF -DOLM_BUILD_EXAMPLES=OFF >/dev/null
  fi
  echo "[build] building build/cpu-only: olm olm_cli (ninja -j$jobs)"
  cmake --build "$root/build/cpu-only" --target olm olm_cli -j "$jobs"
fi
