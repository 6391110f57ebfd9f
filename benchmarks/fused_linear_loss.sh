#!/usr/bin/env bash
# Peak memory and step time of the "default" and "fused_linear" loss implementations at a
# 100k vocabulary: the same olmo2_30M-shaped model and batches through `olm bench`, each in its
# own process (peak RSS is per process), in one invocation.
# usage: benchmarks/fused_linear_loss.sh [OLM_BINARY] [BATCH] [SEQ_LEN]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
olm="${1:-$root/build/bin/olm}"
batch="${2:-8}"
seq="${3:-256}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for impl in default fused_linear; do
  cat > "$work/$impl.json" <<JSON
{"d_model": 256, "vocab_size": 100278, "n_layers": 4,
 "block": {"name": "reordered_norm",
   "attention": {"n_heads": 8, "bias": false, "rope": {"theta": 500000},
                 "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false},
   "feed_forward": {"hidden_size": 768, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false,
             "loss_implementation": "$impl"}}
JSON
  printf '%-13s ' "$impl"
  "$olm" bench --config "$work/$impl.json" --batch "$batch" --seq-len "$seq" --steps 3 --warmup 1 \
    --losses "$work/$impl.losses"
done
echo "losses (default | fused_linear):"
paste "$work/default.losses" "$work/fused_linear.losses"
