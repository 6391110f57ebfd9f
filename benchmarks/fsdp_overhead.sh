#!/usr/bin/env bash
# FSDP's cost and memory on CPU, next to DDP's and one process's: the model of
# dist_overhead.sh (3.55M parameters, 4 blocks) and the same global batch trained by one
# process, by DDP with 2 ranks, by FSDP with 1 (group of one), 2 and 4 ranks, by FSDP at 2
# ranks with one block prefetched and with bfloat16 parameters, and by HSDP as 2 replicas of
# 2 ranks (torchrun, Gloo over loopback). Reports the median step time, the bytes each rank communicates per
# step, and what each rank holds: its parameter shards and optimizer state (persistent) and
# the most gathered (full) unit bytes at once during a step (transient), from the trainer's
# metrics (param_shard_bytes, optim_state_bytes, peak_gathered_bytes).
# usage: benchmarks/fsdp_overhead.sh [BUILD_DIR] [STEPS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/dist_bench_setup.sh" "$@"
run one '{"name": "ddp"}' 0
run ddp2 '{"name": "ddp"}' 2
run fsdp1 '{"name": "fsdp"}' 1
run fsdp2 '{"name": "fsdp"}' 2
run fsdp4 '{"name": "fsdp"}' 4
run fsdp2_prefetch '{"name": "fsdp", "prefetch_factor": 1}' 2
run fsdp2_bf16 '{"name": "fsdp", "param_dtype": "bfloat16"}' 2
run hsdp4 '{"name": "hsdp", "num_replicas": 2}' 4
echo "load average (other work on this machine skews the times): $(cut -d" " -f1-3 /proc/loadavg)"
python3 - <<'PY'
import json, statistics
def load(p): return [json.loads(l) for l in open(p + ".jsonl") if '"loss"' in l]
runs = {n: load(n) for n in ["one", "ddp2", "fsdp1", "fsdp2", "fsdp4", "fsdp2_prefetch", "fsdp2_bf16", "hsdp4"]}
def med(n, k): return statistics.median(m.get(k, 0) for m in runs[n][2:])
t1 = med("one", "step_seconds")
print(f"{'run':14} {'ms/step':>9} {'x 1-proc':>8} {'bytes/step/rank':>16} {'wait ms':>8}  max rel. loss diff vs 1 process")
for n in runs:
    d = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(runs["one"], runs[n]))
    print(f"{n:14} {med(n, 'step_seconds') * 1e3:9.1f} {med(n, 'step_seconds') / t1:8.2f} "
          f"{runs[n][-1].get('comm_bytes', 0):16d} {med(n, 'comm_wait_seconds') * 1e3:8.1f}  {d:.1e}")
u = runs["fsdp1"][-1]
base = u["param_unsharded_bytes"], u["optim_state_bytes"]
print("\nper rank (rank 0; torchrun writes metrics from rank 0 only):")
print(f"{'run':14} {'param bytes':>12} {'/unsharded':>10} {'optim bytes':>12} {'/unsharded':>10} "
      f"{'persistent':>11} {'/unsharded':>10} {'peak gathered':>14} {'persist.+peak':>14}")
for n in ["fsdp1", "fsdp2", "fsdp4", "fsdp2_prefetch", "fsdp2_bf16", "hsdp4"]:
    m = runs[n][-1]
    p, o, g = m["param_shard_bytes"], m["optim_state_bytes"], m["peak_gathered_bytes"]
    print(f"{n:14} {p:12d} {p / base[0]:10.3f} {o:12d} {o / base[1]:10.3f} {p + o:11d} "
          f"{(p + o) / sum(base):10.3f} {g:14d} {p + o + g:14d}")
PY
