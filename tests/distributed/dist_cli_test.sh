#!/usr/bin/env bash
# Data-parallel training through the front ends, launched by torchrun: `torchrun --no-python
# olm train` with 2 and 4 ranks and a C program on the C API with 2 ranks must log the same
# loss at every step as one process on the same global batches (1e-5 relative: the same
# float32 terms summed in another order), only rank 0 writes metrics, and checkpoints are sharded.
# usage: dist_cli_test.sh OLM_BINARY DIST_TRAIN_C_PROGRAM TORCHRUN
cprog="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
torchrun="$3"
source "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" dist_cli "$1"

printf 'The quick brown fox jumps over the lazy dog.\n%%\nPack my box with five dozen liquor jugs.\n%%\n' > a.txt
for i in $(seq 60); do printf 'Line %d of some text to train on, with a little variety %d.\n%%\n' "$i" "$((i * i))" >> a.txt; done
"$olm" tokenize --fortunes --output train.bin a.txt >/dev/null
# 4 instances of 16 tokens per global batch, micro-batches of one instance: one process
# accumulates 4, two ranks 2 each (no gradient sync on the first), four ranks 1 each.
config() {  # config NAME [EXTRA_JSON]
  cat > "$1.json" <<JSON
{"model": {"d_model": 32, "vocab_size": 264, "n_layers": 2,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": 16, "global_batch_size": 64, "rank_microbatch_size": 16, "max_steps": 20,
 "max_grad_norm": 1.0, "z_loss_multiplier": 1e-4, "seed": 7,
 "optimizer": {"name": "adamw", "lr": 0.003},
 "data": {"paths": ["train.bin"], "eos_token_id": 256},
 "eval_data": {"paths": ["train.bin"], "eos_token_id": 256}, "eval_interval": 10, "eval_batches": 5,
 "save_folder": "runs/$1", "metrics_path": "runs/$1.jsonl"${2:-}}
JSON
}
compare_weights() {  # compare_weights A.safetensors B.safetensors LABEL [BOUND]: same tensors, within BOUND (1e-5)
  python3 - "$1" "$2" "$3" "${4:-1e-5}" <<'PY'
import json, struct, sys, array
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; a = array.array("f"); a.frombytes(b[8 + n + s:8 + n + e]); out[k] = a
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), a.keys() ^ b.keys()
worst = max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))
print(f"{sys.argv[3]}: worst absolute difference {worst:.2e}")
sys.exit(0 if worst <= float(sys.argv[4]) else 1)
PY
}
compare() {  # compare REFERENCE.jsonl OTHER.jsonl
  python3 - "$1" "$2" <<'PY'
import json, sys
def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
a, b = a[:20], b[:20]
assert len(a) == 20 and len(b) == 20, (len(a), len(b))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
def evals(path):
    return [json.loads(l)["eval_loss"] for l in open(path) if '"eval_loss"' in l][:2]
ea, eb = evals(sys.argv[1]), evals(sys.argv[2])
if sys.argv[2].split("/")[-1].startswith("c"):  # the C program fits without eval data
    print(f"{sys.argv[2]}: 20 steps, worst relative loss difference {worst:.2e}")
    sys.exit(0 if worst <= 1e-5 else 1)
assert len(ea) == 2 and len(eb) == 2, (ea, eb)  # at steps 10 and 20; ranks split the 5 batches
worst_eval = max(abs(x - y) / abs(x) for x, y in zip(ea, eb))
print(f"{sys.argv[2]}: 20 steps, worst relative loss difference {worst:.2e}, eval loss {worst_eval:.2e}")
sys.exit(0 if worst <= 1e-5 and worst_eval <= 1e-5 else 1)
PY
}
run() {  # run NPROC NAME COMMAND...
  local n="$1" name="$2"; shift 2
  timeout 180 "$torchrun" --standalone --nproc_per_node="$n" --no-python "$@" >"$name.out" 2>&1 ||
    { cat "$name.out" >&2; fail "torchrun $n ranks: $*"; }
}

config single && "$olm" train --config single.json >single.out 2>&1 || { cat single.out >&2; fail "olm train"; }
config ddp2 && run 2 ddp2 "$olm" train --config ddp2.json
grep -q "rank 1 of 2 (local 1 of 2), gloo" ddp2.out || { cat ddp2.out >&2; fail "rank 1 did not join"; }
compare runs/single.jsonl runs/ddp2.jsonl || fail "olm train, 2 ranks: losses differ"
[ "$(grep -c '"loss"' runs/ddp2.jsonl)" = 20 ] || fail "metrics written more than once per step"
# A process group writes sharded checkpoints (rank<r>.safetensors); olm convert assembles them.
[ -f runs/ddp2/step20/rank1.safetensors ] && [ ! -f runs/ddp2/step20/model.safetensors ] || fail "ddp2: not sharded"
"$olm" convert --checkpoint runs/ddp2 --output ddp2.safetensors >/dev/null || fail "olm convert of a sharded checkpoint"
compare_weights runs/single/step20/model.safetensors ddp2.safetensors "final weights" || fail "final weights differ"
# Resuming under torchrun: every rank loads rank 0's checkpoint and the data order goes on.
"$olm" resume runs/single --max-steps 22 >resume1.out 2>&1 || { cat resume1.out >&2; fail "olm resume"; }
run 2 resume2 "$olm" resume runs/ddp2 --max-steps 22
grep -q "rank 1 of 2" resume2.out && grep -q "trained to step 22" resume2.out || { cat resume2.out >&2; fail "resume under torchrun"; }
[ "$(grep -c '"loss"' runs/ddp2.jsonl)" = 22 ] || fail "resume: metrics written more than once per step"
python3 - runs/single.jsonl runs/ddp2.jsonl <<'PY' || fail "resumed losses differ"
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"loss"' in l] for p in sys.argv[1:])
assert [m["step"] for m in a[-2:]] == [21, 22] == [m["step"] for m in b[-2:]], (a[-2:], b[-2:])
worst = max(abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a[-2:], b[-2:]))
print(f"resumed steps 21-22: worst relative loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
# The 2-rank checkpoint resumes in one process (another world size) with the same losses.
"$olm" resume runs/single --max-steps 24 >resume1b.out 2>&1 || { cat resume1b.out >&2; fail "olm resume"; }
"$olm" resume runs/ddp2 --max-steps 24 >resume2b.out 2>&1 || { cat resume2b.out >&2; fail "olm resume of a sharded checkpoint"; }
python3 - runs/single.jsonl runs/ddp2.jsonl <<'PY' || fail "losses resumed at another world size differ"
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"loss"' in l] for p in sys.argv[1:])
assert [m["step"] for m in a[-2:]] == [23, 24] == [m["step"] for m in b[-2:]], (a[-2:], b[-2:])
worst = max(abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a[-2:], b[-2:]))
print(f"sharded at 2, resumed at 1, steps 23-24: worst relative loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY
config ddp4 && run 4 ddp4 "$olm" train --config ddp4.json
compare runs/single.jsonl runs/ddp4.jsonl || fail "olm train, 4 ranks: losses differ"

# FSDP: each rank saves its pieces; olm convert assembles the same weights as one process's;
# olm resume at 4 ranks (each reading only its shards) continues like the one-process resume.
config fsdp2 ', "data_parallel": {"name": "fsdp"}' && run 2 fsdp2 "$olm" train --config fsdp2.json
compare runs/single.jsonl runs/fsdp2.jsonl || fail "olm train, FSDP at 2 ranks: losses differ"
[ -f runs/fsdp2/step20/rank1.safetensors ] && [ ! -f runs/fsdp2/step20/model.safetensors ] || fail "fsdp2: not sharded"
"$olm" convert --checkpoint runs/fsdp2 --output fsdp2.safetensors >/dev/null || fail "olm convert of an FSDP checkpoint"
compare_weights runs/single/step20/model.safetensors fsdp2.safetensors "FSDP final weights (olm convert)" ||
  fail "FSDP final weights differ"
run 4 fsdp2r "$olm" resume runs/fsdp2 --max-steps 22
grep -q "trained to step 22" fsdp2r.out || { cat fsdp2r.out >&2; fail "FSDP resume under torchrun"; }
python3 - runs/single.jsonl runs/fsdp2.jsonl <<'PY' || fail "FSDP resumed losses differ"
import json, sys
a, b = ({m["step"]: m["loss"] for m in (json.loads(l) for l in open(p) if '"loss"' in l)} for p in sys.argv[1:])
worst = max(abs(a[s] - b[s]) / a[s] for s in (21, 22))
print(f"FSDP saved at 2, resumed at 4, steps 21-22: worst relative loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY

# Context parallelism (ring attention, zig-zag): both ranks read the same batches and each
# holds half of every sequence; the checkpoint is an ordinary sharded one.
config cp2 ', "context_parallel": {"degree": 2, "ring": {}}' && run 2 cp2 "$olm" train --config cp2.json
compare runs/single.jsonl runs/cp2.jsonl || fail "olm train, context parallelism 2: losses differ"
"$olm" convert --checkpoint runs/cp2 --output cp2.safetensors >/dev/null || fail "olm convert of a CP checkpoint"
compare_weights runs/single/step20/model.safetensors cp2.safetensors "CP final weights (olm convert)" ||
  fail "CP final weights differ"

# Tensor parallelism x FSDP on 4 ranks: each rank holds half of every split matrix, the
# checkpoint records the slices by their place in the whole tensors, olm convert writes the
# one-process weights, and the checkpoint resumes in one process like the one-process run.
config tp2fsdp2 ', "tensor_parallel": {"degree": 2}, "data_parallel": {"name": "fsdp"}' &&
  run 4 tp2fsdp2 "$olm" train --config tp2fsdp2.json
compare runs/single.jsonl runs/tp2fsdp2.jsonl || fail "olm train, TP 2 x FSDP 2: losses differ"
"$olm" convert --checkpoint runs/tp2fsdp2 --output tp2fsdp2.safetensors >/dev/null || fail "olm convert of a TP checkpoint"
# The TP ranks sum each projection over a different split of its inputs (row-parallel layers,
# the vocabulary-parallel loss), so more terms round differently than under DDP; an element
# whose gradient is at rounding level then takes AdamW's step either way (lr 3e-3 times a moment
# ratio near 0), which 1e-5 does not cover (seen 1.9e-5): 1e-4, while the losses above and the
# resume below hold the whole trajectory to 1e-5 relative.
compare_weights runs/single/step20/model.safetensors tp2fsdp2.safetensors "TP x FSDP final weights (olm convert)" 1e-4 ||
  fail "TP x FSDP final weights differ"
"$olm" resume runs/tp2fsdp2 --max-steps 22 >tpr.out 2>&1 || { cat tpr.out >&2; fail "olm resume of a TP checkpoint"; }
python3 - runs/single.jsonl runs/tp2fsdp2.jsonl <<'PY' || fail "TP checkpoint resumed in one process: losses differ"
import json, sys
a, b = ({m["step"]: m["loss"] for m in (json.loads(l) for l in open(p) if '"loss"' in l)} for p in sys.argv[1:])
worst = max(abs(a[s] - b[s]) / a[s] for s in (21, 22))
print(f"TP 2 x FSDP 2 saved, resumed in one process, steps 21-22: worst relative loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-5 else 1)
PY

# By hand, as srun starts tasks: Slurm's variables only, no torchrun.
config slurm2
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for r in 0 1; do
  env -u RANK -u WORLD_SIZE SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r SLURM_NTASKS_PER_NODE=2 \
    MASTER_PORT="$port" OMP_NUM_THREADS=1 timeout 180 "$olm" train --config slurm2.json --dist-timeout 60 \
    >"slurm2.$r.out" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat slurm2.*.out >&2; fail "Slurm-style launch"; }; done
grep -q "rank 1 of 2" slurm2.1.out || { cat slurm2.1.out >&2; fail "Slurm rank 1 did not join"; }
compare runs/single.jsonl runs/slurm2.jsonl || fail "Slurm-style launch, 2 ranks: losses differ"

# The C program: alone, then as 2 ranks.
config c1 && "$cprog" c1.json train.bin >c1.out 2>&1 || { cat c1.out >&2; fail "C program"; }
compare runs/single.jsonl runs/c1.jsonl || fail "C program alone differs from olm train"
config c2 && run 2 c2 "$cprog" c2.json train.bin
compare runs/single.jsonl runs/c2.jsonl || fail "C program, 2 ranks: losses differ"
echo "dist_cli: ok"
