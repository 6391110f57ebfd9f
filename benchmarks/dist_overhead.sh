#!/usr/bin/env bash
# DDP's cost on CPU: the same global batch trained by one process and by torchrun with 2
# ranks (Gloo over loopback), reporting the median step time, the bytes each rank
# all-reduces per step and the time a step waits for gradients after backward.
# usage: benchmarks/dist_overhead.sh [BUILD_DIR] [STEPS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dist_bench_setup.sh" "$@"
run one '{"name": "ddp"}' 0
# The DDP machinery alone: a group of one (hooks, bucket copies, all-reduces of one rank).
run solo '{"name": "ddp"}' 1
run two '{"name": "ddp"}' 2
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
