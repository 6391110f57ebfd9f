#!/usr/bin/env bash
# olm convert --to-hf / --from-hf and olm generate --hf end to end on a tiny trained model:
# a checkpoint goes out as a sharded Hugging Face directory, comes back as an olm config and
# weights, goes out again byte for byte the same, and samples the same greedy tokens.
# usage: hf_cli_test.sh OLM_BINARY
source "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" "hf cli" "$1"

for i in $(seq 40); do printf 'Line %d of some text to train on, with a little variety %d.\n%%\n' "$i" "$((i * i))" >> a.txt; done
"$olm" tokenize --fortunes --output train.bin a.txt >/dev/null
# OLMo-2 shaped (reordered norms, QK-norm): Olmo2ForCausalLM.
cat > train.json <<'JSON'
{"model": {"d_model": 32, "vocab_size": 264, "n_layers": 2,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000},
       "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
     "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}},
 "sequence_length": 16, "global_batch_size": 64, "max_steps": 2,
 "optimizer": {"name": "adamw", "lr": 0.003},
 "data": {"paths": ["train.bin"], "eos_token_id": 256}, "save_folder": "runs/tiny"}
JSON
expect_exit 0 "$olm" train --config train.json

mkdir tok && echo '{"version": "1.0"}' > tok/tokenizer.json
expect_exit 0 "$olm" convert --to-hf hf1 --checkpoint runs/tiny --max-shard-size 20KB --tokenizer tok --eos-id 256
grep -q "Olmo2ForCausalLM" out.txt || fail "--to-hf output"
[ -f hf1/config.json ] && [ -f hf1/generation_config.json ] && [ -f hf1/model.safetensors.index.json ] \
  && [ -f hf1/tokenizer.json ] || fail "--to-hf files: $(ls hf1)"
shards=$(ls hf1 | grep -c '^model-.*-of-.*\.safetensors$')
[ "$shards" -ge 2 ] || fail "--max-shard-size 20KB gave $shards shards"
grep -q '"eos_token_id": 256' hf1/generation_config.json || fail "generation_config.json eos"

expect_exit 0 "$olm" convert --from-hf hf1 --output imported
[ -f imported/olm_config.json ] && [ -f imported/model.safetensors ] || fail "--from-hf files"
expect_exit 0 "$olm" convert --to-hf hf2 --config imported/olm_config.json --weights imported/model.safetensors \
  --max-shard-size 20KB --eos-id 256
for f in $(cd hf1 && ls *.safetensors); do cmp -s "hf1/$f" "hf2/$f" || fail "$f differs after a round trip"; done
cmp -s hf1/config.json hf2/config.json || fail "config.json differs after a round trip"

# Into a checkpoint with a train config (its model gives way to config.json's), trained on.
expect_exit 0 "$olm" convert --from-hf hf1 --train-config train.json --output runs/from_hf
expect_exit 0 "$olm" resume runs/from_hf --max-steps 3
grep -q "trained to step 3" out.txt || fail "resume after --from-hf --train-config"

# The same greedy tokens from the checkpoint and from its Hugging Face directory.
expect_exit 0 "$olm" generate --checkpoint runs/tiny --prompt-ids 1,2,3 --max-new-tokens 6 --temperature 0
mv out.txt from_checkpoint.txt
expect_exit 0 "$olm" generate --hf hf1 --prompt-ids 1,2,3 --max-new-tokens 6 --temperature 0
cmp -s out.txt from_checkpoint.txt || fail "generate --hf: $(cat out.txt) vs $(cat from_checkpoint.txt)"

# A bfloat16 export, and a bfloat16 import of it.
expect_exit 0 "$olm" convert --to-hf hf_bf16 --checkpoint runs/tiny --dtype bfloat16
grep -q '"torch_dtype": "bfloat16"' hf_bf16/config.json || fail "--dtype bfloat16 config.json"
expect_exit 0 "$olm" convert --from-hf hf_bf16 --output imported_bf16
grep -q '"dtype": "bfloat16"' imported_bf16/olm_config.json || fail "bfloat16 import"

# Refusals: a non-empty target, a model Hugging Face has no class for, bad flags, bad input.
expect_exit 1 "$olm" convert --to-hf hf1 --checkpoint runs/tiny
expect_message "not an empty directory"
cat > no_qk_model.json <<'JSON'
{"d_model": 32, "vocab_size": 264, "n_layers": 2,
 "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
   "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}}
JSON
expect_exit 1 "$olm" convert --to-hf hf3 --config no_qk_model.json --weights imported/model.safetensors
expect_message "'reordered_norm' without QK-norm"
expect_exit 2 "$olm" convert --to-hf hf3 --checkpoint runs/tiny --max-shard-size 5XB
expect_message "--max-shard-size"
expect_exit 2 "$olm" convert --to-hf hf3 --checkpoint runs/tiny --dtype int8
expect_message "--dtype"
[ ! -e hf3 ] || fail "a refused export left hf3 behind"
expect_exit 1 "$olm" convert --from-hf nowhere --output x
expect_message "nowhere/config.json"
sed 's/Olmo2ForCausalLM/GPT2LMHeadModel/' hf1/config.json > bad_config.json
mkdir bad && cp bad_config.json bad/config.json
expect_exit 1 "$olm" generate --hf bad --prompt-ids 1 --max-new-tokens 1
expect_message "GPT2LMHeadModel"
expect_exit 2 "$olm" generate --hf hf1 --checkpoint runs/tiny --prompt-ids 1
echo "1 passed, 0 failed"
