#!/usr/bin/env python3
"""MoE parity between olm (through its C ABI) and the real OLMo-core (pip ai2-olmo-core), on CPU.

OLMo-core's MoE dispatch goes through four permutation ops (olmo_core.ops.moe: gather, scatter,
binned_gather, binned_scatter) whose only implementation is a set of Triton kernels that need
CUDA. On CPU this script replaces exactly those four functions with PyTorch code that does what
the kernels do (written from olmo_core/kernels/moe.py, `_padded_copy` and `_binned_copy`: rows
copied by the sorted indices, scaled by the routing weight in float32, dropped past the capacity,
summed over top_k), and makes its torch.sort of the expert ids stable (see below).
Everything else is OLMo-core's own code: the router and its losses, MoEMLP's
bmm, DroplessMoEMLP's grouped-GEMM CPU fallback, the MoE blocks and the MoETransformer.

For each config: parameter counts (total, active, active non-embedding) and FLOPs per token,
state-dict names, the init draws (shared MLPs excepted: OLMo-core leaves them to nn.Linear's
global-RNG default), then OLMo-core weights -> safetensors -> olm and:
  * logits within 1e-4 (the maximum is printed),
  * the LM losses and the routers' load-balancing and z-losses (OLMo-core's training-mode
    metrics "load balancing loss" and "router Z loss", summed over blocks),
  * routing decisions: every block's expert indices and weights, on OLMo-core's own inputs to
    that block's MoE, checked by olm_core_tests' MoEParity test from a fixture written here,
  * one SGD step through olm's trainer (one and two micro-batches) against OLMo-core's
    gradient of CE + aux losses, and its score-bias update.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olm_ctypes import Olm  # noqa: E402
from olmo_core_parity import check, to_olm_json  # noqa: E402

import olmo_core.ops.moe as moe_ops  # noqa: E402
from olmo_core.data.utils import get_labels  # noqa: E402
from olmo_core.nn.feed_forward import FeedForwardConfig  # noqa: E402
from olmo_core.nn.moe.parallel_mlp import ParallelMLPBase  # noqa: E402
from olmo_core.nn.transformer import TransformerConfig  # noqa: E402

LOGIT_TOL = 1e-4  # the bound; the measured maxima are around 1e-6
LOSS_TOL = 1e-5
GRAD_TOL = 1e-6   # one SGD step with lr 1: weights differ by the gradient difference


# ---- CPU versions of OLMo-core's Triton permutation kernels (olmo_core/kernels/moe.py).
def _gather(x, indices, bin_ids, bins, top_k):
    # _padded_copy, A_TO_B, no padding: out[p] = x[indices[p] // top_k].
    del bin_ids, bins
    return x[indices.long() // top_k]


def _scatter(x, indices, bin_ids, weights, bins, top_k):
    # _padded_copy, B_TO_A: out[indices[p]] = x[p] * weights[indices[p]] (float32), sum over k.
    del bin_ids, bins
    idx = indices.long()
    vals = x.float()
    if weights is not None:
        vals = vals * weights[idx].float().unsqueeze(1)
    out = x.new_zeros((indices.numel(), x.shape[1])).index_copy(0, idx, vals.to(x.dtype))
    tokens = indices.numel() // top_k
    return out.view(tokens, top_k, -1).sum(1) if top_k > 1 else out.view(tokens, -1)


def _binned_gather(x, indices, bins, bin_size, top_k):
    # _binned_copy, A_TO_B: expert e's j-th sorted entry (j < bin_size) -> out[e, j]; zeros elsewhere.
    out = x.new_zeros((bins.numel(), bin_size, x.shape[1]))
    start = 0
    for e in range(bins.numel()):
        end = int(bins[e])
        n = min(end - start, bin_size)
        out[e, :n] = x[indices[start:start + n].long() // top_k]
        start = end
    return out


def _binned_scatter(x, indices, weights, bins, top_k):
    # _binned_copy, B_TO_A: the kept entries back to their (token, choice) rows, weighted in
    # float32; dropped entries stay zero; summed over top_k.
    num_experts, capacity, d = x.shape
    out = x.new_zeros((indices.numel(), d))
    start = 0
    for e in range(num_experts):
        end = int(bins[e])
        n = min(end - start, capacity)
        idx = indices[start:start + n].long()
        vals = x[e, :n].float()
        if weights is not None:
            vals = vals * weights[idx].float().unsqueeze(1)
        out = out.index_copy(0, idx, vals.to(x.dtype))
        start = end
    tokens = indices.numel() // top_k
    return out.view(tokens, top_k, d).sum(1) if top_k > 1 else out.view(tokens, d)


moe_ops.gather, moe_ops.scatter = _gather, _scatter
moe_ops.binned_gather, moe_ops.binned_scatter = _binned_gather, _binned_scatter


# OLMo-core groups the (token, choice) pairs with torch.sort(expert_indices), which is not
# stable: the order of a full expert's pairs, and so which ones a capacity MoE drops, is left
# unspecified (on CPU it is scrambled). olm drops in (token, choice) order; we pin OLMo-core's
# sort to the stable one so the two drop the same pairs. Dropless MoEs do not depend on it.
def _indices_and_bins(self, expert_indices, batch_size_per_expert):
    bin_ids, indices = torch.sort(expert_indices.int(), stable=True)
    bins = torch.empty_like(batch_size_per_expert, dtype=torch.int32)
    torch.cumsum(batch_size_per_expert, 0, out=bins)
    return indices.int(), bin_ids, bins


ParallelMLPBase.indices_and_bins = _indices_and_bins


# ---- configs
def moe_json(m):
    r = m.router
    router = {"top_k": r.top_k, "gating_function": str(r.gating_function)}
    for field in ("jitter_eps", "normalize_expert_weights", "bias_gamma"):
        if getattr(r, field) is not None:
            router[field] = getattr(r, field)
    out = {"name": str(m.name), "num_experts": m.num_experts, "hidden_size": m.hidden_size,
           "router": router, "lb_loss_weight": m.lb_loss_weight if m.lb_loss_weight is not None else 0.0,
           "lb_loss_granularity": str(m.lb_loss_granularity),
           "scale_loss_by_num_layers": m.scale_loss_by_num_layers}
    if m.capacity_factor is not None:
        out["capacity_factor"] = m.capacity_factor
    if m.z_loss_weight is not None:
        out["z_loss_weight"] = m.z_loss_weight
    if m.shared_mlp is not None:
        out["shared_mlp"] = {"hidden_size": m.shared_mlp.hidden_size, "activation": str(m.shared_mlp.activation)}
        if m.shared_mlp.bias is not None:
            out["shared_mlp"]["bias"] = m.shared_mlp.bias
    return out


def to_olm_moe_json(cfg):
    c = copy.deepcopy(cfg)
    dense = c.block.feed_forward is not None
    if not dense:  # to_olm_json translates a dense block; borrow one and drop it again
        c.block.feed_forward = FeedForwardConfig(hidden_size=1)
    out = to_olm_json(c)
    if not dense:
        del out["block"]["feed_forward"]
    out["name"] = str(cfg.name)
    out["block"]["feed_forward_moe"] = moe_json(cfg.block.feed_forward_moe)
    return out


def configs():
    def moe(**kw):
        base = dict(d_model=64, vocab_size=300, n_layers=2, n_heads=4, num_experts=8, top_k=2,
                    expert_hidden_size=32)
        base.update(kw)
        return TransformerConfig.llama_like_moe(**base)

    out = {}
    # Capacity MoE that drops tokens (capacity 16 for 72 tokens * 2 / 8 experts = 18 wanted on
    # average), a shared expert (with biases), router z-loss.
    c = moe(capacity_factor=0.5, shared_expert_hidden_size=48)
    c.block.feed_forward_moe.shared_mlp.bias = True
    out["moe_capacity_drops_shared"] = c
    # Dropless, reordered norm (OLMoE), sigmoid gating with L1-normalized weights, instance loss.
    c = moe(dropless=True, reordered_norm=True, top_k=3, n_layers=3)
    c.block.feed_forward_moe.router.gating_function = "sigmoid"
    c.block.feed_forward_moe.router.normalize_expert_weights = 1.0
    c.block.feed_forward_moe.lb_loss_granularity = "instance"
    out["moe_dropless_sigmoid_norm_instance"] = c
    # Aux-loss-free balancing: score_bias decides top-1 routing; no loss scaling by layers.
    c = moe(dropless=True, top_k=1, z_loss_weight=None)
    c.block.feed_forward_moe.router.bias_gamma = 0.01
    c.block.feed_forward_moe.scale_loss_by_num_layers = False
    out["moe_top1_bias_gamma"] = c
    # Hybrid blocks: a dense block plus the sparse branch on the block input.
    # (llama_like leaves out the dense feed-forward when an MoE is given; hybrids need one.)
    c = moe(hybrid=True, capacity_factor=2.0, init_method="llama")
    c.block.feed_forward = FeedForwardConfig(hidden_size=48, bias=False)
    out["moe_hybrid_capacity_llama_init"] = c
    c = moe(hybrid=True, reordered_norm=True, dropless=True, shared_expert_hidden_size=40,
            init_method="fan_in")
    c.block.feed_forward = FeedForwardConfig(hidden_size=56, bias=False)
    out["moe_hybrid_reordered_dropless_fan_in"] = c
    return out


# ---- checks
def compare_presets(olm):
    for name in ("smallmoe", "olmoe_1B_7B"):
        for vocab in (100278, 50304):
            ref = getattr(TransformerConfig, name)(vocab_size=vocab)
            cfg = olm.config_from_preset(name, vocab)
            ours = olm.num_params(cfg) + olm.num_active_params(cfg)
            theirs = (ref.num_params, ref.num_non_embedding_params, ref.num_active_params,
                      ref.num_active_non_embedding_params)
            assert ours == theirs, (name, vocab, ours, theirs)
            if vocab == 100278:
                meta = ref.build(init_device="meta")
                for seq in (2048, 4096):
                    assert olm.flops(cfg, seq) == meta.num_flops_per_token(seq), (name, seq)
                check(True, f"{name}: params {theirs} and FLOPs/token at 2048/4096 equal OLMo-core's")
            olm.lib.olm_config_free(cfg)


def router_losses(model):
    metrics = model.compute_auxiliary_metrics(reset=True)
    lb = metrics.get("load balancing loss")
    z = metrics.get("router Z loss")
    return (0.0 if lb is None else float(lb[0])), (0.0 if z is None else float(z[0]))


def write_routing_fixture(ref, ids, cfg_json, weights_path, folder):
    """Each block's MoE input and OLMo-core's routing and MoE output on it."""
    captured = {}
    hooks = []
    for idx, blk in ref.blocks.items():
        def moe_hook(mod, args, output, idx=idx):
            captured[f"x.{idx}"] = args[0].detach().clone()
            captured[f"out.{idx}"] = output.detach().clone()

        def router_hook(mod, args, output, idx=idx):
            captured[f"weights.{idx}"] = output[0].detach().float().clone()
            captured[f"indices.{idx}"] = output[1].detach().clone()
        hooks.append(blk.feed_forward_moe.register_forward_hook(moe_hook))
        hooks.append(blk.feed_forward_moe.router.register_forward_hook(router_hook))
    with torch.no_grad():
        ref(torch.from_numpy(ids))
    for h in hooks:
        h.remove()
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in captured.items()}, os.path.join(folder, "routing.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_json, f)
    os.link(weights_path, os.path.join(folder, "model.safetensors"))
    return len(ref.blocks)


def run_routing_check(core_tests, folder):
    env = dict(os.environ, OLM_MOE_PARITY_DIR=folder)
    proc = subprocess.run([core_tests, "--gtest_filter=MoEParity.*"], env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    ok = proc.returncode == 0 and "[  PASSED  ] 1 test" in out and "SKIPPED" not in out
    if not ok:
        print(out)
    summary = [line.strip() for line in out.splitlines() if "routing" in line and "max" in line]
    return ok, summary


def sgd_step(olm, label, ref_cfg, cfg_json, ref_path, tmp, micro=1):
    """One SGD step (lr 1, no momentum or decay) in olm's trainer against OLMo-core's gradients
    of its training loss (TransformerTrainModule.train_batch written out): per micro-batch, the
    summed CE divided by the whole batch's target tokens, plus the attached router losses with
    the same loss_div_factor."""
    rng = np.random.default_rng(7)
    B, T = 2, 12
    ids = rng.integers(0, ref_cfg.vocab_size, size=(B, T), dtype=np.int64)
    model = ref_cfg.build(init_device="cpu")
    model.load_state_dict(load_file(ref_path))
    model.train()
    batch = {"input_ids": torch.from_numpy(ids)}
    labels = get_labels(batch)
    n_tokens = (labels != -100).sum()
    ce = 0.0
    for start in range(0, B, micro):
        out = model(batch["input_ids"][start:start + micro], labels=labels[start:start + micro],
                    loss_reduction="sum", loss_div_factor=n_tokens)
        ce += float(out.ce_loss)
        out.loss.backward()
    lb, z = router_losses(model)
    model.post_batch()
    expected = {n: (p - p.grad).detach() for n, p in model.named_parameters()}

    ours = olm.model(olm.config_from_json(json.dumps(cfg_json)), init_weights=False)
    olm.load(ours, ref_path)
    tc = olm.train_config(json.dumps({
        "model": cfg_json, "optimizer": {"name": "sgd", "lr": 1.0, "weight_decay": 0.0},
        "sequence_length": T, "global_batch_size": B * T, "rank_microbatch_size": micro * T, "max_steps": 1}))
    trainer = olm.trainer(ours, tc)
    m = olm.step(trainer, ids)
    after = os.path.join(tmp, f"{label}_after_step.safetensors")
    olm.save(ours, after)
    got = load_file(after)
    diff = max((got[n] - expected[n]).abs().max().item() for n in expected)
    bias_diff = 0.0
    for n, b in model.named_buffers():
        if n.endswith("score_bias"):
            bias_diff = max(bias_diff, (got[n] - b).abs().max().item())
    what = f"SGD step, {B // micro} micro-batch{'es' if micro < B else ''}"
    check(abs(m.ce_loss - ce) <= LOSS_TOL and abs(m.lb_loss - lb) <= LOSS_TOL
          and abs(m.router_z_loss - z) <= LOSS_TOL,
          f"{what}: ce {m.ce_loss:.6f}, lb {m.lb_loss:.6f}, router z {m.router_z_loss:.6f} equal OLMo-core's")
    check(diff <= GRAD_TOL and bias_diff == 0.0,
          f"{what}: weights after the step (CE + aux-loss gradients) max |diff| = {diff:.3e}; "
          f"score_bias update diff {bias_diff}")
    olm.lib.olm_trainer_free(trainer)
    olm.lib.olm_train_config_free(tc)
    olm.lib.olm_model_free(ours)
    return diff


def run_config(olm, label, ref_cfg, tmp, core_tests):
    print(f"[{label}]")
    cfg_json = to_olm_moe_json(ref_cfg)
    cfg = olm.config_from_json(json.dumps(cfg_json))
    counts = olm.num_params(cfg) + olm.num_active_params(cfg)
    theirs = (ref_cfg.num_params, ref_cfg.num_non_embedding_params, ref_cfg.num_active_params,
              ref_cfg.num_active_non_embedding_params)
    check(counts == theirs, f"params (total, non-emb, active, active non-emb) {counts} == OLMo-core's")
    meta = ref_cfg.build(init_device="meta")
    flops = [(olm.flops(cfg, n), meta.num_flops_per_token(n)) for n in (24, 4096)]
    check(all(a == b for a, b in flops), f"FLOPs per token at seq 24 and 4096 equal OLMo-core's {flops}")

    torch.manual_seed(0)
    ref = ref_cfg.build(init_device="cpu")
    ref.init_weights(device=torch.device("cpu"))
    ours = olm.model(cfg)
    ours_path = os.path.join(tmp, f"{label}_olm_init.safetensors")
    olm.save(ours, ours_path)
    ours_state = load_file(ours_path)
    ref_state = {k: v.detach() for k, v in ref.state_dict().items()}
    check(sorted(ours_state) == sorted(ref_state), f"state-dict names equal ({len(ref_state)} tensors)")
    drawn = [k for k in ref_state if ".shared_mlp." not in k]
    init_diff = max((ours_state[k] - ref_state[k]).abs().max().item() for k in drawn)
    check(init_diff == 0.0, f"init of the {len(drawn)} seeded tensors equals OLMo-core's (max diff {init_diff})")

    # OLMo-core weights (perturbed away from the init, score biases made decisive) -> olm.
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for n, b in ref.named_buffers():
            if n.endswith("score_bias"):
                b.copy_(torch.randn_like(b) * 0.05)
    ref_path = os.path.join(tmp, f"{label}_olmo_core.safetensors")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, ref_path)
    loaded = olm.model(cfg, init_weights=False)
    olm.load(loaded, ref_path)

    rng = np.random.default_rng(1234)
    B, T = 3, 24
    ids = rng.integers(0, ref_cfg.vocab_size, size=(B, T), dtype=np.int64)
    labels = rng.integers(0, ref_cfg.vocab_size, size=(B, T), dtype=np.int64)
    labels[rng.random((B, T)) < 0.25] = -100
    t_ids, t_labels = torch.from_numpy(ids), torch.from_numpy(labels)
    ref.eval()
    with torch.no_grad():
        ref_logits = ref(t_ids).float().numpy()
    logit_diff = float(np.abs(olm.forward(loaded, ids) - ref_logits).max())
    check(logit_diff <= LOGIT_TOL, f"logits max |diff| = {logit_diff:.3e} <= {LOGIT_TOL}")

    # Losses: OLMo-core computes the router losses in training mode only (same numbers: no
    # dropout or jitter in these configs); olm returns them with every loss.
    ref.train()
    worst = 0.0
    for div in (None, 1.0, 7.0):
        ref.compute_auxiliary_metrics(reset=True)
        r = ref(t_ids, labels=t_labels, loss_reduction="mean", z_loss_multiplier=1e-4,
                loss_div_factor=div)
        lb, z = router_losses(ref)
        o = olm.loss(loaded, ids, labels, z_loss_multiplier=1e-4, loss_div_factor=div)
        diffs = [abs(o["values"][0] - float(r.loss)), abs(o["values"][1] - float(r.ce_loss)),
                 abs(o["lb_loss_value"] - lb), abs(o["router_z_loss_value"] - z)]
        worst = max(worst, max(diffs))
        assert max(diffs) <= LOSS_TOL, (label, div, diffs, o["lb_loss_value"], lb, o["router_z_loss_value"], z)
    check(True, f"loss, ce_loss, load-balancing and router z-loss (div unset, 1, 7) max |diff| = {worst:.3e}; "
                f"lb {o['lb_loss_value']:.6f}, router z {o['router_z_loss_value']:.6f}")
    ref.eval()

    routing = "not run"
    if core_tests:
        n = write_routing_fixture(ref, ids, cfg_json, ref_path, os.path.join(tmp, f"{label}_routing"))
        ok, summary = run_routing_check(core_tests, os.path.join(tmp, f"{label}_routing"))
        check(ok, f"routing decisions of all {n} blocks equal OLMo-core's (olm_core_tests MoEParity)")
        for line in summary:
            print("     ", line)
        routing = "equal"

    step_diff = max(sgd_step(olm, label, ref_cfg, cfg_json, ref_path, tmp, micro=m) for m in (2, 1))
    for m in (ours, loaded):
        olm.lib.olm_model_free(m)
    olm.lib.olm_config_free(cfg)
    return logit_diff, worst, step_diff, routing


def check_errors(olm):
    base = to_olm_moe_json(TransformerConfig.llama_like_moe(
        d_model=32, vocab_size=64, n_layers=1, n_heads=2, num_experts=4, top_k=2, expert_hidden_size=8))
    cases = [
        (lambda c: c["block"]["feed_forward_moe"]["router"].update(top_k=5), "router.top_k"),
        (lambda c: c["block"]["feed_forward_moe"].update(name="dropless", capacity_factor=1.5), "capacity_factor"),
        (lambda c: c["block"]["feed_forward_moe"].update(num_experts=0), "num_experts"),
        (lambda c: c["block"]["feed_forward_moe"]["router"].update(gating_function="topk_softmax"), "gating_function"),
        (lambda c: c.update(name="default"), "name"),
        (lambda c: c["block"].pop("feed_forward_moe"), "feed_forward_moe"),
    ]
    for mutate, field in cases:
        c = copy.deepcopy(base)
        mutate(c)
        try:
            olm.lib.olm_config_free(olm.config_from_json(json.dumps(c)))
        except Exception as e:  # noqa: BLE001
            assert field in str(e), (field, str(e))
            continue
        raise AssertionError(f"config accepted: {field}")
    check(True, f"{len(cases)} bad MoE configs refused with messages naming the field")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    parser.add_argument("--core-tests", help="olm_core_tests, for the routing-decision check")
    args = parser.parse_args()
    torch.set_num_threads(2)
    olm = Olm(args.lib)
    print("[presets and errors]")
    compare_presets(olm)
    check_errors(olm)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in configs().items():
            results[label] = run_config(olm, label, cfg, tmp, args.core_tests)
    print("\nmaximum differences vs OLMo-core (logits, losses, weights after one SGD step; routing):")
    for label, (dl, dloss, dstep, routing) in results.items():
        print(f"  {label:38s} logits {dl:.3e}  losses {dloss:.3e}  sgd {dstep:.3e}  routing {routing}")


if __name__ == "__main__":
    main()
