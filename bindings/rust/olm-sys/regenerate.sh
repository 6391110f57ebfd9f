#!/usr/bin/env bash
# Regenerates src/bindings.rs from include/olm.h with Debian's bindgen CLI. The output is
# committed; check-bindings.sh fails when it is stale.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$here/src/bindings.rs}"
bindgen "$root/include/olm.h" \
  --allowlist-function 'olm_.*' --allowlist-type 'olm_.*' --allowlist-var 'OLM_.*' \
  --no-doc-comments --rust-target 1.47 --size_t-is-usize \
  -o "$out" -- -I"$root/include"
