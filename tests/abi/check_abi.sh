#!/usr/bin/env bash
# Compares the ABI of include/olm.h with the committed baseline (tests/abi/libolm.abi).
# A stub library with every declared function is built from the header with debug info, so
# the comparison sees exactly the public ABI. Removed or changed functions, variables and
# struct layouts fail; added functions and fields appended to option/result structs (see
# olm.abignore) pass.
# usage: check_abi.sh [HEADER] [BASELINE]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
header="${1:-$root/include/olm.h}"
baseline="${2:-$here/libolm.abi}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$here/dump_abi.sh" "$header" "$work/current.abi" >/dev/null
set +e
abidiff --suppressions "$here/olm.abignore" --no-show-locs "$baseline" "$work/current.abi" > "$work/report.txt"
rc=$?
set -e
cat "$work/report.txt"
# abidiff's exit status is a bit mask: 1 error, 2 usage, 4 ABI change, 8 incompatible change.
if (( rc & 3 )); then
  echo "abi: abidiff failed (status $rc)" >&2
  exit 1
fi
removed_or_changed=$({ grep -E "^(Functions|Variables) changes summary:" "$work/report.txt" || true; } |
  sed -E 's/.*summary: ([0-9]+) Removed(.*), ([0-9]+) Changed.*/\1 \3/' | awk '{s += $1 + $2} END {print s + 0}')
if (( rc & 8 )) || (( removed_or_changed > 0 )); then
  echo "abi: FAILED: an existing symbol or type layout was removed or changed (see the report above)" >&2
  exit 1
fi
# Field offsets and sizes: every field of the baseline keeps its place; structs only grow.
python3 "$here/struct_layout.py" "$header" > "$work/layout.txt"
layout_ok=1
while read -r line; do
  case "$line" in
    *.*" offset="*)
      grep -qxF "$line" "$work/layout.txt" || { echo "abi: field layout changed or removed: $line" >&2; layout_ok=0; } ;;
    *" size="*)
      name="${line%% *}"; old="${line##*=}"
      new="$(grep -E "^$name size=" "$work/layout.txt" | sed 's/.*=//')"
      if [ -z "$new" ] || (( new < old )); then echo "abi: struct $name removed or shrunk ($old -> ${new:-none})" >&2; layout_ok=0; fi ;;
  esac
done < "${baseline%/*}/layout.txt"
if (( ! layout_ok )); then
  echo "abi: FAILED: a public struct's layout changed" >&2
  exit 1
fi
echo "abi: compatible with the baseline (additions only)"
