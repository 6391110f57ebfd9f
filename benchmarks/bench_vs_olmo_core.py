#!/usr/bin/env python3
"""Training throughput: olm (`olm bench`) against OLMo-core (PyTorch eager) on the same
machine, in one invocation, on the same token batches with the same optimizer (AdamW, no
weight decay on the embeddings, as OLMo-core's recipes).

The two sides are interleaved, A B A B ..., --pairs times per config, each run in its own
process so peak resident memory is its own; the load average is read before and after each
pair. A change of machine load between two runs would otherwise become the ratio: each pair
gives one ratio, and the report is the median ratio with the spread (min..max) over pairs.
Where the spread reaches past 1.0 the run makes no claim either way and says so.

Checks that the first 10 losses agree (float32, 1e-4 relative) in every pair.

--bf16-autocast runs both sides under bfloat16 autocast instead (olm: `olm bench --bf16`;
OLMo-core: torch.autocast around the forward and loss, as its trainer does with
autocast_precision; float32 master weights and optimizer on both), with a looser loss check
(1e-2 relative: the two sides' bf16 roundings need not fall alike), and then, separately,
interleaved pairs of olm in float32 and olm under bf16 autocast: olm's own bf16 speed-up and
how far its losses move from float32's.

    python benchmarks/bench_vs_olmo_core.py --olm build/bin/olm [--pairs 3] [--device cuda] [--bf16-autocast] [--results benchmarks/RESULTS.md]
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
LOSS_RTOL = {False: 1e-4, True: 1e-2}  # keyed by bf16 autocast


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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16_autocast):
            out = model(input_ids, labels=labels, loss_reduction="sum", loss_div_factor=n_tokens)
        out.loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        loss = float(out.ce_loss)  # a host sync every step, as olm reports its metrics
        del out  # OLMo-core's trainer does not keep the logits alive into the next step
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    measured = times[WARMUP:]
    print(json.dumps({"losses": losses, "step_seconds": sum(measured) / len(measured),
                      "peak_rss_mib": peak, "gpu_peak_mib": gpu_peak}))


def run_olm(args, preset, vocab, seq, batch, steps, batches_path, losses_path, bf16):
    cmd = [args.olm, "bench", "--preset", preset, "--vocab", str(vocab), "--seq-len", str(seq),
           "--batch", str(batch), "--steps", str(steps), "--warmup", str(WARMUP), "--lr", str(LR),
           "--batches", batches_path, "--losses", losses_path, "--device", args.device] + (["--bf16"] if bf16 else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["losses"] = [float(x) for x in open(losses_path).read().split()]
    return result


def run_olmo_core(args, preset, vocab, seq, batch, batches_path):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--preset", preset, "--vocab", str(vocab),
           "--seq-len", str(seq), "--batch", str(batch), "--batches", batches_path, "--device", args.device,
           "--threads", str(args.threads)] + (["--bf16-autocast"] if args.bf16_autocast else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def verdict(ratios, what):
    """A claim only where every pair agrees on the side of 1.0."""
    lo, hi = min(ratios), max(ratios)
    if lo > 1.0:
        return f"olm {what} in every pair"
    if hi < 1.0:
        return f"OLMo-core {what} in every pair"
    return "no claim: the spread over pairs includes 1.0"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--olm", default="build/bin/olm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--pairs", type=int, default=3, help="interleaved olm/OLMo-core pairs per config")
    p.add_argument("--configs", default="all", help="comma-separated indexes into CONFIGS, or 'all'")
    p.add_argument("--results", help="append a results section to this Markdown file")
    p.add_argument("--bf16-autocast", action="store_true",
                   help="both sides under bfloat16 autocast, then olm float32 against olm bf16")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset")
    p.add_argument("--vocab", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--batches")
    args = p.parse_args()
    if args.worker:
        return olmo_core_worker(args)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    configs = CONFIGS if args.configs == "all" else [CONFIGS[int(i)] for i in args.configs.split(",")]

    import torch
    rows = []
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for label, preset, vocab, seq, batch, steps in configs:
            rng = np.random.default_rng(0)
            ids = rng.integers(0, vocab, size=(WARMUP + steps, batch, seq), dtype=np.int64)
            batches_path = os.path.join(tmp, "batches.bin")
            ids.tofile(batches_path)
            pairs = []
            print(label, flush=True)
            for i in range(args.pairs):
                load_before = load_average()
                ours = run_olm(args, preset, vocab, seq, batch, steps, batches_path, os.path.join(tmp, "losses.txt"),
                               args.bf16_autocast)
                ref = run_olmo_core(args, preset, vocab, seq, batch, batches_path)
                load_after = load_average()
                rel = max(abs(a - b) / abs(b) for a, b in zip(ours["losses"][:10], ref["losses"][:10]))
                ok = ok and rel <= LOSS_RTOL[args.bf16_autocast]
                pair = {"olm_s": ours["step_seconds"], "ref_s": ref["step_seconds"],
                        "olm_mib": ours["peak_rss_mib"], "ref_mib": ref["peak_rss_mib"],
                        "load": (load_before, load_after), "rel": rel}
                pairs.append(pair)
                print(f"  pair {i + 1}: olm {ours['step_seconds'] * 1e3:8.1f} ms/step, OLMo-core "
                      f"{ref['step_seconds'] * 1e3:8.1f} ms/step, throughput ratio "
                      f"{ref['step_seconds'] / ours['step_seconds']:.2f}x, peak RSS "
                      f"{ours['peak_rss_mib']:.0f} / {ref['peak_rss_mib']:.0f} MiB, load "
                      f"{load_before:.2f} -> {load_after:.2f}, first-10-loss max rel diff {rel:.1e}", flush=True)
            speed = [q["ref_s"] / q["olm_s"] for q in pairs]  # olm tokens/s over OLMo-core's
            memory = [q["olm_mib"] / q["ref_mib"] for q in pairs]
            loads = [x for q in pairs for x in q["load"]]
            row = {"label": label, "tokens": batch * seq, "speed": speed, "memory": memory,
                   "olm_s": median([q["olm_s"] for q in pairs]), "ref_s": median([q["ref_s"] for q in pairs]),
                   "olm_mib": median([q["olm_mib"] for q in pairs]), "ref_mib": median([q["ref_mib"] for q in pairs]),
                   "load": (min(loads), max(loads)), "rel": max(q["rel"] for q in pairs)}
            rows.append(row)
            print(f"  median throughput ratio {median(speed):.2f}x ({min(speed):.2f}..{max(speed):.2f} over "
                  f"{len(pairs)} pairs): {verdict(speed, 'faster')}; median peak memory ratio "
                  f"{median(memory):.2f}x ({min(memory):.2f}..{max(memory):.2f}); load "
                  f"{row['load'][0]:.2f}..{row['load'][1]:.2f}", flush=True)
            if args.bf16_autocast:
                row["own"] = olm_bf16_against_float32(args, preset, vocab, seq, batch, steps, batches_path, tmp)
    if args.results:
        import olmo_core
        with open(args.results, "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d')}, {args.device}, {platform.processor() or platform.machine()}, "
                    f"{os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, ai2-olmo-core "
                    f"{getattr(olmo_core, '__version__', '3.0.0')}, {args.pairs} interleaved pairs"
                    f"{', both sides under bf16 autocast' if args.bf16_autocast else ''}\n\n")
            f.write("| config | throughput ratio olm/OLMo-core, median (min..max) | verdict | olm ms/step | "
                    "OLMo-core ms/step | peak RSS ratio, median (min..max) | load average | first-10-loss max rel diff |\n"
                    "|---|---|---|---|---|---|---|---|\n")
            for r in rows:
                sp, me = r["speed"], r["memory"]
                f.write(f"| {r['label']} | {median(sp):.2f}x ({min(sp):.2f}..{max(sp):.2f}) | {verdict(sp, 'faster')} | "
                        f"{r['olm_s'] * 1e3:.1f} | {r['ref_s'] * 1e3:.1f} | {median(me):.2f}x ({min(me):.2f}..{max(me):.2f}; "
                        f"{r['olm_mib']:.0f} / {r['ref_mib']:.0f} MiB) | {r['load'][0]:.2f}..{r['load'][1]:.2f} | "
                        f"{r['rel']:.1e} |\n")
            if args.bf16_autocast:
                f.write("\nolm alone, float32 against bf16 autocast, interleaved:\n\n"
                        "| config | throughput ratio bf16/float32, median (min..max) | float32 ms/step | bf16 ms/step | "
                        "load average | last-step loss float32 / bf16 (abs diff) |\n|---|---|---|---|---|---|\n")
                for r in rows:
                    o = r["own"]
                    f.write(f"| {r['label']} | {median(o['speed']):.2f}x ({min(o['speed']):.2f}..{max(o['speed']):.2f}) | "
                            f"{o['fp32_s'] * 1e3:.1f} | {o['bf16_s'] * 1e3:.1f} | {o['load'][0]:.2f}..{o['load'][1]:.2f} | "
                            f"{o['last_fp32']:.6f} / {o['last_bf16']:.6f} ({abs(o['last_fp32'] - o['last_bf16']):.1e}) |\n")
    sys.exit(0 if ok else 1)


def olm_bf16_against_float32(args, preset, vocab, seq, batch, steps, batches_path, tmp):
    """olm's own bf16 autocast speed-up: float32 and bf16 runs interleaved, with the losses'
    distance after the measured steps (bf16 rounding; the runs see the same batches)."""
    pairs = []
    for i in range(args.pairs):
        load_before = load_average()
        fp32 = run_olm(args, preset, vocab, seq, batch, steps, batches_path, os.path.join(tmp, "fp32.txt"), False)
        bf16 = run_olm(args, preset, vocab, seq, batch, steps, batches_path, os.path.join(tmp, "bf16.txt"), True)
        load_after = load_average()
        pairs.append({"fp32_s": fp32["step_seconds"], "bf16_s": bf16["step_seconds"], "load": (load_before, load_after),
                      "last": (fp32["losses"][-1], bf16["losses"][-1])})
        print(f"  olm pair {i + 1}: float32 {fp32['step_seconds'] * 1e3:8.1f} ms/step, bf16 "
              f"{bf16['step_seconds'] * 1e3:8.1f} ms/step, ratio {fp32['step_seconds'] / bf16['step_seconds']:.2f}x, "
              f"last loss {fp32['losses'][-1]:.6f} / {bf16['losses'][-1]:.6f}, load {load_before:.2f} -> "
              f"{load_after:.2f}", flush=True)
    speed = [q["fp32_s"] / q["bf16_s"] for q in pairs]
    loads = [x for q in pairs for x in q["load"]]
    print(f"  olm bf16/float32 median throughput ratio {median(speed):.2f}x ({min(speed):.2f}..{max(speed):.2f})",
          flush=True)
    return {"speed": speed, "fp32_s": median([q["fp32_s"] for q in pairs]), "bf16_s": median([q["bf16_s"] for q in pairs]),
            "load": (min(loads), max(loads)), "last_fp32": pairs[0]["last"][0], "last_bf16": pairs[0]["last"][1]}


if __name__ == "__main__":
    main()
