#!/usr/bin/env bash
# DDP's cost on CPU: the same global batch trained by one process and by torchrun with 2
# ranks (Gloo over loopback), reporting the median step time, the bytes each rank
# all-reduces per step and the time a step waits for gradients after backward.
# usage: benchmarks/dist_overhead.sh [BUILD_DIR] [STEPS]
set -euo pipefail
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
config() {  # config NAME
  cat > "$1.json" <<JSON
{"model": {"d_model": 256, "vocab_size": 264, "n_layers": 4,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 8, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 768, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": 128, "global_batch_size": 2048, "rank_microbatch_size": 512, "max_steps": $steps,
 "optimizer": {"name": "adamw", "lr": 0.001},
 "data": {"paths": ["train.bin"], "eos_token_id": 256}, "metrics_path": "$1.jsonl"}
JSON
}
# One intra-op thread per process everywhere (torchrun's default for several ranks), so one
# process uses one core and two ranks two.
config one && OMP_NUM_THREADS=1 "$olm" train --config one.json >one.out 2>&1
# The DDP machinery alone: a group of one (hooks, bucket copies, all-reduces of one rank).
config solo && OMP_NUM_THREADS=1 MASTER_PORT=$((20000 + RANDOM % 20000)) "$olm" train --dist on --config solo.json >solo.out 2>&1
config two && OMP_NUM_THREADS=1 timeout 600 "$torchrun" --standalone --nproc_per_node=2 --no-python \
  "$olm" train --config two.json >two.out 2>&1 || { cat two.out >&2; exit 1; }
echo "load average (other work on this machine skews the times): $(cut -d" " -f1-3 /proc/loadavg)"
python3 - one.jsonl two.jsonl solo.jsonl <<'PY'
import json, statistics, sys
def load(p): return [json.loads(l) for l in open(p) if '"loss"' in l]
one, two, solo = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
t1 = statistics.median(m["step_seconds"] for m in one[2:])
ts = statistics.median(m["step_seconds"] for m in solo[2:])
t2 = statistics.median(m["step_seconds"] for m in two[2:])
w2 = statistics.median(m.get("comm_wait_seconds", 0) for m in two[2:])
print(f"1 process : {t1 * 1e3:8.1f} ms/step (median of steps 3..{len(one)})")
print(f"group of 1: {ts * 1e3:8.1f} ms/step (DDP hooks, buckets and all-reduces with one rank)")
print(f"2 ranks   : {t2 * 1e3:8.1f} ms/step, {two[-1]['comm_bytes']} bytes all-reduced per rank per step, "
      f"{w2 * 1e3:.1f} ms/step waiting for gradients after backward")
print(f"2-rank step time / 1-process step time: {t2 / t1:.2f} (ideal 0.50: each rank computes half the batch)")
print(f"DDP overhead at world size 2: {(t2 - t1 / 2) * 1e3:.1f} ms/step over half the 1-process time")
print("max relative loss difference:", max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(one, two)))
PY
