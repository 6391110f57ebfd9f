#!/usr/bin/env bash
# Configures (once) and builds olm into build/ with ccache and precompiled headers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OLM_HOME="${OLM_HOME:-$HOME/.cache/olm}"
python="$OLM_HOME/venv/bin/python"
export PATH="/usr/local/cuda/bin:$PATH"
export CCACHE_DIR="${CCACHE_DIR:-$OLM_HOME/ccache}"
jobs="${OLM_BUILD_JOBS:-$(nproc)}"
if [ ! -f "$root/build/build.ninja" ]; then
  echo "[build] configuring build/"
  cmake -S "$root" -B "$root/build" -G Ninja -DOLM_PYTHON="$python" >/dev/null
fi
echo "[build] building (ninja -j$jobs)"
cmake --build "$root/build" -j "$jobs"
