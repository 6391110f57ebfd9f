#!/usr/bin/env python3
"""tokenizer.json parity between olm's native engine and the `tokenizers` package (pinned 0.22.2).

Trains tokenizers of each kind olm implements on a corpus of at least 1 MB (the fortunes files
plus generated text: accents, CJK, Cyrillic, Arabic, Greek, emoji with ZWJ sequences, whitespace
runs, \\r\\n, digit runs, code, and the special tokens embedded in text), with the `tokenizers`
package and no downloads:
  gpt2         byte-level BPE: ByteLevel pre-tokenizer and decoder (GPT-2)
  dolma2       Llama-3 / OLMo-2 "dolma2" style: Split(cl100k regex, Isolated) + ByteLevel
               (use_regex false), ignore_merges, TemplateProcessing with <|begin_of_text|>,
               special added tokens (one with lstrip/rstrip, one single_word non-special)
  llama2       BPE with byte_fallback and <unk> (fuse_unk), <0xNN> tokens, normalizer
               Sequence[Prepend, Replace], decoder Sequence[Replace, ByteFallback, Fuse, Strip]
  metaspace    the same model with a Metaspace pre-tokenizer (prepend_scheme "first") and decoder,
               and a special token with lstrip
  bert         WordPiece: BertNormalizer (lowercase, strip accents), BertPreTokenizer,
               BertProcessing [CLS]/[SEP], WordPiece decoder
  normalized   Sequence[NFKC, Lowercase, Replace(regex)] normalizer, Whitespace + Digits
               pre-tokenizers, BPE with end_of_word_suffix, BPEDecoder, added tokens matched in
               normalized text (one single_word, one rstrip)
  wordlevel    WordLevel with WhitespaceSplit + Punctuation, NFD + StripAccents
  unigram      Unigram (trained on the ASCII documents only) with byte_fallback, NFKC, Metaspace
  bert_truncated, wordlevel_padded   the same with truncation (Left / Right) and padding
               (to a multiple of 16 / to a fixed 32, Right / Left)
For every document and every kind, the script writes what `tokenizers` gives (ids with and
without special tokens, decode with skip_special_tokens both ways) into a fixture, and runs
olm_core_tests' TokenizerParity tests on it (OLM_TOKENIZER_PARITY_DIR), which compare
everything exactly, check decode(encode(x)) == x where olm calls the tokenizer lossless, and
print olm's single-thread encode throughput beside the package's (RAYON_NUM_THREADS=1).
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers  # noqa: E402
from tokenizers import pre_tokenizers, processors, trainers  # noqa: E402

FORTUNES = "/usr/share/games/fortunes"
CL100K = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<s>", "</s>", "[CLS]", "[SEP]", "<unk>", "<mask>", "[MASK]"]


def fortunes():
    docs = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if not os.path.isfile(path) or name.endswith((".dat", ".u8")):
            continue
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        docs.extend(d.strip("\n") for d in text.split("\n%\n") if d.strip())
    return docs


WORDS_INTL = ["hello WORLD", "Hello World!", "σίσυφος", "xΣίσυφος", "[MASK]", "  [MASK]",
    "café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Zürich", "crème brûlée", "e\u0301t\u00e9",
    "漢字", "中文分词测试", "日本語のテキスト", "한국어 문장", "Привет, мир!", "Съешь же ещё этих мягких булок",
    "مرحبا بالعالم", "שלום עולם", "ΣΊΣΥΦΟΣ", "Οδυσσεύς", "İstanbul", "ǅungla", "straße", "ﬁnance", "ＡＢＣ１２３",
    "①②③", "x²+y³", "½ ¼", "ℌ𝔢𝔩𝔩𝔬", "\u00a0nbsp\u00a0", "ideo\u3000space", "zero\u200bwidth", "Ⓐ Ⓑ",
]
EMOJI = ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪", "❤️", "🤖", "😀😃😄", "🧑🏿‍💻", "✈︎", "🫠"]
# Runs of ASCII whitespace, and the characters where regex engines disagree on \s: Unicode
# White_Space (NEL, NBSP, U+1680, U+2000..U+200A, U+2028/9, U+202F, U+205F, U+3000), and
# look-alikes that are not (U+180E, U+200B, U+FEFF, the ASCII separators 0x1C..0x1F).
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \r\n ", "\u00a0", "      ", "\x0b", "\x0c",
              "\x85", "\u1680", "\u2002", "\u2009 ", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
              "\u180e", "\u200b", "\ufeff", "\x1c", "\x1f", " \u00a0 ", "\r", "\r\r\n"]
CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "if err != nil {\r\n\treturn fmt.Errorf(\"bad: %w\", err)\r\n}\r\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"x\">&nbsp;</div>", "x = {'a': [1, 2, 3], \"b\": None}", "$ ls -la | grep '^d' && echo done",
    "fn main() { println!(\"{:?}\", vec![1u8; 4]); }", "    \n\n   \t\t  \n",
]


def generated(rng, words, count):
    docs = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(3, 40)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(words))
            elif r < 0.55:
                parts.append(rng.choice(WORDS_INTL))
            elif r < 0.62:
                parts.append(rng.choice(EMOJI) * rng.randint(1, 3))
            elif r < 0.70:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif r < 0.76:
                parts.append(rng.choice(CODE))
            elif r < 0.83:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.92:
                parts.append(rng.choice(WHITESPACE))
            else:
                # Contractions, also in case-folding look-alikes (long s, Kelvin sign).
                parts.append(rng.choice(["'s", "'LL", "don't", "I'M", "it's", "...", "?!", "--", "\"q\"", "(x)", "'ſ",
                                         "'\u212a", "'S", "I'Ve", "’s"]))
        sep = rng.choice(["", " ", " ", " ", "\n"])
        docs.append(sep.join(parts))
    docs += ["", " ", "  leading", "trailing  ", "\n", "<|endoftext|>", "<s>", "a<|endoftext|>b", " <mask> x",
             "x<mask>y", "[CLS][SEP]", "😀", "\t\r\n", "0123456789" * 5, "a" * 3000, " " * 500 + "x"]
    return docs


def corpus():
    rng = random.Random(1234)
    base = fortunes()
    words = " ".join(base).split()
    docs = base + generated(rng, words, 2500)
    return docs


def bpe_trainer(vocab, specials, **kw):
    return trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=specials, show_progress=False, **kw)


def build_gpt2(docs):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(docs, bpe_trainer(8000, ["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok, True


def build_dolma2(docs):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CL100K), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|begin_of_text|>", "<|pad|>"]
    tok.train_from_iterator(docs, bpe_trainer(8000, specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("[CLS]", single_word=True, special=False, normalized=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok, False  # <mask> strips the spaces around it


def build_llama2(docs, metaspace):
    # Train on characters seen at least 50 times (a small alphabet), so byte fallback and
    # <unk> are exercised; then lay the vocabulary out as Llama-2's: <unk>, <s>, </s>, the 256
    # byte tokens, then the merges' tokens.
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    trainer = bpe_trainer(6000, ["<unk>", "<s>", "</s>"], limit_alphabet=150)
    tok.train_from_iterator(docs, trainer)
    doc = json.loads(tok.to_str())
    old = doc["model"]["vocab"]
    order = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    order += [t for t, _ in sorted(old.items(), key=lambda kv: kv[1]) if t not in order]
    doc["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    doc["added_tokens"] = [dict(a, id=order.index(a["content"])) for a in doc["added_tokens"]]
    doc["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    tok = Tokenizer.from_str(json.dumps(doc))
    if metaspace:  # a token that swallows the spaces before it, next to prepend_scheme "first"
        tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, special=True, normalized=False)])
    return tok, False


def build_bert(docs):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(docs, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    return tok, False


def build_normalized(docs):
    tok = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                           normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.train_from_iterator(docs, bpe_trainer(5000, ["[UNK]", "<s>"], end_of_word_suffix="</w>", limit_alphabet=300))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A <s>", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    # Matched in normalized text (after NFKC, Lowercase, Replace): "hello world" in any case.
    tok.add_tokens([AddedToken("Hello World", normalized=True), AddedToken("Σίσυφος", normalized=True, single_word=True),
                    AddedToken("it's", normalized=True, rstrip=True)])
    return tok, False


def build_wordlevel(docs):
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.train_from_iterator(docs, trainers.WordLevelTrainer(vocab_size=6000, special_tokens=["[UNK]"], show_progress=False))
    return tok, False


def build_unigram(docs):
    # Trained on the fortunes only, so CJK, emoji and the rarer scripts of the generated text
    # are unknown; byte tokens appended with byte_fallback spell them.
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="always")])
    fortunes_only = [d for d in docs if d.isascii()]
    tok.train_from_iterator(fortunes_only, trainers.UnigramTrainer(vocab_size=4000, special_tokens=["<unk>", "<s>"],
                                                                   unk_token="<unk>", show_progress=False))
    doc = json.loads(tok.to_str())
    doc["model"]["vocab"] += [[f"<0x{b:02X}>", -30.0] for b in range(256) if b % 7]  # some bytes missing
    doc["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(doc)), False


def build_bert_truncated(docs):
    tok, _ = build_bert(docs)
    tok.enable_truncation(max_length=40, stride=0, strategy="longest_first", direction="left")
    tok.enable_padding(direction="right", pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]", pad_to_multiple_of=16)
    return tok, False


def build_wordlevel_padded(docs):
    tok, _ = build_wordlevel(docs)
    tok.enable_truncation(max_length=30, stride=2, strategy="only_first", direction="right")
    tok.enable_padding(direction="left", pad_id=0, pad_token="[UNK]", length=32)
    return tok, False


def write_fixture(path, tok, docs):
    if tok.padding:  # encode_batch would pad every document to the batch's longest
        ids_plain = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        ids_special = [tok.encode(d, add_special_tokens=True).ids for d in docs]
    else:
        ids_plain = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]
        ids_special = [e.ids for e in tok.encode_batch(docs, add_special_tokens=True)]
    decoded = tok.decode_batch(ids_special, skip_special_tokens=False)
    decoded_skip = tok.decode_batch(ids_special, skip_special_tokens=True)
    roundtrip = sum(tok.decode(ids, skip_special_tokens=False) == d for ids, d in zip(ids_plain, docs))

    def blob(b):
        return struct.pack("<I", len(b)) + b

    def id_blob(ids):
        return struct.pack("<I", len(ids)) + struct.pack(f"<{len(ids)}i", *ids)

    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(docs)))
        for d, a, s, x, y in zip(docs, ids_plain, ids_special, decoded, decoded_skip):
            f.write(blob(d.encode()) + id_blob(a) + id_blob(s) + blob(x.encode()) + blob(y.encode()))
    return sum(len(i) for i in ids_plain), roundtrip


def throughput(path, docs):
    """Single-thread encode MB/s of a freshly loaded tokenizer (cold cache), the best of three,
    in process CPU time: the machine may be shared, and wall time would count the waiting."""
    nbytes = sum(len(d.encode()) for d in docs)
    best = 0.0
    for _ in range(3):
        tok = Tokenizer.from_file(path)
        t = time.process_time()
        tok.encode_batch(docs, add_special_tokens=False)
        best = max(best, nbytes / (time.process_time() - t) / 1e6)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--core-tests", required=True)
    ap.add_argument("--keep", help="write the fixtures here and keep them")
    args = ap.parse_args()
    docs = corpus()
    nbytes = sum(len(d.encode()) for d in docs)
    print(f"corpus: {len(docs)} documents, {nbytes} bytes")
    assert nbytes >= 1_000_000
    builders = {"gpt2": build_gpt2, "dolma2": build_dolma2, "llama2": lambda d: build_llama2(d, False),
                "metaspace": lambda d: build_llama2(d, True), "bert": build_bert, "normalized": build_normalized,
                "wordlevel": build_wordlevel, "unigram": build_unigram, "bert_truncated": build_bert_truncated,
                "wordlevel_padded": build_wordlevel_padded}
    tmp = tempfile.TemporaryDirectory()
    out = args.keep or tmp.name
    os.makedirs(out, exist_ok=True)
    # The first megabyte of the corpus for throughput.
    bench_docs, bench_bytes = 0, 0
    while bench_bytes < 1_000_000:
        bench_bytes += len(docs[bench_docs].encode())
        bench_docs += 1
    manifest = []
    for kind, build in builders.items():
        tok, lossless = build(docs)
        path = os.path.join(out, f"{kind}.json")
        tok.save(path)
        tokens, roundtrip = write_fixture(os.path.join(out, f"{kind}.bin"), tok, docs)
        print(f"{kind}: vocab {tok.get_vocab_size()}, {tokens} tokens, tokenizers decode(encode(x)) == x for "
              f"{roundtrip}/{len(docs)}")
        if lossless:
            assert roundtrip == len(docs), kind
        manifest.append({"kind": kind, "lossless": lossless, "bench_docs": bench_docs})
    for entry in manifest:
        entry["tokenizers_mbps"] = throughput(os.path.join(out, entry["kind"] + ".json"), docs[:bench_docs])
        print(f"{entry['kind']}: tokenizers single-thread encode {entry['tokenizers_mbps']:.2f} MB/s "
              f"({bench_bytes} bytes, CPU time)")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    env = dict(os.environ, OLM_TOKENIZER_PARITY_DIR=out)
    r = subprocess.run([args.core_tests, "--gtest_filter=TokenizerParity.*"], env=env)
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
