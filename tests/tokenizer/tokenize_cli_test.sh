#!/usr/bin/env bash
# `olm tokenize --tokenizer` and `olm generate --tokenizer` end to end, on a SentencePiece model
# the Python sentencepiece package trains here: the token files hold exactly the package's ids
# (EOS between documents) in each format and dtype, outputs are never overwritten without
# --force, and bad input is refused naming the file.
# usage: tokenize_cli_test.sh OLM_BINARY PYTHON
source "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" tokenize_cli "$1"
python="$2"

mkdir docs
cp /usr/share/games/fortunes/science docs/a.txt
cp /usr/share/games/fortunes/computers docs/b.txt
printf 'Caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac   runs\tof  space\n\nint x = 42;\n' > docs/c.txt
printf '   \n\n' > docs/blank.txt  # only whitespace: skipped
cat > docs.jsonl <<'JSONL'
{"id": 1, "text": "The first document.\nWith two lines."}
{"text": "Unicode escapes: \u00e9\u65e5 \ud83d\ude00 and a tab\there", "meta": {"x": [1, 2]}}

{"text": "after a blank line"}
JSONL
"$python" - <<'PY'
import sentencepiece as spm
spm.SentencePieceTrainer.train(input="docs/a.txt,docs/b.txt", model_prefix="sp", vocab_size=500, model_type="bpe",
                               byte_fallback=True, minloglevel=2)
PY
[ -f sp.model ] || fail "training the SentencePiece model"

# check FILE DTYPE MODE INPUTS...: the file's ids equal the package's encode of each document + EOS.
check() {
  "$python" - "$@" <<'PY'
import json, sys
import numpy as np
import sentencepiece as spm
path, dtype, mode, inputs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sp = spm.SentencePieceProcessor(model_file="sp.model")
docs = []
for name in inputs:
    raw = open(name, "rb").read().decode("utf-8")
    if mode == "file":
        docs.append(raw)
    elif mode == "jsonl":
        docs += [json.loads(line)["text"] for line in raw.split("\n") if line.strip()]
    elif mode == "fortunes":
        doc = ""
        for line in raw.split("\n")[:-1] if raw.endswith("\n") else raw.split("\n"):
            if line == "%":
                if doc: docs.append(doc)
                doc = ""
            else:
                doc += line + "\n"
        if doc: docs.append(doc)
want = []
for d in docs:
    if d.strip(" \t\r\n"):
        want += sp.encode(d) + [sp.eos_id()]
got = np.load(path) if path.endswith(".npy") else np.fromfile(path, dtype="<" + {"uint16": "u2", "uint32": "u4"}[dtype])
assert got.dtype == np.dtype({"uint16": "<u2", "uint32": "<u4"}[dtype]), got.dtype
assert got.ndim == 1
assert got.tolist() == want, f"{path}: {len(got)} ids, want {len(want)}; first difference at " + str(
    next((i for i, (a, b) in enumerate(zip(got.tolist(), want)) if a != b), min(len(got), len(want))))
print(f"{path}: {len(want)} ids identical")
PY
}

# One document per file, .npy uint16 (the default for a 500-token vocabulary), parallel.
expect_exit 0 "$olm" tokenize --threads 2 --tokenizer sp.model --add-eos --out tokens.npy docs/a.txt docs/b.txt docs/c.txt docs/blank.txt
grep -q "4 files, 3 documents" out.txt || { cat out.txt; fail "document count"; }
grep -q "uint16 npy" out.txt || fail "default dtype and format"
check tokens.npy uint16 file docs/a.txt docs/b.txt docs/c.txt docs/blank.txt
# Directories expand in name order; raw uint32; one thread gives the same bytes.
expect_exit 0 "$olm" tokenize --threads 1 --tokenizer sp.model --add-eos --dtype uint32 --out tokens.u32 docs
check tokens.u32 uint32 file docs/a.txt docs/b.txt docs/blank.txt docs/c.txt
expect_exit 0 "$olm" tokenize --threads 2 --tokenizer sp.model --add-eos --dtype uint32 --format raw --out tokens2.u32 docs
cmp tokens.u32 tokens2.u32 || fail "threads change the output"
# Fortunes: one document per entry; JSONL: one per line's "text".
expect_exit 0 "$olm" tokenize --tokenizer sp.model --add-eos --fortunes --out fortunes.npy docs/a.txt
check fortunes.npy uint16 fortunes docs/a.txt
expect_exit 0 "$olm" tokenize --tokenizer sp.model --add-eos --jsonl --out jsonl.npy docs.jsonl
grep -q "3 documents" out.txt || fail "jsonl document count"
check jsonl.npy uint16 jsonl docs.jsonl
# A model directory with tokenizer_config.json: its eos_token is the EOS written.
mkdir model && cp sp.model model/tokenizer.model
echo '{"eos_token": {"content": "<s>"}}' > model/tokenizer_config.json
expect_exit 0 "$olm" tokenize --tokenizer model --add-eos --jsonl --out dir.npy docs.jsonl
"$python" -c "import numpy as np; t = np.load('dir.npy'); assert (t == 1).sum() == 3 and (t == 2).sum() == 0, t"
# --eos picks another id (and implies --add-eos).
expect_exit 0 "$olm" tokenize --tokenizer sp.model --eos 3 --jsonl --out eos3.npy docs.jsonl
"$python" -c "import numpy as np; t = np.load('eos3.npy'); assert t[-1] == 3 and (t == 3).sum() == 3, t"
expect_exit 2 "$olm" tokenize --tokenizer sp.model --eos 500 --jsonl --out eos500.npy docs.jsonl
grep -q "eos 500 is outside the vocabulary" err.txt || fail "--eos outside the vocabulary"

# Never overwrite without --force; a failed run leaves the old file (and no temporary file).
before="$(md5sum < tokens.npy)"
expect_exit 1 "$olm" tokenize --tokenizer sp.model --out tokens.npy docs/c.txt
grep -q "tokens.npy' exists; pass --force" err.txt || fail "overwrite refusal message"
printf 'ok\n\xff\xfe bad\n' > bad.txt
expect_exit 1 "$olm" tokenize --tokenizer sp.model --force --out tokens.npy docs/c.txt bad.txt
grep -q "bad.txt': not UTF-8 at byte 3" err.txt || { cat err.txt; fail "invalid UTF-8 message"; }
[ "$(md5sum < tokens.npy)" = "$before" ] || fail "a failed run changed the output"
[ -z "$(ls | grep '\.tmp\.')" ] || fail "temporary file left behind"
expect_exit 0 "$olm" tokenize --tokenizer sp.model --force --out tokens.npy docs/c.txt
[ "$(md5sum < tokens.npy)" != "$before" ] || fail "--force did not overwrite"
# Bad JSONL names the file and line; usage errors exit 2.
printf '{"text": "fine"}\n{"body": "no text"}\n' > nofield.jsonl
expect_exit 1 "$olm" tokenize --tokenizer sp.model --jsonl --out x.npy nofield.jsonl
grep -q 'nofield.jsonl:2: no "text" member' err.txt || fail "missing field message"
expect_exit 1 "$olm" tokenize --tokenizer sp.model --jsonl --text-field body --out x.npy nofield.jsonl
grep -q 'nofield.jsonl:1: no "body" member' err.txt || fail "--text-field"
printf '{"text": 7}\n' > notstring.jsonl
expect_exit 1 "$olm" tokenize --tokenizer sp.model --jsonl --out x.npy notstring.jsonl
grep -q 'notstring.jsonl:1: "text" is not a string' err.txt || fail "non-string field message"
expect_exit 2 "$olm" tokenize --tokenizer sp.model --format npy --out x.bin docs/c.txt
grep -q "needs an output name ending in .npy" err.txt || fail "format/name mismatch message"
expect_exit 2 "$olm" tokenize --tokenizer sp.model --dtype uint8 --out x.npy docs/c.txt
expect_exit 1 "$olm" tokenize --tokenizer missing.model --out x.npy docs/c.txt
grep -q "missing.model" err.txt || fail "missing tokenizer message"
[ ! -e x.npy ] && [ ! -e x.bin ] || fail "a refused run wrote its output"
# uint16 cannot hold a vocabulary above 65536 tokens: a model with 70000 pieces.
"$python" - <<'PY'
from sentencepiece import sentencepiece_model_pb2 as pb
m = pb.ModelProto()
m.ParseFromString(open("sp.model", "rb").read())
for i in range(70000 - len(m.pieces)):
    p = m.pieces.add()
    p.piece, p.score, p.type = f"<extra_{i}>", 0.0, pb.ModelProto.SentencePiece.USER_DEFINED
open("big.model", "wb").write(m.SerializeToString())
PY
expect_exit 2 "$olm" tokenize --tokenizer big.model --dtype uint16 --out big.npy docs/c.txt
grep -q "uint16 cannot hold token id 69999 (the vocabulary has 70000 tokens)" err.txt || { cat err.txt; fail "uint16 refusal"; }
expect_exit 0 "$olm" tokenize --tokenizer big.model --add-eos --out big.npy docs/c.txt
grep -q "uint32 npy" out.txt || fail "a large vocabulary defaults to uint32"

# generate --tokenizer: a tiny model trained on the token file samples text.
cat > train.json <<'JSON'
{"model": {"d_model": 32, "vocab_size": 512, "n_layers": 1,
   "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
     "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
   "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}},
 "sequence_length": 32, "global_batch_size": 64, "max_steps": 2,
 "optimizer": {"name": "adamw", "lr": 0.003},
 "data": {"paths": ["fortunes.npy"], "eos_token_id": 2},
 "save_folder": "runs/tiny"}
JSON
expect_exit 0 "$olm" train --config train.json
expect_exit 0 "$olm" generate --checkpoint runs/tiny --tokenizer sp.model --prompt "The meaning of life is" \
  --max-new-tokens 12 --temperature 0
head -c 22 out.txt | grep -q "^The meaning of life is" || { cat out.txt; fail "generate prints the prompt as text"; }
[ "$(wc -c < out.txt)" -gt 24 ] || fail "generate printed no sampled text"
"$python" -c "open('out.txt', encoding='utf-8').read()" || fail "generate printed invalid UTF-8"
echo "tokenize_cli: OK"
