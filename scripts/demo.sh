#!/usr/bin/env bash
# The demo: byte-level tokenize a public-domain English corpus from a Debian package (the
# `fortunes` collection), train a small OLMo-2-style model on the CPU for about two minutes
# with a live progress bar, save a checkpoint, and sample from it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
olm="$root/build/bin/olm"
work="${OLM_DEMO_DIR:-$root/build/demo}"
mkdir -p "$work/demo-data"
cd "$work"
corpus=/usr/share/games/fortunes
if [ ! -s demo-data/train.bin ]; then
  echo "[demo] tokenizing $corpus (bytes, one document per fortune)"
  # Hold out one collection for validation; train on the rest.
  files=()
  for f in "$corpus"/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && [ "$(basename "$f")" != "riddles" ] && files+=("$f")
  done
  "$olm" tokenize --fortunes --eos 256 --output demo-data/train.bin "${files[@]}"
  "$olm" tokenize --fortunes --eos 256 --output demo-data/val.bin "$corpus/riddles"
fi
rm -rf demo-runs
# A train config's relative paths are its own directory's: the demo's copy sits next to its data
# (and then trains the same from any directory: olm train --config build/demo/train.json).
cp "$root/examples/demo/train.json" train.json
echo "[demo] training (Ctrl-C saves a checkpoint and stops)"
"$olm" train --config train.json
echo "[demo] sampling from the checkpoint"
"$olm" generate --checkpoint demo-runs/fortunes --prompt "The meaning of life is " \
  --max-new-tokens 200 --temperature 0.8 --top-k 40 --seed 7 --stop 256
