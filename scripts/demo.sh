#!/usr/bin/env bash
# The demo: train a small SentencePiece BPE tokenizer (Debian's spm_train) on a public-domain
# English corpus from a Debian package (the `fortunes` collection), tokenize the corpus with it,
# train a small OLMo-2-style model on the CPU for about two minutes with a live progress bar,
# save a checkpoint, and sample text from it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
olm="$root/build/bin/olm"
work="${OLM_DEMO_DIR:-$root/build/demo}"
mkdir -p "$work/demo-data"
cd "$work"
corpus=/usr/share/games/fortunes
# The token files belong to the tokenizer: both are made together (a train.bin from an older,
# byte-level demo is replaced).
if [ ! -s demo-data/tokenizer.model ] || [ ! -s demo-data/train.bin ] || [ ! -s demo-data/val.bin ]; then
  # Hold out one collection for validation; train on the rest.
  files=()
  for f in "$corpus"/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && [ "$(basename "$f")" != "riddles" ] && files+=("$f")
  done
  echo "[demo] training a 1024-token SentencePiece BPE tokenizer on $corpus"
  # No BOS (the model sees documents separated by EOS only, id 1); byte fallback and an identity
  # normalizer make it lossless.
  (IFS=,; spm_train --input="${files[*]}" --model_prefix=demo-data/tokenizer --vocab_size=1024 \
    --model_type=bpe --byte_fallback=true --normalization_rule_name=identity --remove_extra_whitespaces=false \
    --bos_id=-1 --eos_id=1 --unk_id=0 --minloglevel=2 >/dev/null 2>&1)
  echo "[demo] tokenizing $corpus (one document per fortune)"
  "$olm" tokenize --tokenizer demo-data/tokenizer.model --fortunes --add-eos --force --out demo-data/train.bin "${files[@]}"
  "$olm" tokenize --tokenizer demo-data/tokenizer.model --fortunes --add-eos --force --out demo-data/val.bin "$corpus/riddles"
fi
rm -rf demo-runs
# A train config's relative paths are its own directory's: the demo's copy sits next to its data
# (and then trains the same from any directory: olm train --config build/demo/train.json).
cp "$root/examples/demo/train.json" train.json
echo "[demo] training (Ctrl-C saves a checkpoint and stops)"
"$olm" train --config train.json
echo "[demo] sampling from the checkpoint"
"$olm" generate --checkpoint demo-runs/fortunes --tokenizer demo-data/tokenizer.model \
  --prompt "The meaning of life is" --max-new-tokens 80 --temperature 0.8 --top-k 40 --seed 7
