#!/usr/bin/env bash
# The Rust suite: the committed bindings are current, the crates' tests pass, the example runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export PKG_CONFIG_PATH="$root/build${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export CARGO_TARGET_DIR="$root/bindings/rust/target"
"$root/bindings/rust/olm-sys/check-bindings.sh"
cd "$root/bindings/rust"
cargo test --offline --workspace
cd "$root/examples/rust"
cargo run --offline --quiet
