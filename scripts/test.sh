#!/usr/bin/env bash
# The test command: installs what is missing, builds, then runs the C++/C API/parity suite
# (ctest), the Rust suite and the Go suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "[test] ctest"
ctest --test-dir "$root/build" --output-on-failure -j "${OLM_TEST_JOBS:-2}"
echo "[test] rust"
"$root/bindings/rust/test.sh"
echo "[test] go"
"$root/bindings/go/test.sh"
