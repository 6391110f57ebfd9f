#!/usr/bin/env bash
# The core's layers: a file may include ("core/...") only its own layer's unit or a lower
# layer's, never a higher one's or a peer's, and the units' include graph has no cycle. A unit is
# a folder under core/ (core/io/...) or a top-level file's stem (core/model.h, core/model.cpp:
# "model"). Fails naming each offending file and include.
#
# The layer order, lowest first; units on one line are peers (neither includes the other).
# Adding a folder under core/ means adding it here.
LAYERS='
error pch
device cpu_allocator
io
tokenizer config
nn
model
convert generate
data
distributed
train
checkpoint
run
'
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$root"

declare -A rank
r=0
while read -r line; do
  [ -z "$line" ] && continue
  for unit in $line; do rank[$unit]=$r; done
  r=$((r + 1))
done <<<"$LAYERS"

unit_of() {  # core/io/json.h -> io; core/model.cpp -> model
  local rest="${1#core/}"
  if [[ "$rest" == */* ]]; then echo "${rest%%/*}"; else echo "${rest%%.*}"; fi
}

status=0
edges=""
files=$(find core -type f \( -name '*.h' -o -name '*.cpp' \) | sort)
[ -n "$files" ] || { echo "layering: no sources under $root/core" >&2; exit 1; }
for f in $files; do
  from=$(unit_of "$f")
  if [ -z "${rank[$from]+x}" ]; then
    echo "layering: $f: unit '$from' is not in the layer order (tests/layering_test.sh)" >&2
    status=1
    continue
  fi
  while IFS= read -r inc; do
    [ -z "$inc" ] && continue
    to=$(unit_of "$inc")
    [ "$to" = "$from" ] && continue
    if [ -z "${rank[$to]+x}" ]; then
      echo "layering: $f includes \"$inc\": unit '$to' is not in the layer order" >&2
      status=1
      continue
    fi
    edges+="$from $to"$'\n'
    if [ "${rank[$to]}" -ge "${rank[$from]}" ]; then
      kind=$([ "${rank[$to]}" -eq "${rank[$from]}" ] && echo "a peer" || echo "a higher")
      echo "layering: $f includes \"$inc\": $kind layer ($from includes $to)" >&2
      status=1
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\(core\/[^"]*\)".*/\1/p' "$f")
done

# Cycles between units (the order above rules them out; this names one should the order not).
if [ -n "$edges" ] && ! sort -u <<<"$edges" | tsort >/dev/null 2>"${TMPDIR:-/tmp}/layering_tsort.$$"; then
  echo "layering: the units' includes form a cycle:" >&2
  grep -v '^tsort: -: input contains a loop:' "${TMPDIR:-/tmp}/layering_tsort.$$" | sed 's/^tsort: /  /' >&2
  status=1
fi
rm -f "${TMPDIR:-/tmp}/layering_tsort.$$"

[ "$status" -eq 0 ] && echo "layering: ok ($(wc -w <<<"$files") files)"
exit "$status"
