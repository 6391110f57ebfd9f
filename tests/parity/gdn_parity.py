#!/usr/bin/env python3
"""GatedDeltaNet parity between olm (through its C ABI) and OLMo-core 3.0.0, on CPU.

OLMo-core's GatedDeltaNet (olmo_core.nn.attention.recurrent) needs fla (flash-linear-attention),
whose kernels are Triton (CUDA only) and which is not installed here. This script stands in for
exactly three fla pieces, written from fla's documented semantics, and runs everything else as
OLMo-core's own code (the config, num_params, num_flops_per_token, the module's projections, gate
and beta computation, GVA head repetition, init_weights, the blocks and the transformer):
  * fla.modules.FusedRMSNormGated: weight (hidden,) of ones; rms_norm(x) * weight * silu(g) in
    float32;
  * dispatch_causal_conv1d: a depthwise F.conv1d, left-padded, then SiLU (cu_seqlens: per segment);
  * dispatch_chunk_gated_delta_rule: the naive per-token recurrence (use_qk_l2norm_in_kernel:
    q, k * rsqrt(sum^2 + 1e-6); scale head_dim^-1/2).
So the logits comparison checks OLMo-core's wiring and olm's reading of fla, not fla's kernels.

Checks per config: parameter counts, FLOPs per token, state-dict names and shapes, the init
draws with the same seed (exact), and logits from OLMo-core's weights loaded into olm (1e-5),
plus packed documents in olm against OLMo-core run on each document alone.
"""
import argparse
import json
import os
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olm_ctypes import Olm  # noqa: E402


class FusedRMSNormGated(nn.Module):
    def __init__(self, hidden_size, elementwise_affine=True, eps=1e-5, activation="swish", device=None, dtype=None):
        super().__init__()
        assert activation in ("swish", "silu") and elementwise_affine
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def reset_parameters(self):
        nn.init.ones_(self.weight)

    def forward(self, x, g):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return (y * F.silu(g.float())).to(x.dtype)


fla = types.ModuleType("fla")
fla.modules = types.ModuleType("fla.modules")
fla.modules.FusedRMSNormGated = FusedRMSNormGated
sys.modules["fla"], sys.modules["fla.modules"] = fla, fla.modules


def causal_conv1d(x, weight, bias=None, activation=None, backend=None, cu_seqlens=None, **_):
    def conv(seg):
        T = seg.size(1)
        y = F.conv1d(seg.transpose(1, 2), weight.unsqueeze(1), bias, padding=weight.size(1) - 1,
                     groups=weight.size(0))[..., :T].transpose(1, 2)
        return F.silu(y) if activation in ("silu", "swish") else y
    if cu_seqlens is None:
        return conv(x), None
    assert x.size(0) == 1
    bounds = cu_seqlens.tolist()
    return torch.cat([conv(x[:, s:e]) for s, e in zip(bounds[:-1], bounds[1:])], 1), None


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                     use_qk_l2norm_in_kernel=False, cu_seqlens=None):
    dtype = q.dtype
    q, k, v, g, beta = (t.float() for t in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q = q * torch.rsqrt(q.pow(2).sum(-1, keepdim=True) + 1e-6)
        k = k * torch.rsqrt(k.pow(2).sum(-1, keepdim=True) + 1e-6)
    q = q * (scale if scale is not None else q.size(-1) ** -0.5)
    B, T, H, K = q.shape
    V = v.size(-1)
    starts = set(cu_seqlens.tolist()) if cu_seqlens is not None else {0}
    o = torch.zeros(B, T, H, V)
    S = torch.zeros(B, H, K, V)
    for t in range(T):
        if t in starts:
            S = torch.zeros(B, H, K, V)
        S = S * g[:, t].exp()[..., None, None]
        kt = k[:, t]
        u = (v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, S)) * beta[:, t][..., None]
        S = S + torch.einsum("bhk,bhv->bhkv", kt, u)
        o[:, t] = torch.einsum("bhk,bhkv->bhv", q[:, t], S)
    return o.to(dtype), None


import olmo_core.nn.attention.recurrent as recurrent  # noqa: E402
import olmo_core.nn.convolution as convolution  # noqa: E402

recurrent.has_fla = lambda: True
recurrent.dispatch_chunk_gated_delta_rule = gated_delta_rule
convolution.dispatch_causal_conv1d = causal_conv1d

from olmo_core.nn.attention.recurrent import GatedDeltaNetConfig  # noqa: E402
from olmo_core.nn.feed_forward import FeedForwardConfig  # noqa: E402
from olmo_core.nn.layer_norm import LayerNormConfig, LayerNormType  # noqa: E402
from olmo_core.nn.lm_head import LMHeadConfig  # noqa: E402
from olmo_core.nn.transformer import TransformerBlockConfig, TransformerConfig  # noqa: E402
from olmo_core.nn.transformer.init import InitMethod  # noqa: E402

LOGIT_TOL = 1e-5


def check(cond, message):
    if not cond:
        raise AssertionError(message)
    print("  ok:", message)


def configs():
    def make(label, mixer, init_method=InitMethod.normal):
        block = TransformerBlockConfig(
            name="default", sequence_mixer=mixer,
            feed_forward=FeedForwardConfig(hidden_size=48, bias=False),
            layer_norm=LayerNormConfig(name=LayerNormType.rms, bias=False))
        cfg = TransformerConfig(d_model=32, vocab_size=64, n_layers=2, block=block,
                                lm_head=LMHeadConfig(bias=False, layer_norm=LayerNormConfig(name=LayerNormType.rms, bias=False)),
                                init_method=init_method, init_seed=7)
        return label, cfg
    return [
        make("gdn_default", GatedDeltaNetConfig(n_heads=4)),
        make("gdn_gva_llama", GatedDeltaNetConfig(n_heads=2, n_v_heads=4, head_dim=8, expand_v=1.5, conv_size=3,
                                                  conv_bias=True, allow_neg_eigval=False, norm_eps=1e-6),
             InitMethod.llama),
        make("gdn_depth", GatedDeltaNetConfig(n_heads=2, head_dim=16, expand_v=1.0), InitMethod.llama_depth),
    ]


def to_olm_json(cfg):
    m = cfg.block.sequence_mixer
    mixer = {"name": "gated_delta_net", "n_heads": m.n_heads, "expand_v": m.expand_v,
             "allow_neg_eigval": m.allow_neg_eigval, "conv_size": m.conv_size, "conv_bias": m.conv_bias,
             "norm_eps": m.norm_eps}
    for field in ("n_v_heads", "head_dim"):
        if getattr(m, field) is not None:
            mixer[field] = getattr(m, field)
    rms = {"name": "rms", "bias": False}
    return {"d_model": cfg.d_model, "vocab_size": cfg.vocab_size, "n_layers": cfg.n_layers,
            "init_seed": cfg.init_seed, "init_std": cfg.init_std, "init_method": str(cfg.init_method),
            "block": {"name": "default", "attention": mixer,
                      "feed_forward": {"hidden_size": cfg.block.feed_forward.hidden_size, "bias": False},
                      "layer_norm": rms},
            "lm_head": {"bias": False, "layer_norm": rms}}


def run(olm, label, ref_cfg, tmp):
    print(f"[{label}]")
    cfg = olm.config_from_json(json.dumps(to_olm_json(ref_cfg)))
    total, _ = olm.num_params(cfg)
    check(total == ref_cfg.num_params, f"num_params {total} == OLMo-core {ref_cfg.num_params}")
    meta = ref_cfg.build(init_device="meta")
    flops = [(olm.flops(cfg, n), meta.num_flops_per_token(n)) for n in (24, 4096)]
    check(all(a == b for a, b in flops), f"FLOPs per token at seq 24 and 4096 equal OLMo-core's {flops}")

    ref = ref_cfg.build(init_device="cpu")
    ref.init_weights(device=torch.device("cpu"))
    ref.eval()
    ours = olm.model(cfg)
    path = os.path.join(tmp, f"{label}_olm.safetensors")
    olm.save(ours, path)
    ours_state = load_file(path)
    ref_state = {k: v.detach() for k, v in ref.state_dict().items()}
    check(sorted(ours_state) == sorted(ref_state), f"state-dict names equal ({len(ref_state)} tensors)")
    shapes = all(ours_state[k].shape == ref_state[k].shape for k in ref_state)
    check(shapes, "state-dict shapes equal")
    init_diff = max((ours_state[k] - ref_state[k]).abs().max().item() for k in ref_state)
    check(init_diff == 0.0, f"init with seed {ref_cfg.init_seed} equals OLMo-core's (max diff {init_diff})")

    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref_path = os.path.join(tmp, f"{label}_ref.safetensors")
    save_file({k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}, ref_path)
    loaded = olm.model(cfg, init_weights=False)
    olm.load(loaded, ref_path)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, ref_cfg.vocab_size, size=(2, 20), dtype=np.int64)
    with torch.no_grad():
        ref_logits = ref(torch.from_numpy(ids)).float().numpy()
    diff = float(np.abs(olm.forward(loaded, ids) - ref_logits).max())
    check(diff <= LOGIT_TOL, f"logits max |diff| = {diff:.3e} <= {LOGIT_TOL}")

    cu = np.array([0, 6, 20, 29, 40], dtype=np.int64)
    packed = olm.forward(loaded, ids, cu_doc_lens=cu, max_doc_len=20)
    worst = 0.0
    for s, e in zip(cu[:-1], cu[1:]):
        b, t0 = divmod(int(s), 20)
        with torch.no_grad():
            alone = ref(torch.from_numpy(ids[b:b + 1, t0:t0 + e - s])).float().numpy()
        worst = max(worst, float(np.abs(packed[b:b + 1, t0:t0 + e - s] - alone).max()))
    check(worst <= LOGIT_TOL, f"packed documents vs OLMo-core per document: max |diff| = {worst:.3e}")
    for m in (ours, loaded):
        olm.lib.olm_model_free(m)
    olm.lib.olm_config_free(cfg)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    args = parser.parse_args()
    olm = Olm(args.lib)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in configs():
            run(olm, label, cfg, tmp)
    print("gdn parity: all checks passed")


if __name__ == "__main__":
    main()
