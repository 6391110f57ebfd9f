#!/usr/bin/env bash
# Writes the ABI of a public header (via a stub library built from it) as an abidw XML file.
# usage: dump_abi.sh HEADER OUT.abi
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
header="$1"
out="$2"
include_dir="$(cd "$(dirname "$header")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 "$here/header_stub.py" "$header" "$work/stub.c"
cc -std=c99 -Wall -Wextra -Werror -g -O0 -shared -fPIC -I"$include_dir" -Wl,-soname,libolm.so.0 \
  -o "$work/libolm.so.0" "$work/stub.c"
abidw --headers-dir "$include_dir" --no-corpus-path --no-comp-dir-path --out-file "$out" "$work/libolm.so.0"
