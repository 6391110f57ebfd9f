#!/usr/bin/env bash
# Training runs through the olm command (core/run): relative paths taken against the config
# file's directory, resume writing into the folder it resumes (or --save-folder), metrics
# without replayed steps, nothing-to-train and unwritable outputs refused before step 1, and
# SIGTERM saving like Ctrl-C.
# usage: run_cli_test.sh OLM_BINARY
source "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" cli_run "$1"
digest() { (cd "$1" && find . -type f | sort | xargs sha256sum); }
metric_steps() { grep -o '"step":[0-9]*,"loss"' "$1" | sed 's/[^0-9]//g'; }

mkdir -p proj/data
python3 - <<'PY'
import struct
with open("proj/data/train.bin", "wb") as f:
    f.write(struct.pack("<%dH" % 4000, *[(i * 7 + i // 11) % 250 for i in range(4000)]))
PY
model='{"d_model": 32, "vocab_size": 264, "n_layers": 2,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}}'
# write_config FILE MAX_STEPS_FIELD SAVE_FOLDER METRICS [EXTRA]
write_config() {
  cat > "$1" <<JSON
{"model": $model, "sequence_length": 16, "global_batch_size": 64 $2,
 "optimizer": {"name": "adamw", "lr": 0.003},
 "data": {"paths": ["data/train.bin"], "eos_token_id": 256},
 "eval_data": {"paths": ["data/train.bin"], "eos_token_id": 256}, "eval_batches": 1,
 "save_folder": "$3", "metrics_path": "$4" ${5:-}}
JSON
}

# 1. Relative paths are the config file's: train from another directory, eval from a third.
write_config proj/train.json ', "max_steps": 3' runs/tiny runs/metrics.jsonl
expect_exit 0 "$olm" train --config proj/train.json
[ -f proj/runs/tiny/step3/meta.olmk ] || fail "relative save_folder not under the config's directory"
[ "$(metric_steps proj/runs/metrics.jsonl | tr '\n' ' ')" = "1 2 3 " ] || fail "metrics not under the config's directory"
[ ! -e runs ] || fail "wrote into the current directory"
mkdir elsewhere
(cd elsewhere && expect_exit 0 "$olm" eval --checkpoint ../proj/runs/tiny --batches 1) ||
  fail "eval of a checkpoint from another directory (its eval_data)"

# 2. Resume writes into the folder it resumes: a copy leaves the original byte-identical.
cp -r proj/runs/tiny copy
before="$(digest proj/runs)"
expect_exit 0 "$olm" resume copy --max-steps 5
[ -f copy/step5/meta.olmk ] || fail "resume did not write into the copied folder"
[ "$(metric_steps copy/metrics.jsonl | tr '\n' ' ')" = "4 5 " ] || fail "the copy's metrics ($(cat copy/metrics.jsonl))"
[ "$(digest proj/runs)" = "$before" ] || fail "resuming a copy changed the original run's files"
# --save-folder forks: the resumed folder stays as it was too.
copy_before="$(digest copy)"
expect_exit 0 "$olm" resume copy --max-steps 6 --save-folder fork
[ -f fork/step6/meta.olmk ] && [ -f fork/metrics.jsonl ] || fail "resume --save-folder"
[ "$(digest copy)" = "$copy_before" ] && [ "$(digest proj/runs)" = "$before" ] || fail "a fork changed its source"
# train --save-folder puts the metrics in that folder too.
expect_exit 0 "$olm" train --config proj/train.json --save-folder other --max-steps 2
[ -f other/step2/meta.olmk ] && [ "$(metric_steps other/metrics.jsonl | tr '\n' ' ')" = "1 2 " ] ||
  fail "train --save-folder: checkpoints and metrics"
[ "$(digest proj/runs)" = "$before" ] || fail "train --save-folder appended to the config's metrics"

# 3. A crash after a step's metrics line but before its checkpoint: the resumed run replays
#    the step and the metrics file still holds each step once.
write_config proj/crash.json ', "max_steps": 5, "save_interval": 2, "keep_last_n": 5' crash crash/metrics.jsonl
expect_exit 0 "$olm" train --config proj/crash.json
rm -rf proj/crash/step5
expect_exit 0 "$olm" resume proj/crash
[ "$(metric_steps proj/crash/metrics.jsonl | tr '\n' ' ')" = "1 2 3 4 5 " ] ||
  fail "metrics after crash and resume: $(metric_steps proj/crash/metrics.jsonl | tr '\n' ' ')"

# 4. Nothing to train: no max_steps, or a finished run, is an error that writes nothing.
write_config proj/nosteps.json '' nosteps nosteps/metrics.jsonl
expect_exit 1 "$olm" train --config proj/nosteps.json
grep -q "max_steps" err.txt || fail "no max_steps: $(cat err.txt)"
[ ! -e proj/nosteps ] || fail "no max_steps wrote $(ls proj/nosteps)"
fork_before="$(digest fork)"
expect_exit 1 "$olm" resume fork
grep -q "max_steps" err.txt || fail "resuming a finished run: $(cat err.txt)"
[ "$(digest fork)" = "$fork_before" ] || fail "resuming a finished run wrote"

# 5. Unwritable outputs fail before step 1.
touch proj/a-file
write_config proj/unwritable.json ', "max_steps": 3' a-file/run metrics.jsonl
expect_exit 1 "$olm" train --config proj/unwritable.json
grep -q "save_folder" err.txt || fail "unwritable save_folder: $(cat err.txt)"
! grep -q "^step 1/" err.txt || fail "trained before finding the save folder unwritable"
write_config proj/unwritable2.json ', "max_steps": 3' run2 a-file/metrics.jsonl
expect_exit 1 "$olm" train --config proj/unwritable2.json
grep -q "metrics_path" err.txt || fail "unwritable metrics_path: $(cat err.txt)"
! grep -q "^step 1/" err.txt || fail "trained before finding the metrics file unwritable"

# 6. SIGTERM saves a checkpoint and exits with 143, as Ctrl-C does with 130.
write_config proj/long.json ', "max_steps": 100000' long long/metrics.jsonl
"$olm" train --config proj/long.json >long.out 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q "^step" long.out 2>/dev/null && break; sleep 0.1; done
kill -TERM "$pid"
set +e; wait "$pid"; code=$?; set -e
[ "$code" = 143 ] || { cat long.out >&2; fail "SIGTERM exit code $code, expected 143"; }
ls -d proj/long/step* >/dev/null 2>&1 || fail "SIGTERM saved no checkpoint"
expect_exit 0 "$olm" eval --checkpoint proj/long --batches 1
echo "1 passed, 0 failed"
