#!/usr/bin/env bash
# Kills a training process (SIGKILL) at arbitrary moments while it writes a checkpoint every
# step, then checks that the newest checkpoint on disk is complete and loadable and that
# training resumes from it. Repeated with several delays.
# usage: checkpoint_kill_test.sh OLM_BINARY
set -euo pipefail
olm="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
work="$(mktemp -d)"
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
python3 - <<'PY'
import random, struct
random.seed(0)
with open("tokens.bin", "wb") as f:
    f.write(struct.pack("<%dH" % 20000, *[random.randrange(64) for _ in range(20000)]))
PY
cat > train.json <<'JSON'
{"model": {"d_model": 64, "vocab_size": 64, "n_layers": 2,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 128, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": 32, "global_batch_size": 256, "max_steps": 100000,
 "optimizer": {"name": "adamw", "lr": 0.001},
 "data": {"paths": ["tokens.bin"]},
 "save_folder": "ckpt", "save_interval": 1, "keep_last_n": 2}
JSON
for delay in 0.35 0.8 1.3 0.05 2.1; do
  before="$(ls ckpt 2>/dev/null | tr '\n' ' ' || true)"
  # The first run starts training; later ones resume from the newest checkpoint.
  if ls -d ckpt/step* >/dev/null 2>&1; then
    "$olm" resume ckpt >/dev/null 2>&1 &
  else
    "$olm" train --config train.json >/dev/null 2>&1 &
  fi
  pid=$!
  # Let it write at least one new checkpoint, then kill it at an arbitrary moment.
  for _ in $(seq 200); do [ "$(ls ckpt 2>/dev/null | tr '\n' ' ' || true)" != "$before" ] && break; sleep 0.05; done
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  newest="$(ls -d ckpt/step* | sort -t p -k 2 -n | tail -1)"
  "$olm" eval --checkpoint ckpt --data tokens.bin --batches 1 >/dev/null ||
    { echo "kill after ${delay}s: the newest checkpoint ($newest) does not load" >&2; exit 1; }
  echo "killed after ${delay}s: $(ls ckpt | tr '\n' ' ')-> newest loads"
done
# And training resumes from it.
"$olm" resume ckpt --max-steps "$(( $(ls -d ckpt/step* | sed 's/.*step//' | sort -n | tail -1) + 2 ))" >/dev/null 2>&1
echo "resumed and trained 2 more steps"
echo "1 passed, 0 failed"
