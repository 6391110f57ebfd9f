#!/usr/bin/env python3
"""Tokenization throughput: `olm tokenize` against the `tokenizers` package's batch encode
(Tokenizer.encode_batch, its Rust core) on the same documents and the same CPU threads, in one
invocation. With a SentencePiece model the `sentencepiece` package's encode (its C++ core, the
same threads) is measured too.

Each side runs end to end in its own process, as a user runs it: load the tokenizer, read the
documents (JSON lines, one per fortune of the Debian `fortunes` collections, repeated to
--megabytes), encode them all, write the ids with EOS between documents as a uint32 .npy file.
The sides run interleaved (A B [C] A B [C] ...), so a change of machine load falls on all of
them alike; reported are the median wall time of each, the median of the per-round ratios with
their spread (min..max), and the load average before each round. The ids of every side are
compared with olm's.

The tokenizers side needs a tokenizer.json: --tokenizer may be one (or a model directory), or a
SentencePiece .model, which is converted with transformers' LlamaTokenizerFast (exact for a
Llama-style model: BPE, byte fallback, identity normalizer; other SentencePiece models convert
approximately, and the id comparison says how closely).

    ~/.cache/olm/venv/bin/python benchmarks/bench_tokenize.py --olm build/bin/olm --tokenizer tok.model \\
        [--threads 2] [--rounds 3] [--megabytes 16]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

FORTUNES = "/usr/share/games/fortunes"


def corpus(megabytes):
    docs = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith((".dat", ".u8")) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            docs += [d for d in f.read().split("\n%\n") if d.strip()]
    out, size = [], 0
    while size < megabytes * 1e6:
        for d in docs:
            out.append(d)
            size += len(d.encode("utf-8"))
    return out, size


def worker(args):
    """One reference side, end to end (timed by the parent)."""
    import numpy as np
    docs = []
    with open(args.docs, encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
    t0 = time.perf_counter()
    if args.worker == "tokenizers":
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(args.tokenizer)
        eos = tok.token_to_id(args.eos_token)
        ids = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]
    else:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
        eos = sp.eos_id()
        ids = sp.encode(docs, num_threads=args.threads)
    encode_s = time.perf_counter() - t0
    flat = np.fromiter((i for doc in ids for i in (*doc, eos)), dtype="<u4")
    np.save(args.out, flat)
    print(json.dumps({"encode_s": encode_s}))


def load_ids(path):
    import numpy as np
    return np.load(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--olm", help="the olm binary (build/bin/olm)")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json, a model directory or a SentencePiece .model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--megabytes", type=float, default=16)
    ap.add_argument("--worker", choices=["tokenizers", "sentencepiece"], help=argparse.SUPPRESS)
    ap.add_argument("--docs", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--eos-token", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if not args.olm:
        ap.error("--olm is required")

    work = tempfile.mkdtemp(prefix="olm_bench_tokenize_")
    docs, size = corpus(args.megabytes)
    docs_path = os.path.join(work, "docs.jsonl")
    with open(docs_path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")

    path = args.tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json") if os.path.exists(os.path.join(path, "tokenizer.json")) \
            else os.path.join(path, "tokenizer.model")
    is_json = open(path, "rb").read(64).lstrip().startswith(b"{")
    if is_json:
        tokenizer_json, sp_model = path, None
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(path)
        eos_token = next((tok for tok in ("</s>", "<|endoftext|>", "<|end_of_text|>", "[SEP]") if t.token_to_id(tok) is not None), None)
    else:
        from transformers import LlamaTokenizerFast
        sp_model = path
        tokenizer_json = os.path.join(work, "tokenizer.json")
        # add_bos/eos off: the benchmark encodes without special tokens on every side.
        fast = LlamaTokenizerFast(vocab_file=path, from_slow=True, legacy=True, add_bos_token=False,
                                  add_eos_token=False)
        fast.backend_tokenizer.save(tokenizer_json)
        eos_token = "</s>"

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    sides = {
        "olm": [args.olm, "tokenize", "--threads", str(args.threads), "--tokenizer", path, "--jsonl", "--add-eos",
                "--dtype", "uint32", "--force", "--out", os.path.join(work, "olm.npy"), docs_path],
        "tokenizers": [sys.executable, os.path.abspath(__file__), "--worker", "tokenizers", "--tokenizer", tokenizer_json,
                       "--docs", docs_path, "--out", os.path.join(work, "tokenizers.npy"), "--eos-token", eos_token,
                       "--threads", str(args.threads)],
    }
    if sp_model:
        sides["sentencepiece"] = [sys.executable, os.path.abspath(__file__), "--worker", "sentencepiece", "--tokenizer",
                                  sp_model, "--docs", docs_path, "--out", os.path.join(work, "sentencepiece.npy"),
                                  "--threads", str(args.threads)]
    times = {name: [] for name in sides}
    loads = []
    for r in range(args.rounds):
        loads.append(open("/proc/loadavg").read().split()[:3])
        for name, cmd in sides.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: load {' '.join(loads[-1])}; " +
              ", ".join(f"{n} {times[n][-1]:.2f} s" for n in sides), flush=True)

    olm_ids = load_ids(os.path.join(work, "olm.npy"))
    print(f"\n{len(docs)} documents, {size / 1e6:.1f} MB, {len(olm_ids)} ids (EOS included), {args.threads} threads, "
          f"tokenizer {os.path.basename(path)}")
    for name in sides:
        med = statistics.median(times[name])
        line = f"{name:>13}: median {med:.2f} s ({size / 1e6 / med:.1f} MB/s)"
        if name != "olm":
            ratios = [b / a for a, b in zip(times["olm"], times[name])]
            ids = load_ids(os.path.join(work, f"{name}.npy"))
            same = len(ids) == len(olm_ids) and bool((ids == olm_ids).all())
            line += (f"; olm speedup {statistics.median(ratios):.2f}x (spread {min(ratios):.2f}..{max(ratios):.2f}x)"
                     f"; ids {'identical' if same else 'DIFFER (%d vs %d ids)' % (len(ids), len(olm_ids))}")
        print(line)


if __name__ == "__main__":
    main()
