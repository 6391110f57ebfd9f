#!/usr/bin/env python3
"""Generation, batch 1: `olm generate` against a plain PyTorch loop with a KV cache
(transformers' Olmo2ForCausalLM called token by token with its past_key_values, greedy), on the
same weights, prompt, threads and machine.

olm writes a random-weight olmo2 preset model as a Hugging Face directory
(olm_model_save_hf_dir); both sides load that directory in float32. Each side runs in its own
process (one LibTorch each, nothing shared), interleaved A B A B ... (--pairs), with the load
average read around each pair. Reported: time to first token (the prompt's forward and the first
sample) and decode tokens/s after it, as medians with the per-pair ratio spread; the greedy
tokens of the two sides must be equal.

    ~/.cache/olm/venv/bin/python benchmarks/bench_generate.py --olm build/bin/olm --lib build/libolm.so \\
        [--preset olmo2_30M] [--prompt-tokens 128] [--new-tokens 64] [--pairs 3] [--threads 2]
"""
import argparse
import ctypes as C
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def write_model(lib_path, preset, vocab, directory):
    """An olm preset model with initialised weights, as a Hugging Face directory."""
    lib = C.CDLL(lib_path)
    lib.olm_error_message.restype = C.c_char_p
    for name in ("olm_config_from_preset", "olm_model_create", "olm_model_save_hf_dir"):
        getattr(lib, name).restype = C.c_void_p

    def check(err):
        if err:
            raise RuntimeError(lib.olm_error_message(C.c_void_p(err)).decode())

    config, model = C.c_void_p(), C.c_void_p()
    check(lib.olm_config_from_preset(preset.encode(), C.c_int64(vocab), C.byref(config)))
    check(lib.olm_model_create(config, b"cpu", None, C.byref(model)))
    check(lib.olm_model_save_hf_dir(model, directory.encode(), None))


def torch_worker(args):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.dir, torch_dtype=torch.float32).eval()
    prompt = torch.tensor([json.loads(args.prompt)], dtype=torch.long)
    tokens = []
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(prompt, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        first = time.perf_counter()
        tokens.append(token)
        past = out.past_key_values
        for _ in range(args.new_tokens - 1):
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            tokens.append(token)
        last = time.perf_counter()
    print(json.dumps({"time_to_first_token_s": first - start,
                      "decode_tokens_per_s": (len(tokens) - 1) / (last - first), "tokens": tokens}))


def run_olm(args, directory, prompt):
    cmd = [args.olm, "generate", "--hf", directory, "--prompt-ids", ",".join(map(str, prompt)),
           "--max-new-tokens", str(args.new_tokens), "--temperature", "0", "--timing",
           "--threads", str(args.threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    result["tokens"] = [int(t) for t in done.stdout.split()]
    return result


def run_torch(args, directory, prompt):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--dir", directory, "--prompt", json.dumps(prompt),
           "--new-tokens", str(args.new_tokens), "--threads", str(args.threads)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--olm", default="build/bin/olm")
    p.add_argument("--lib", default="build/libolm.so")
    p.add_argument("--preset", default="olmo2_30M")
    p.add_argument("--vocab", type=int, default=16384)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir")
    p.add_argument("--prompt")
    args = p.parse_args()
    if args.worker:
        return torch_worker(args)

    import numpy as np
    prompt = np.random.default_rng(0).integers(0, args.vocab, size=args.prompt_tokens).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "hf")
        write_model(args.lib, args.preset, args.vocab, directory)
        rows = []
        for i in range(args.pairs):
            before = load_average()
            ours = run_olm(args, directory, prompt)
            ref = run_torch(args, directory, prompt)
            after = load_average()
            same = ours["tokens"] == ref["tokens"]
            rows.append((ours, ref, before, after, same))
            print(f"pair {i + 1}: olm TTFT {ours['time_to_first_token_s'] * 1e3:.1f} ms, decode "
                  f"{ours['decode_tokens_per_s']:.1f} tok/s; PyTorch TTFT {ref['time_to_first_token_s'] * 1e3:.1f} ms, "
                  f"decode {ref['decode_tokens_per_s']:.1f} tok/s; load {before:.2f} -> {after:.2f}; "
                  f"greedy tokens {'equal' if same else 'DIFFER'}", flush=True)
    ttft = [o["time_to_first_token_s"] / r["time_to_first_token_s"] for o, r, *_ in rows]
    decode = [o["decode_tokens_per_s"] / r["decode_tokens_per_s"] for o, r, *_ in rows]
    print(f"\n{args.preset}, vocab {args.vocab}, prompt {args.prompt_tokens} tokens, {args.new_tokens} new, "
          f"{args.threads} threads, {args.pairs} interleaved pairs")
    print(f"  time to first token, olm / PyTorch: median {statistics.median(ttft):.2f}x "
          f"({min(ttft):.2f}..{max(ttft):.2f})")
    print(f"  decode tokens/s, olm / PyTorch:     median {statistics.median(decode):.2f}x "
          f"({min(decode):.2f}..{max(decode):.2f})")
    sys.exit(0 if all(r[4] for r in rows) else 1)


if __name__ == "__main__":
    main()
