# Sourced by checkpoint_kill_test.sh and dist_checkpoint_kill_test.sh, with the olm binary as
# $1: a scratch directory to work in (removed on exit, with any training still running), 20000
# random tokens in tokens.bin and train.json, a small model saving a checkpoint every step.
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
