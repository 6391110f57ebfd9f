#!/usr/bin/env bash
# Records the current header's ABI as the baseline. Run at a release, never to silence the check.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/dump_abi.sh" "$here/../../include/olm.h" "$here/libolm.abi"
python3 "$here/struct_layout.py" "$here/../../include/olm.h" > "$here/layout.txt"
echo "baseline written to $here/libolm.abi and $here/layout.txt"
