#!/usr/bin/env bash
# Tensor and context parallelism on CPU (Gloo over loopback, torchrun), against one process
# training the same global batches: the model of dist_overhead.sh (d_model 256, 4 blocks of 8
# heads, vocabulary 264) on sequences of 512 tokens, 2048 tokens per step in micro-batches of
# 1024, AdamW. Layouts: one process, TP 2, TP 4, CP 2 and 4 (ring, zig-zag), CP 2 Ulysses,
# FSDP 2 x TP 2, FSDP 2 x CP 2. The layouts run ROUNDS times in turn (one, tp2, ..., one,
# tp2, ...), so a load change hits all of them alike. Reports per layout the median step time
# over the rounds' steps after the first two (with min..max of the rounds' medians) as a ratio
# to one process, the bytes rank 0 sends per step (its side of every collective and
# point-to-point exchange), its parameter bytes, and the peak resident memory of its ranks
# (max over the ranks, /usr/bin/time's maxrss: model, optimizer, activations and LibTorch).
# Then activation memory alone: each layout's peak RSS trained on sequences of 2048 tokens
# minus its peak RSS on sequences of 128 (the same model, optimizer and LibTorch; 2 steps of 2
# micro-batches of one sequence each), as a ratio to one process's.
# One intra-op thread per rank; on this 2-core machine 4 ranks share 2 cores, so 4-rank
# step times measure contention as much as communication.
# usage: benchmarks/mesh_overhead.sh [BUILD_DIR] [STEPS] [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
steps="${2:-6}"
rounds="${3:-2}"
olm="$build/bin/olm"
torchrun="${TORCHRUN:-$HOME/.cache/olm/venv/bin/torchrun}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
for i in $(seq 2000); do printf 'Line %d of some text to train on, with a little variety %d.\n%%\n' "$i" "$((i * i))"; done > a.txt
"$olm" tokenize --fortunes --output train.bin a.txt >/dev/null
config() {  # config NAME EXTRA_JSON [SEQUENCE_LENGTH GLOBAL_BATCH MICRO_BATCH STEPS]
  local seq="${3:-512}" global="${4:-2048}" micro="${5:-1024}" n="${6:-$steps}"
  cat > "$1.json" <<JSON
{"model": {"d_model": 256, "vocab_size": 264, "n_layers": 4,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 8, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 768, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": $seq, "global_batch_size": $global, "rank_microbatch_size": $micro, "max_steps": $n,
 "optimizer": {"name": "adamw", "lr": 0.001}$2,
 "data": {"paths": ["train.bin"], "eos_token_id": 256}, "metrics_path": "$1.jsonl"}
JSON
}
run() {  # run NAME NPROC EXTRA_JSON ROUND [SEQUENCE_LENGTH GLOBAL_BATCH MICRO_BATCH STEPS]
  config "$1.$4" "$3" "${5:-512}" "${6:-2048}" "${7:-1024}" "${8:-$steps}"
  if [ "$2" = 0 ]; then
    OMP_NUM_THREADS=1 /usr/bin/time -a -o "$1.$4.rss" -f "%M" "$olm" train --config "$1.$4.json" >"$1.$4.out" 2>&1
  else
    OMP_NUM_THREADS=1 timeout 1200 "$torchrun" --standalone --nproc_per_node="$2" --no-python \
      /usr/bin/time -a -o "$1.$4.rss" -f "%M" "$olm" train --config "$1.$4.json" >"$1.$4.out" 2>&1
  fi || { cat "$1.$4.out" >&2; exit 1; }
}
layouts=(one tp2 tp4 cp2 cp4 uly2 fsdp2_tp2 fsdp2_cp2)
for r in $(seq "$rounds"); do
  run one 0 "" "$r"
  run tp2 2 ', "tensor_parallel": {"degree": 2}' "$r"
  run tp4 4 ', "tensor_parallel": {"degree": 4}' "$r"
  run cp2 2 ', "context_parallel": {"degree": 2, "ring": {}}' "$r"
  run cp4 4 ', "context_parallel": {"degree": 4, "ring": {}}' "$r"
  run uly2 2 ', "context_parallel": {"degree": 2, "uly": {}}' "$r"
  run fsdp2_tp2 4 ', "data_parallel": {"name": "fsdp"}, "tensor_parallel": {"degree": 2}' "$r"
  run fsdp2_cp2 4 ', "data_parallel": {"name": "fsdp"}, "context_parallel": {"degree": 2, "ring": {}}' "$r"
done
memory_layouts=(one tp2 tp4 cp2 cp4 uly2)
for seq in 128 2048; do
  run one 0 "" "mem$seq" "$seq" $((2 * seq)) "$seq" 2
  run tp2 2 ', "tensor_parallel": {"degree": 2}' "mem$seq" "$seq" $((2 * seq)) "$seq" 2
  run tp4 4 ', "tensor_parallel": {"degree": 4}' "mem$seq" "$seq" $((2 * seq)) "$seq" 2
  run cp2 2 ', "context_parallel": {"degree": 2, "ring": {}}' "mem$seq" "$seq" $((2 * seq)) "$seq" 2
  run cp4 4 ', "context_parallel": {"degree": 4, "ring": {}}' "mem$seq" "$seq" $((2 * seq)) "$seq" 2
  run uly2 2 ', "context_parallel": {"degree": 2, "uly": {}}' "mem$seq" "$seq" $((2 * seq)) "$seq" 2
done
echo "load average (other work on this machine skews the times): $(cut -d" " -f1-3 /proc/loadavg)"
python3 - "$rounds" "${layouts[@]}" <<'PY'
import json, statistics, sys
rounds, layouts = int(sys.argv[1]), sys.argv[2:]
def load(n, r): return [json.loads(l) for l in open(f"{n}.{r}.jsonl") if '"loss"' in l]
def rss(n, r): return max(int(x) for x in open(f"{n}.{r}.rss").read().split())
per_round = {n: [statistics.median(m["step_seconds"] for m in load(n, r)[2:]) for r in range(1, rounds + 1)]
             for n in layouts}
t1 = statistics.median(per_round["one"])
ref = load("one", 1)
print(f"{'layout':10} {'ms/step':>8} {'x 1 process (min..max)':>24} {'bytes/step rank 0':>18} "
      f"{'peak RSS MiB':>12} {'x 1 process':>11}  max rel. loss diff")
r1 = statistics.median(rss("one", r) for r in range(1, rounds + 1))
for n in layouts:
    t = statistics.median(per_round[n])
    lo, hi = min(per_round[n]) / t1, max(per_round[n]) / t1
    m = load(n, 1)
    d = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ref, m))
    mem = statistics.median(rss(n, r) for r in range(1, rounds + 1))
    print(f"{n:10} {t * 1e3:8.1f} {t / t1:9.2f} ({lo:.2f}..{hi:.2f})      {m[-1].get('comm_bytes', 0):18d} "
          f"{mem / 1024:12.1f} {mem / r1:11.2f}  {d:.1e}")
PY
python3 - one tp2 tp4 cp2 cp4 uly2 <<'PY'
import sys
def rss(n, tag): return max(int(x) for x in open(f"{n}.{tag}.rss").read().split())
base = rss("one", "mem2048") - rss("one", "mem128")
print(f"\nactivation memory per rank, sequences of 2048 tokens (peak RSS at 2048 minus at 128):")
print(f"{'layout':10} {'MiB':>8} {'x 1 process':>11}")
for n in sys.argv[1:]:
    a = rss(n, "mem2048") - rss(n, "mem128")
    print(f"{n:10} {a / 1024:8.1f} {a / base:11.2f}")
PY
