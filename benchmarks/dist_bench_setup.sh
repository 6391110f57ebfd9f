# Sourced by dist_overhead.sh and fsdp_overhead.sh with their arguments ([BUILD_DIR] [STEPS]):
# a scratch directory with train.bin (tokenized text), and
#   run NAME DATA_PARALLEL_JSON NPROC
# which trains the benchmark model (3.55M parameters, d_model 256, 4 blocks, sequence 128,
# global batch 2048 tokens in micro-batches of 512, AdamW) for STEPS steps with one intra-op
# thread per process: NPROC 0 without a process group, 1 as a group of one, else under
# torchrun; its metrics land in NAME.jsonl.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
steps="${2:-12}"
olm="$build/bin/olm"
torchrun="${TORCHRUN:-$HOME/.cache/olm/venv/bin/torchrun}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
for i in $(seq 400); do printf 'Line %d of some text to train on, with a little variety %d.\n%%\n' "$i" "$((i * i))"; done > a.txt
"$olm" tokenize --fortunes --output train.bin a.txt >/dev/null
config() {  # config NAME DATA_PARALLEL_JSON
  cat > "$1.json" <<JSON
{"model": {"d_model": 256, "vocab_size": 264, "n_layers": 4,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 8, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 768, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": 128, "global_batch_size": 2048, "rank_microbatch_size": 512, "max_steps": $steps,
 "optimizer": {"name": "adamw", "lr": 0.001}, "data_parallel": $2,
 "data": {"paths": ["train.bin"], "eos_token_id": 256}, "metrics_path": "$1.jsonl"}
JSON
}
run() {  # run NAME DATA_PARALLEL_JSON NPROC
  config "$1" "$2"
  if [ "$3" = 0 ]; then
    OMP_NUM_THREADS=1 "$olm" train --config "$1.json" >"$1.out" 2>&1
  elif [ "$3" = 1 ]; then
    OMP_NUM_THREADS=1 MASTER_PORT=$((20000 + RANDOM % 20000)) "$olm" train --dist on --config "$1.json" >"$1.out" 2>&1
  else
    OMP_NUM_THREADS=1 timeout 900 "$torchrun" --standalone --nproc_per_node="$3" --no-python \
      "$olm" train --config "$1.json" >"$1.out" 2>&1
  fi || { cat "$1.out" >&2; exit 1; }
}
