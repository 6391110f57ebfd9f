#!/usr/bin/env bash
# Fails when regenerating the bindings would change the committed src/bindings.rs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
"$here/regenerate.sh" "$tmp"
if ! diff -u "$here/src/bindings.rs" "$tmp"; then
  echo "olm-sys: src/bindings.rs is stale; run bindings/rust/olm-sys/regenerate.sh" >&2
  exit 1
fi
echo "olm-sys: bindings are up to date"
