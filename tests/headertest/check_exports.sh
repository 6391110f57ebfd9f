#!/usr/bin/env bash
# The library exports exactly the functions olm.h declares (all olm_*) and nothing else, and
# its SONAME is libolm.so.<major>.
# usage: check_exports.sh LIBRARY HEADER
set -euo pipefail
lib="$1"
header="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | sort -u > "$work/exported"
# The version script's node name (OLM_0) is an absolute symbol, not code.
grep -v '^OLM_0$' "$work/exported" > "$work/functions" || true
if grep -v '^olm_' "$work/functions"; then
  echo "exports: FAILED: symbols above are exported but are not olm_*" >&2
  exit 1
fi
python3 "$here/../abi/header_stub.py" "$header" "$work/stub.c" >/dev/null
grep -oE '\bolm_[a-z0-9_]+\)?\(' "$work/stub.c" | tr -d '()' | sort -u > "$work/declared"
if ! diff -u "$work/declared" "$work/functions"; then
  echo "exports: FAILED: exported functions differ from those olm.h declares (- declared, + exported)" >&2
  exit 1
fi
soname="$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
major="$(sed -n 's/#define OLM_VERSION_MAJOR \([0-9]*\)/\1/p' "$header")"
if [ "$soname" != "libolm.so.$major" ]; then
  echo "exports: FAILED: SONAME is '$soname', expected libolm.so.$major" >&2
  exit 1
fi
echo "exports: $(wc -l < "$work/functions") olm_* functions, nothing else; SONAME $soname"
