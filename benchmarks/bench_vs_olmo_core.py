#!/usr/bin/env python3
"""Training throughput: olm (`olm bench`) against OLMo-core (PyTorch eager) on the same
machine, in one invocation, on the same token batches with the same optimizer (AdamW, no
weight decay on the embeddings, as OLMo-core's recipes).

Each side runs in its own process so peak resident memory is its own. Reports tokens/s,
step time, the olm/OLMo-core ratios, and checks that the first 10 losses agree (float32,
1e-4 relative).

    python benchmarks/bench_vs_olmo_core.py --olm build/bin/olm [--device cuda] [--results benchmarks/RESULTS.md]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIGS = [
    # (label, preset, vocab, seq_len, batch, measured steps)
    ("olmo2_30M-shaped, vocab 16384, seq 256, batch 16", "olmo2_30M", 16384, 256, 16, 10),
    ("olmo2_1M-shaped, vocab 16384, seq 256, batch 1 (overhead-bound)", "olmo2_1M", 16384, 256, 1, 40),
]
WARMUP = 3
LR = 1e-3


def olmo_core_worker(args):
    import torch
    from olmo_core.nn.transformer import TransformerConfig

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = getattr(TransformerConfig, args.preset)(vocab_size=args.vocab)
    model = cfg.build(init_device="cpu")
    model.init_weights(device=torch.device("cpu"))
    model.to(device)
    model.train()
    emb = [p for n, p in model.named_parameters() if n == "embeddings.weight"]
    rest = [p for n, p in model.named_parameters() if n != "embeddings.weight"]
    optim = torch.optim.AdamW([{"params": emb, "weight_decay": 0.0}, {"params": rest}], lr=LR,
                              weight_decay=0.01, fused=True)
    batches = np.fromfile(args.batches, dtype=np.int64).reshape(-1, args.batch, args.seq_len)
    losses, times = [], []
    for step, ids in enumerate(batches):
        t0 = time.perf_counter()
        input_ids = torch.from_numpy(ids).to(device)
        labels = torch.nn.functional.pad(input_ids[:, 1:], (0, 1), value=-100)
        n_tokens = (labels != -100).sum()
        out = model(input_ids, labels=labels, loss_reduction="sum", loss_div_factor=n_tokens)
        out.loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        loss = float(out.ce_loss)  # a host sync every step, as olm reports its metrics
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    measured = times[WARMUP:]
    print(json.dumps({"losses": losses, "step_seconds": sum(measured) / len(measured),
                      "peak_rss_mib": peak, "gpu_peak_mib": gpu_peak}))


def run_olm(args, preset, vocab, seq, batch, steps, batches_path, losses_path):
    cmd = [args.olm, "bench", "--preset", preset, "--vocab", str(vocab), "--seq-len", str(seq),
           "--batch", str(batch), "--steps", str(steps), "--warmup", str(WARMUP), "--lr", str(LR),
           "--batches", batches_path, "--losses", losses_path, "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["losses"] = [float(x) for x in open(losses_path).read().split()]
    return result


def run_olmo_core(args, preset, vocab, seq, batch, batches_path):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--preset", preset, "--vocab", str(vocab),
           "--seq-len", str(seq), "--batch", str(batch), "--batches", batches_path, "--device", args.device,
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--olm", default="build/bin/olm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--results", help="append a results section to this Markdown file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset")
    p.add_argument("--vocab", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--batches")
    args = p.parse_args()
    if args.worker:
        return olmo_core_worker(args)

    import torch
    rows = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for label, preset, vocab, seq, batch, steps in CONFIGS:
            rng = np.random.default_rng(0)
            ids = rng.integers(0, vocab, size=(WARMUP + steps, batch, seq), dtype=np.int64)
            batches_path = os.path.join(tmp, "batches.bin")
            ids.tofile(batches_path)
            ours = run_olm(args, preset, vocab, seq, batch, steps, batches_path, os.path.join(tmp, "losses.txt"))
            ref = run_olmo_core(args, preset, vocab, seq, batch, batches_path)
            ours_tps = batch * seq / ours["step_seconds"]
            ref_tps = batch * seq / ref["step_seconds"]
            rel = max(abs(a - b) / abs(b) for a, b in zip(ours["losses"][:10], ref["losses"][:10]))
            ok = ok and rel <= 1e-4
            rows.append((label, ours_tps, ref_tps, ours["step_seconds"], ref["step_seconds"],
                         ours["peak_rss_mib"], ref["peak_rss_mib"], rel))
            print(f"{label}\n  olm       {ours_tps:10.1f} tok/s  {ours['step_seconds']*1e3:8.2f} ms/step  "
                  f"peak RSS {ours['peak_rss_mib']:.0f} MiB\n  OLMo-core {ref_tps:10.1f} tok/s  "
                  f"{ref['step_seconds']*1e3:8.2f} ms/step  peak RSS {ref['peak_rss_mib']:.0f} MiB\n"
                  f"  ratio olm/OLMo-core: throughput {ours_tps/ref_tps:.2f}x, peak memory "
                  f"{ours['peak_rss_mib']/ref['peak_rss_mib']:.2f}x; first 10 losses max rel diff {rel:.1e}",
                  flush=True)
    if args.results:
        import olmo_core
        with open(args.results, "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d')}, {args.device}, {platform.processor() or platform.machine()}, "
                    f"{os.cpu_count()} cores, torch {torch.__version__}, ai2-olmo-core "
                    f"{getattr(olmo_core, '__version__', '3.0.0')}\n\n")
            f.write("| config | olm tok/s | OLMo-core tok/s | throughput ratio | olm ms/step | OLMo-core ms/step "
                    "| peak RSS ratio | first-10-loss max rel diff |\n|---|---|---|---|---|---|---|---|\n")
            for label, a, b, sa, sb, ma, mb, rel in rows:
                f.write(f"| {label} | {a:.0f} | {b:.0f} | {a/b:.2f}x | {sa*1e3:.1f} | {sb*1e3:.1f} | "
                        f"{ma/mb:.2f}x ({ma:.0f} / {mb:.0f} MiB) | {rel:.1e} |\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
