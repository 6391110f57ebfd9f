#!/usr/bin/env bash
# The olm command end to end on a tiny model: every subcommand, its exit codes and outputs.
# usage: cli_test.sh OLM_BINARY
source "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" cli "$1"

printf 'The quick brown fox jumps over the lazy dog.\n%%\nPack my box with five dozen liquor jugs.\n%%\n' > a.txt
for i in $(seq 40); do printf 'Line %d of some text to train on, with a little variety %d.\n%%\n' "$i" "$((i * i))" >> a.txt; done
"$olm" tokenize --fortunes --output train.bin a.txt | grep -q "documents" || fail "tokenize"
cat > train.json <<'JSON'
{"model": {"d_model": 32, "vocab_size": 264, "n_layers": 2,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": 16, "global_batch_size": 64, "max_steps": 3,
 "optimizer": {"name": "adamw", "lr": 0.003},
 "data": {"paths": ["train.bin"], "eos_token_id": 256},
 "eval_data": {"paths": ["train.bin"], "eos_token_id": 256}, "eval_batches": 2,
 "save_folder": "runs/tiny", "metrics_path": "runs/metrics.jsonl"}
JSON
expect_exit 0 "$olm" train --config train.json
grep -q "trained to step 3" out.txt || fail "train output"
[ -f runs/tiny/step3/meta.olmk ] && [ -f runs/tiny/step3/model.safetensors ] || fail "checkpoint files"
[ "$(grep -c '"step"' runs/metrics.jsonl)" -ge 3 ] || fail "metrics file"
expect_exit 0 "$olm" resume runs/tiny --max-steps 4
grep -q "trained to step 4" out.txt || fail "resume output"
expect_exit 0 "$olm" eval --checkpoint runs/tiny --batches 1
grep -qE "eval: loss [0-9.]+ perplexity" out.txt || fail "eval output"
expect_exit 0 "$olm" generate --checkpoint runs/tiny --prompt "The " --max-new-tokens 8 --temperature 0
expect_exit 0 "$olm" generate --checkpoint runs/tiny --prompt-ids 1,2,3 --max-new-tokens 4 --seed 3
[ "$(wc -w < out.txt)" = 4 ] || fail "generate ids"
expect_exit 0 "$olm" info --config train.json
grep -q "parameters:" out.txt || fail "info"
# MoE presets also report active parameters (OLMo-core's num_active_params for smallmoe).
expect_exit 0 "$olm" info --preset smallmoe --vocab 100278
grep -q "active parameters: *267651840$" out.txt || fail "info: smallmoe active parameters"
expect_exit 0 "$olm" convert --checkpoint runs/tiny --output model.safetensors
expect_exit 0 "$olm" convert --checkpoint runs/tiny --output hf.safetensors --names hf
expect_exit 0 "$olm" convert --input hf.safetensors --names hf --train-config train.json --output imported
expect_exit 0 "$olm" convert --input model.safetensors --train-config train.json --output imported2
cmp imported/step0/model.safetensors imported2/step0/model.safetensors || fail "HF and OLMo-core imports differ"
expect_exit 0 "$olm" bench --config train.json --seq-len 16 --batch 2 --steps 1 --warmup 0
grep -q tokens_per_second out.txt || fail "bench"
# Ctrl-C: the run saves a checkpoint at the step it reached and exits with 130.
sed 's/"max_steps": 3/"max_steps": 100000/; s#runs/tiny#runs/interrupted#' train.json > long.json
"$olm" train --config long.json >long.out 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "step" long.out 2>/dev/null && break; sleep 0.1; done
sleep 0.5
kill -INT "$pid"
set +e; wait "$pid"; code=$?; set -e
[ "$code" = 130 ] || { cat long.out >&2; fail "Ctrl-C exit code $code, expected 130"; }
grep -q "(interrupted)" long.out || fail "no interruption message"
ls -d runs/interrupted/step* >/dev/null 2>&1 || fail "Ctrl-C saved no checkpoint"
expect_exit 0 "$olm" eval --checkpoint runs/interrupted --batches 1

expect_exit 2 "$olm" nonsense
expect_exit 2 "$olm" train
expect_exit 2 "$olm" train --frobnicate
echo '{"sequence_length": 0}' > bad.json
expect_exit 1 "$olm" train --config bad.json
grep -q "sequence_length must be positive" err.txt || fail "config error message"
expect_exit 1 "$olm" resume does-not-exist
# Every numeric flag is refused naming the flag and the value (exit 2, a usage error).
expect_flag_error() {  # expect_flag_error FLAG VALUE command...
  local flag="$1" value="$2"; shift 2
  expect_exit 2 "$@"
  grep -q -- "$flag" err.txt && grep -q -- "$value" err.txt || { cat err.txt >&2; fail "'$*' does not name $flag and $value"; }
}
expect_flag_error --max-steps abc "$olm" train --config train.json --max-steps abc
expect_flag_error --max-steps 3x "$olm" resume runs/tiny --max-steps 3x
expect_flag_error --dist-timeout soon "$olm" train --config train.json --dist-timeout soon
expect_flag_error --batches many "$olm" eval --checkpoint runs/tiny --batches many
expect_flag_error --batches -1 "$olm" eval --checkpoint runs/tiny --batches -1
expect_flag_error --stop eos "$olm" generate --checkpoint runs/tiny --prompt "The " --stop eos
expect_flag_error --prompt-ids 1,x "$olm" generate --checkpoint runs/tiny --prompt-ids 1,x
expect_flag_error --temperature hot "$olm" generate --checkpoint runs/tiny --prompt "The " --temperature hot
expect_flag_error --seed -3 "$olm" generate --checkpoint runs/tiny --prompt "The " --seed -3
expect_flag_error --vocab 1e5 "$olm" info --preset olmo2_30M --vocab 1e5
expect_flag_error --seq-len 4k "$olm" bench --config train.json --seq-len 4k
expect_flag_error --eos x "$olm" tokenize --output t.bin --eos x a.txt
# info on an invalid train config reports the train config's error, not a model config's.
sed 's/"sequence_length": 16/"sequence_length": 0/' train.json > bad_train.json
expect_exit 1 "$olm" info --config bad_train.json
grep -q "sequence_length must be positive" err.txt || { cat err.txt >&2; fail "info on an invalid train config"; }
# --threads, for every command (olm_set_num_threads's door): in range it runs, out of range
# it is a usage error naming the flag.
expect_exit 0 "$olm" eval --checkpoint runs/tiny --batches 1 --threads 1
expect_exit 2 "$olm" info --preset olmo2_1M --vocab 256 --threads 0
grep -q -- "--threads" err.txt || { cat err.txt >&2; fail "--threads 0: the error names the flag"; }
for cmd in train resume eval generate info convert bench tokenize; do
  expect_exit 0 "$olm" "$cmd" --help
done
echo "1 passed, 0 failed"
