#!/usr/bin/env bash
# cmake/libolm0.symbols (Debian's dpkg-gensymbols format: every exported olm_* symbol and the
# version that introduced it) matches the library exactly: dpkg-gensymbols -c4 fails on a
# symbol exported but not listed, listed but not exported, or a changed version node. When you
# add a function to olm.h, add "<name>@OLM_0 <project version>" to the symbols file.
# usage: check_symbols.sh LIBRARY SYMBOLS_FILE VERSION
set -euo pipefail
lib="$(readlink -f "$1")"; symbols="$(readlink -f "$2")"; version="$3"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# Independent of dpkg-gensymbols: the olm_* names alone, both ways.
nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@@/@/; s/^OLM_0$/OLM_0@OLM_0/' | sort -u > exported
sed -n 's/^ \([^ ]*\) .*/\1/p' "$symbols" | sort -u > listed
if ! diff -u listed exported; then
  echo "symbols: FAILED: $symbols and the exports of $lib differ (- listed only, + exported only)" >&2
  exit 1
fi
if command -v dpkg-gensymbols >/dev/null; then
  dpkg-gensymbols -plibolm0 -v"$version" -e"$lib" -I"$symbols" -O"$work/generated" -c4 >/dev/null || {
    echo "symbols: FAILED: dpkg-gensymbols -c4 (diff above)" >&2; exit 1; }
fi
echo "symbols: $(grep -c '^ olm_' "$symbols") olm_* symbols listed, all exported, nothing else exported"
