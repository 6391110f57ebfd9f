#!/usr/bin/env python3
"""Training through olm's C ABI against OLMo-core's own optimizers, schedulers and loss
normalization (pip ai2-olmo-core), plus the trainer properties that need no reference:
micro-batch equivalence, bit-exact resume and NaN step skipping.
"""
import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olm_ctypes import Olm  # noqa: E402
from olmo_core_parity import to_olm_json  # noqa: E402

from olmo_core.data.utils import get_labels  # noqa: E402
from olmo_core.nn.transformer import TransformerConfig  # noqa: E402
from olmo_core.optim import Lion, SkipStepAdamW  # noqa: E402
from olmo_core.optim.scheduler import (  # noqa: E402
    WSD, ConstantWithWarmup, CosWithWarmup, InvSqrtWithWarmup, LinearWithWarmup)

SEQ, BATCH, STEPS = 16, 4, 6
VOCAB = 128


def model_config():
    return TransformerConfig.olmo2_30M(vocab_size=VOCAB, n_layers=2)


def batches(seed, n=STEPS):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, size=(BATCH, SEQ), dtype=np.int64) for _ in range(n)]


def train_json(model_json, optimizer, scheduler, micro_instances=2, extra=None):
    # As OLMo-core's training scripts (its optimizer default decays every parameter): no
    # weight decay on the embeddings, the reference runs' first parameter group below.
    optimizer = dict(optimizer, group_overrides=[{"params": ["embeddings.weight"], "weight_decay": 0.0}])
    cfg = {
        "model": model_json,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "sequence_length": SEQ,
        "global_batch_size": SEQ * BATCH,
        "rank_microbatch_size": SEQ * micro_instances,
        "max_steps": STEPS,
        "max_grad_norm": 1.0,
        "z_loss_multiplier": 1e-4,
    }
    cfg.update(extra or {})
    return json.dumps(cfg)


def olmo_core_run(optimizer_factory, scheduler, data, micro_instances=2, config=model_config):
    """OLMo-core's TransformerTrainModule.train_batch + optim_step, written out."""
    torch.manual_seed(0)
    model = config().build(init_device="cpu")
    model.init_weights(device=torch.device("cpu"))
    emb = [p for n, p in model.named_parameters() if n == "embeddings.weight"]
    rest = [p for n, p in model.named_parameters() if n != "embeddings.weight"]
    optim = optimizer_factory([{"params": emb, "weight_decay": 0.0}, {"params": rest}])
    for g in optim.param_groups:
        g["initial_lr"] = g["lr"]
    out = []
    for step, ids in enumerate(data, start=1):
        batch = {"input_ids": torch.from_numpy(ids)}
        labels = get_labels(batch)
        n_tokens = (labels != -100).sum()
        ce = torch.tensor(0.0)
        for start in range(0, BATCH, micro_instances):
            o = model(batch["input_ids"][start:start + micro_instances],
                      labels=labels[start:start + micro_instances], loss_reduction="sum",
                      z_loss_multiplier=1e-4, loss_div_factor=n_tokens)
            ce += o.ce_loss.detach()
            o.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if isinstance(optim, SkipStepAdamW):
            optim.latest_loss = ce
            optim.latest_grad_norm = grad_norm
        for g in optim.param_groups:
            g["lr"] = scheduler.get_lr(g["initial_lr"], step, STEPS)
        optim.step()
        model.post_optim_step()  # nGPT renormalizes its matrices here; others do nothing
        optim.zero_grad(set_to_none=True)
        out.append((float(ce), float(grad_norm), optim.param_groups[-1]["lr"]))
    return out, {k: v.detach().clone() for k, v in model.state_dict().items()}


def olm_run(olm, optimizer, scheduler, data, tmp, micro_instances=2, extra=None, config=model_config):
    model_json = to_olm_json(config())
    cfg = olm.config_from_json(json.dumps(model_json))
    model = olm.model(cfg)
    tcfg = olm.train_config(train_json(model_json, optimizer, scheduler, micro_instances, extra))
    trainer = olm.trainer(model, tcfg)
    out = [olm.step(trainer, ids) for ids in data]
    path = os.path.join(tmp, "olm_final.safetensors")
    olm.save(model, path)
    state = load_file(path)
    for h, free in ((trainer, "olm_trainer_free"), (tcfg, "olm_train_config_free"),
                    (model, "olm_model_free"), (cfg, "olm_config_free")):
        getattr(olm.lib, free)(h)
    return out, state


def compare_training(olm, tmp):
    data = batches(7)
    schedulers = [
        ("cos_with_warmup", {"name": "cos_with_warmup", "warmup": 2, "alpha_f": 0.1},
         CosWithWarmup(warmup=2, alpha_f=0.1)),
        ("linear_with_warmup", {"name": "linear_with_warmup", "warmup_fraction": 0.3},
         LinearWithWarmup(warmup_fraction=0.3)),
        ("wsd", {"name": "wsd", "warmup": 1, "decay": 2}, WSD(warmup=1, decay=2, decay_fraction=None)),
        ("inv_sqrt_with_warmup", {"name": "inv_sqrt_with_warmup", "warmup": 2},
         InvSqrtWithWarmup(warmup=2)),
        ("constant_with_warmup", {"name": "constant_with_warmup", "warmup": 3},
         ConstantWithWarmup(warmup=3)),
    ]
    optimizers = [
        ("adamw", {"name": "adamw", "lr": 3e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1},
         lambda groups: torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                          eps=1e-8, fused=True)),
        ("adam", {"name": "adam", "lr": 3e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1},
         lambda groups: torch.optim.Adam(groups, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                         eps=1e-8, fused=True)),
        ("lion", {"name": "lion", "lr": 1e-3, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1},
         lambda groups: Lion(groups, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)),
        ("skip_step_adamw", {"name": "skip_step_adamw", "lr": 3e-3, "beta1": 0.9, "beta2": 0.95,
                             "weight_decay": 0.1, "rolling_interval_length": 4, "sigma_factor": 6},
         lambda groups: SkipStepAdamW(groups, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                      rolling_interval_length=4, sigma_factor=6)),
        ("sgd", {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
         lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9, weight_decay=0.01)),
    ]
    pairs = [(optimizers[0], schedulers[0])] + [(o, schedulers[0]) for o in optimizers[1:]] + \
            [(optimizers[0], s) for s in schedulers[1:]]
    for (oname, ojson, ofactory), (sname, sjson, sched) in pairs:
        ref, ref_state = olmo_core_run(ofactory, sched, data)
        ours, our_state = olm_run(olm, ojson, sjson, data, tmp)
        loss_rel = max(abs(m.ce_loss - r[0]) / abs(r[0]) for m, r in zip(ours, ref))
        norm_rel = max(abs(m.grad_norm - r[1]) / abs(r[1]) for m, r in zip(ours, ref))
        lr_diff = max(abs(m.lr - r[2]) for m, r in zip(ours, ref))
        param_diff = max((our_state[k] - ref_state[k]).abs().max().item() for k in ref_state)
        print(f"  {oname:16s} {sname:22s} loss rel {loss_rel:.1e}  grad-norm rel {norm_rel:.1e}  "
              f"lr |diff| {lr_diff:.1e}  params |diff| {param_diff:.1e}")
        # float32 training: per-op rounding compounds over 6 steps; 1e-5 relative on the loss
        # and 1e-5 absolute on weights of scale ~0.02-1 is a few hundred ulps.
        assert loss_rel < 1e-5 and norm_rel < 1e-4 and lr_diff < 1e-12 and param_diff < 1e-5, oname


def normalized_training(olm, tmp):
    """nGPT: the trainer renormalizes the matrices after every step, as OLMo-core's post_optim_step."""
    data = batches(11)
    config = lambda: TransformerConfig.ngpt_like(d_model=64, vocab_size=VOCAB, n_layers=2, n_heads=4)  # noqa: E731
    ojson = {"name": "adamw", "lr": 3e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1}
    sjson = {"name": "cos_with_warmup", "warmup": 2, "alpha_f": 0.1}
    ref, ref_state = olmo_core_run(
        lambda groups: torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8, fused=True),
        CosWithWarmup(warmup=2, alpha_f=0.1), data, config=config)
    ours, our_state = olm_run(olm, ojson, sjson, data, tmp, config=config)
    loss_rel = max(abs(m.ce_loss - r[0]) / abs(r[0]) for m, r in zip(ours, ref))
    param_diff = max((our_state[k] - ref_state[k]).abs().max().item() for k in ref_state)
    print(f"  ngpt_like adamw cos_with_warmup: loss rel {loss_rel:.1e}  params |diff| {param_diff:.1e}")
    assert loss_rel < 1e-5 and param_diff < 1e-5


def micro_batch_equivalence(olm, tmp):
    data = batches(3, 1)
    sgd = {"name": "sgd", "lr": 1.0, "weight_decay": 0.0}
    states = []
    for micro in (4, 1):
        _, state = olm_run(olm, sgd, {"name": "constant"}, data, tmp, micro_instances=micro)
        states.append(state)
    # With SGD at lr 1 the weight change is the gradient: 4 micro-batches vs 1 big batch.
    diff = max((states[0][k] - states[1][k]).abs().max().item() for k in states[0])
    print(f"  4 micro-batches vs 1 batch: gradient |diff| {diff:.1e}")
    assert diff < 1e-6


def resume_exact(olm, tmp):
    data = batches(11, 6)
    model_json = to_olm_json(model_config())
    opt = {"name": "adamw", "lr": 1e-3}
    sched = {"name": "cos_with_warmup", "warmup": 2}
    cfg = olm.config_from_json(json.dumps(model_json))
    tcfg = olm.train_config(train_json(model_json, opt, sched))
    model = olm.model(cfg)
    trainer = olm.trainer(model, tcfg)
    for ids in data[:3]:
        olm.step(trainer, ids)
    ckpt = olm.save_checkpoint(trainer, os.path.join(tmp, "ckpt"))
    straight = [olm.step(trainer, ids).loss for ids in data[3:]]

    model2 = olm.model(cfg, init_weights=False)
    trainer2 = olm.trainer(model2, tcfg)
    olm.load_checkpoint(trainer2, os.path.join(tmp, "ckpt"))
    resumed = [olm.step(trainer2, ids).loss for ids in data[3:]]
    print(f"  resume from {os.path.basename(ckpt)}: {straight} vs {resumed}")
    assert straight == resumed, "resumed losses must be bit-identical"
    # The checkpoint's model file loads into OLMo-core unchanged.
    ref = model_config().build(init_device="cpu")
    ref.load_state_dict(load_file(os.path.join(ckpt, "model.safetensors")))
    for h, free in ((trainer, "olm_trainer_free"), (trainer2, "olm_trainer_free"), (model, "olm_model_free"),
                    (model2, "olm_model_free"), (tcfg, "olm_train_config_free"), (cfg, "olm_config_free")):
        getattr(olm.lib, free)(h)


def nan_step_is_skipped(olm, tmp):
    model_json = to_olm_json(model_config())
    cfg = olm.config_from_json(json.dumps(model_json))
    tcfg = olm.train_config(train_json(model_json, {"name": "adamw"}, {"name": "constant"}))
    model = olm.model(cfg)
    trainer = olm.trainer(model, tcfg)
    before = os.path.join(tmp, "before.safetensors")
    after = os.path.join(tmp, "after.safetensors")
    olm.save(model, before)
    ids = batches(5, 1)[0]
    labels = np.full_like(ids, -100)  # no targets: the normalized loss is 0/0
    m = olm.step(trainer, ids, labels)
    olm.save(model, after)
    a, b = load_file(before), load_file(after)
    assert m.skipped == 1 and m.skipped_steps == 1 and math.isnan(m.loss), (m.skipped, m.loss)
    assert all(torch.equal(a[k], b[k]) for k in a), "a skipped step must not change the weights"
    ok = olm.step(trainer, ids)
    assert ok.skipped == 0 and math.isfinite(ok.loss)
    print("  NaN loss: step skipped and counted, weights untouched; the next step trains")
    for h, free in ((trainer, "olm_trainer_free"), (model, "olm_model_free"),
                    (tcfg, "olm_train_config_free"), (cfg, "olm_config_free")):
        getattr(olm.lib, free)(h)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    olm = Olm(args.lib)
    with tempfile.TemporaryDirectory() as tmp:
        print("[optimizers x schedulers vs OLMo-core]")
        compare_training(olm, tmp)
        print("[nGPT]")
        normalized_training(olm, tmp)
        print("[micro-batching]")
        micro_batch_equivalence(olm, tmp)
        print("[resume]")
        resume_exact(olm, tmp)
        print("[NaN]")
        nan_step_is_skipped(olm, tmp)


if __name__ == "__main__":
    main()
