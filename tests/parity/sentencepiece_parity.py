#!/usr/bin/env python3
"""SentencePiece parity between olm (core/tokenizer over Debian's libsentencepiece) and the
Python sentencepiece package (pinned in the test venv), on more than 1 MB of varied text.

Trains three models with the Python package on the corpus: a byte-fallback BPE with an identity
normalizer that keeps whitespace (lossless), a unigram with the default nmt_nfkc normalizer, and
a unigram with nmt_nfkc and byte fallback. Writes, for every text, the package's
encode(text) ids and decode(ids) text into a fixture, and runs olm_core_tests'
TokenizerSentencePiece.ParityWithThePythonPackage on it (which also checks lossless() and, where
true, decode(encode(x)) == x). BPE ids must be identical on every text; unigram ids too, except
where two segmentations have exactly equal scores, which Debian's libsentencepiece 0.1.97 and the
package's 0.2.3 break differently (the test proves each such case is a tie, and counts them).

Corpus: every fortune of the Debian `fortunes` collections (one text per fortune), plus
generated texts: accented Latin, Greek, Cyrillic, CJK, Arabic, emoji (with modifiers and ZWJ
sequences), whitespace runs (spaces, tabs, newlines, no-break and ideographic spaces), digits and
numbers, and source code.
"""
import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile

import sentencepiece as spm

FORTUNES = "/usr/share/games/fortunes"


def fortunes():
    texts = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith((".dat", ".u8")) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            texts += [t for t in f.read().split("\n%\n") if t.strip()]
    return texts


def generated(rng, count):
    words = {
        "latin": ["café", "naïve", "résumé", "Straße", "Ångström", "façade", "jalapeño", "Œuvre", "dŭo", "Łódź"],
        "greek": ["αλφα", "βήτα", "γάμμα", "Δέλτα", "λόγος", "ψυχή"],
        "cyrillic": ["привет", "мир", "Москва", "ёжик", "щука", "Україна"],
        "cjk": ["日本語", "中文", "한국어", "東京", "漢字", "ひらがな", "カタカナ"],
        "arabic": ["مرحبا", "العالم", "كتاب"],
        "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇩🇪", "✨", "🦀", "❤️", "🏳️‍🌈"],
        "space": [" ", "  ", "\t", "\n", "\n\n", "    ", "\u00a0", "\u3000", " \t \n"],
        "digits": ["0", "42", "3.14159", "2026-12-03", "1,000,000", "0xDEADBEEF", "1e-7", "-17", "99%"],
        "code": ["def f(x):\n    return x ** 2\n", "int main(void) { return 0; }", "fn main() { println!(\"{}\", 1); }",
                 "for (i = 0; i < n; ++i) a[i] += b[i];", "SELECT * FROM t WHERE id = 7;", "<div class=\"x\">&amp;</div>",
                 "x = {'a': [1, 2], \"b\": None}", "#include <stdio.h>", "$ ls -la | grep '^d'"],
    }
    kinds = list(words)
    texts = []
    for _ in range(count):
        n = rng.randint(1, 40)
        parts = []
        for _ in range(n):
            kind = rng.choice(kinds)
            parts.append(rng.choice(words[kind]))
            parts.append(rng.choice(["", " ", " ", "  ", "\t", "\n"]))
        texts.append("".join(parts))
    return texts


def write_records(path, records):
    with open(path, "wb") as f:
        for r in records:
            f.write(struct.pack("<I", len(r)))
            f.write(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--core-tests", required=True, help="the olm_core_tests binary")
    ap.add_argument("--keep", help="write the fixture here and keep it")
    args = ap.parse_args()

    rng = random.Random(1234)
    texts = fortunes() + generated(rng, 6000)
    rng.shuffle(texts)
    total = sum(len(t.encode("utf-8")) for t in texts)
    assert total >= 1_000_000, f"corpus has only {total} bytes"

    work = args.keep or tempfile.mkdtemp(prefix="olm_spm_parity_")
    os.makedirs(work, exist_ok=True)
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(t.replace("\n", " ") + "\n")

    models = {
        # name: (trainer options, lossless)
        "bpe_bytes_identity": (dict(model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                                    remove_extra_whitespaces=False), True),
        "unigram_nfkc": (dict(model_type="unigram"), False),
        "unigram_bytes_nfkc": (dict(model_type="unigram", byte_fallback=True), False),
    }
    write_records(os.path.join(work, "texts.bin"), [t.encode("utf-8") for t in texts])
    with open(os.path.join(work, "manifest.txt"), "w") as manifest:
        for name, (options, lossless) in models.items():
            prefix = os.path.join(work, name)
            spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=4000, minloglevel=2,
                                           character_coverage=0.9995, **options)
            sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
            ids = [sp.encode(t) for t in texts]
            decoded = [sp.decode(i) for i in ids]
            if lossless:
                bad = sum(d != t for d, t in zip(decoded, texts))
                assert bad == 0, f"{name}: the package itself does not round-trip {bad} texts"
            write_records(prefix + ".ids.bin", [struct.pack(f"<{len(i)}i", *i) for i in ids])
            write_records(prefix + ".decoded.bin", [d.encode("utf-8") for d in decoded])
            manifest.write(f"{name} {options['model_type']} {int(lossless)}\n")
            print(f"{name}: {len(texts)} texts, {total} bytes, {sum(map(len, ids))} tokens")

    env = dict(os.environ, OLM_SENTENCEPIECE_PARITY_DIR=work)
    proc = subprocess.run([args.core_tests, "--gtest_filter=TokenizerSentencePiece.ParityWithThePythonPackage"],
                          env=env, capture_output=True, text=True)
    sys.stdout.write(proc.stdout[-6000:])
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode != 0:
        sys.exit(f"olm_core_tests failed (exit {proc.returncode})")
    if proc.stdout.count("[parity]") != len(models) or "[  SKIPPED ]" in proc.stdout:
        sys.exit("the parity test did not check every model")
    print("sentencepiece parity: OK")


if __name__ == "__main__":
    main()
