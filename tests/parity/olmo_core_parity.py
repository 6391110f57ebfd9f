#!/usr/bin/env python3
"""Parity between olm (through its C ABI) and the real OLMo-core (pip ai2-olmo-core).

For each config: build it in both, check parameter counts and FLOPs, check that the same
init seed gives the same CPU weights, move weights through safetensors files in both
directions, and compare logits, loss, ce_loss and z_loss on random tokens with ignored
positions. Float32 logits must agree to 1e-5 (max absolute difference); the measured
maxima are printed.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olm_ctypes import Olm  # noqa: E402

from olmo_core.nn.transformer import TransformerConfig  # noqa: E402

LOGIT_TOL = 1e-5
# Losses are means over many float32 terms; 1e-5 absolute on values around 7 is ~1.5 ulp-scale
# accumulated rounding, the same order as the logits.
LOSS_TOL = 1e-5

PRESETS = ["olmo2_1M", "olmo2_14M", "olmo2_30M", "olmo2_60M", "olmo2_100M", "olmo2_190M",
           "olmo2_370M", "olmo2_600M", "olmo2_760M", "olmo2_1B", "olmo2_1B_v2", "olmo2_3B",
           "olmo2_7B", "olmo2_13B", "olmo2_32B", "llama2_271M", "llama2_1B", "llama2_7B",
           "llama2_13B", "llama2_26B", "llama2_70B", "llama3_1B", "llama3_8B", "llama3_70B",
           "llama3_405B", "olmo3_1M", "olmo3_14M", "olmo3_30M", "olmo3_60M", "olmo3_100M",
           "olmo3_190M", "olmo3_370M", "olmo3_600M", "olmo3_760M", "olmo3_1B", "olmo3_3B", "olmo3_7B",
           "olmo3_13B", "olmo3_32B", "gemma3_1B", "gemma3_4B", "gemma3_12B", "gemma3_27B", "ngpt_271M", "ngpt_1B", "qwen3_0_6B", "qwen3_1_7B", "qwen3_4B", "qwen3_8B",
           "qwen3_14B", "qwen3_32B"]


def norm_json(ln):
    if ln is None:
        return None
    out = {"name": str(ln.name)}
    for field in ("eps", "elementwise_affine", "bias", "full_precision"):
        value = getattr(ln, field)
        if value is not None:
            out[field] = value
    return out


def block_json(block):
    """Translate an OLMo-core TransformerBlockConfig into olm's JSON, field by field."""
    att = block.sequence_mixer
    attention = {"name": str(att.name), "n_heads": att.n_heads}
    for field in ("n_kv_heads", "head_dim", "bias", "clip_qkv", "use_head_qk_norm"):
        value = getattr(att, field)
        if value is not None:
            attention[field] = value
    if att.rope is not None:
        attention["rope"] = {"theta": att.rope.theta, "full_precision": att.rope.full_precision,
                             "no_global_rope": att.rope.no_global_rope,
                             "partial_rotary_factor": att.rope.partial_rotary_factor}
        sc = att.rope.scaling
        if sc is not None:
            name = {"ABFRoPEScalingConfig": "abf", "PIRoPEScalingConfig": "pi",
                    "StepwiseRoPEScalingConfig": "stepwise", "YaRNRoPEScalingConfig": "yarn"}[type(sc).__name__]
            scaling = {"name": name}
            for field in ("attention_rescale_factor", "new_theta", "factor", "low_freq_proportion",
                          "high_freq_proportion", "old_context_len", "beta_fast", "beta_slow"):
                if hasattr(sc, field) and not (name == "yarn" and field == "attention_rescale_factor"):
                    scaling[field] = getattr(sc, field)
            attention["rope"]["scaling"] = scaling
    if att.qk_norm is not None:
        attention["qk_norm"] = norm_json(att.qk_norm)
    if att.gate is not None:
        attention["gate"] = {"granularity": str(att.gate.granularity), "full_precision": att.gate.full_precision}
    if att.sliding_window is not None:
        sw = att.sliding_window
        attention["sliding_window"] = {
            "pattern": list(sw.pattern),
            "force_full_attention_on_first_layer": sw.force_full_attention_on_first_layer,
            "force_full_attention_on_last_layer": sw.force_full_attention_on_last_layer}
    ff = {"name": str(block.feed_forward.name), "hidden_size": block.feed_forward.hidden_size,
          "activation": str(block.feed_forward.activation)}
    if block.feed_forward.bias is not None:
        ff["bias"] = block.feed_forward.bias
    out = {"name": str(block.name), "attention": attention, "feed_forward": ff}
    if block.layer_norm is not None:
        out["layer_norm"] = norm_json(block.layer_norm)
    for field in ("attention_residual_alpha", "feed_forward_residual_alpha"):
        if getattr(block, field) is not None:
            out[field] = getattr(block, field)
    return out


def to_olm_json(cfg):
    """Translate an OLMo-core TransformerConfig into olm's JSON config, field by field."""
    out = {
        "d_model": cfg.d_model,
        "vocab_size": cfg.vocab_size,
        "n_layers": cfg.n_layers,
        "name": str(cfg.name),
        "lm_head": {"name": str(cfg.lm_head.name)},
        "init_seed": cfg.init_seed,
        "init_std": cfg.init_std,
        "init_method": str(cfg.init_method),
    }
    if isinstance(cfg.block, dict):
        out["named_blocks"] = [{"name": k, "block": block_json(v)} for k, v in cfg.block.items()]
        out["block_pattern"] = list(cfg.block_pattern)
    else:
        out["block"] = block_json(cfg.block)
    if cfg.block_overrides:
        out["block_overrides"] = [{"layer": k, "block": block_json(v)} for k, v in cfg.block_overrides.items()]
    if cfg.lm_head.layer_norm is not None:
        out["lm_head"]["layer_norm"] = norm_json(cfg.lm_head.layer_norm)
    if cfg.lm_head.bias is not None:
        out["lm_head"]["bias"] = cfg.lm_head.bias
    if cfg.embedding_norm is not None:
        out["embedding_norm"] = norm_json(cfg.embedding_norm)
    if cfg.embed_scale is not None:
        out["embed_scale"] = cfg.embed_scale
    if cfg.tie_word_embeddings:
        out["tie_word_embeddings"] = True
    return out


def check(cond, message):
    if not cond:
        raise AssertionError(message)
    print("  ok:", message)


def compare_presets(olm):
    for vocab in (100278, 50304):
        for name in PRESETS:
            ref = getattr(TransformerConfig, name)(vocab_size=vocab)
            cfg = olm.config_from_preset(name, vocab)
            total, non_emb = olm.num_params(cfg)
            assert (total, non_emb) == (ref.num_params, ref.num_non_embedding_params), (
                name, vocab, (total, non_emb), (ref.num_params, ref.num_non_embedding_params))
            olm.lib.olm_config_free(cfg)
    print(f"  ok: parameter counts of {len(PRESETS)} presets equal OLMo-core's at two vocab sizes")
    # FLOPs come from a built model in OLMo-core: check the small presets (meta device).
    flops_presets = ["olmo2_1M", "olmo2_30M", "olmo2_190M", "llama2_271M", "llama3_1B", "olmo2_1B", "olmo2_7B",
                     "olmo3_30M", "olmo3_7B", "gemma3_1B", "ngpt_271M"]
    for name in flops_presets:
        ref = getattr(TransformerConfig, name)(vocab_size=100278)
        model = ref.build(init_device="meta")
        cfg = olm.config_from_preset(name, 100278)
        for seq_len in (256, 4096):
            ours, theirs = olm.flops(cfg, seq_len), model.num_flops_per_token(seq_len)
            assert ours == theirs, (name, seq_len, ours, theirs)
        olm.lib.olm_config_free(cfg)
    print(f"  ok: FLOPs per token equal OLMo-core's for {len(flops_presets)} presets at seq_len 256 and 4096")


def run_config(olm, label, ref_cfg, tmp):
    print(f"[{label}]")
    cfg = olm.config_from_json(__import__("json").dumps(to_olm_json(ref_cfg)))
    total, _ = olm.num_params(cfg)
    check(total == ref_cfg.num_params, f"num_params {total} == OLMo-core {ref_cfg.num_params}")
    meta = ref_cfg.build(init_device="meta")
    flops = [(olm.flops(cfg, n), meta.num_flops_per_token(n)) for n in (24, 4096)]
    check(all(a == b for a, b in flops), f"FLOPs per token at seq 24 and 4096 equal OLMo-core's {flops}")

    torch.manual_seed(0)
    ref = ref_cfg.build(init_device="cpu")
    ref.init_weights(device=torch.device("cpu"))
    ref.eval()
    # OLMo-core 3.0.0's init_weights calls to_empty(), which leaves the default_scaled blocks'
    # ln_scale buffers uninitialized; give them the values their constructor computes.
    for idx, blk in ref.blocks.items():
        if hasattr(blk, "ln_scale"):
            blk.ln_scale.fill_(1.0 / (int(idx) + 1) ** 0.5)

    # Same seed, same CPU weights (OLMo-core's draw order and trunc_normal_ steps).
    ours = olm.model(cfg)
    ours_path = os.path.join(tmp, f"{label}_olm_init.safetensors")
    olm.save(ours, ours_path)
    ours_state = load_file(ours_path)
    ref_state = {k: v.detach() for k, v in ref.state_dict().items()}
    check(sorted(ours_state) == sorted(ref_state), f"state-dict names equal ({len(ref_state)} tensors)")
    init_diff = max((ours_state[k] - ref_state[k]).abs().max().item() for k in ref_state)
    check(init_diff == 0.0, f"init with seed {ref_cfg.init_seed} equals OLMo-core's (max diff {init_diff})")

    rng = np.random.default_rng(1234)
    B, T = 3, 24
    ids = rng.integers(0, ref_cfg.vocab_size, size=(B, T), dtype=np.int64)
    labels = rng.integers(0, ref_cfg.vocab_size, size=(B, T), dtype=np.int64)
    labels[rng.random((B, T)) < 0.25] = -100
    labels[0, :3] = -100
    t_ids, t_labels = torch.from_numpy(ids), torch.from_numpy(labels)

    def compare(model_olm, model_ref, direction):
        with torch.no_grad():
            ref_logits = model_ref(t_ids).float().numpy()
        logits = olm.forward(model_olm, ids)
        diff = float(np.abs(logits - ref_logits).max())
        check(diff <= LOGIT_TOL, f"{direction}: logits max |diff| = {diff:.3e} <= {LOGIT_TOL}")
        worst = 0.0
        for reduction in ("mean", "sum", "none"):
            for z in (0.0, 1e-4):
                for div in (None, 1.0, 7.0):
                    with torch.no_grad():
                        r = model_ref(t_ids, labels=t_labels, loss_reduction=reduction,
                                      z_loss_multiplier=z if z > 0 else None,
                                      loss_div_factor=div)
                    o = olm.loss(model_olm, ids, labels, reduction=reduction, z_loss_multiplier=z,
                                 loss_div_factor=div)
                    scale = 1.0 if reduction != "sum" else float((labels != -100).sum())
                    for key in ("loss", "ce_loss", "z_loss"):
                        theirs = getattr(r, key)
                        if theirs is None:
                            assert o[key] is None, (key, reduction, z)
                            continue
                        d = float(np.abs(o[key] - theirs.float().numpy()).max()) / scale
                        worst = max(worst, d)
                        assert d <= LOSS_TOL, (direction, reduction, z, div, key, d)
                    if reduction != "none":
                        assert abs(o["values"][0] - float(r.loss)) / scale <= LOSS_TOL
        check(True, f"{direction}: loss/ce_loss/z_loss (mean, sum per token, none; z on/off; "
                    f"div unset/1/7) max |diff| = {worst:.3e} <= {LOSS_TOL}")
        return diff, worst

    # Direction 1: OLMo-core weights -> safetensors -> olm.
    with torch.no_grad():
        for p in ref.parameters():  # move away from the shared init so the copy is what's tested
            p.add_(torch.randn_like(p) * 0.01)
    ref_path = os.path.join(tmp, f"{label}_olmo_core.safetensors")
    # clone(): tied embeddings share storage, which safetensors refuses to write twice.
    save_file({k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}, ref_path)
    loaded = olm.model(cfg, init_weights=False)
    olm.load(loaded, ref_path)
    d1 = compare(loaded, ref, "OLMo-core -> olm")

    # Direction 2: olm weights -> safetensors -> OLMo-core.
    ours2 = olm.model(cfg)
    ours2_path = os.path.join(tmp, f"{label}_olm.safetensors")
    # Perturb on the olm side too: load OLMo-core's perturbed weights then save them again, so the
    # file olm wrote is what OLMo-core reads.
    olm.load(ours2, ref_path)
    olm.save(ours2, ours2_path)
    ref2 = ref_cfg.build(init_device="cpu")
    ref2.load_state_dict(load_file(ours2_path))
    ref2.eval()
    d2 = compare(ours2, ref2, "olm -> OLMo-core")

    # Intra-document masking: OLMo-core's torch backend refuses cu_doc_lens on CPU, so the
    # reference is OLMo-core run on each document alone (what the masking promises); OLMo-core's
    # own per-document RoPE positions are checked in check_doc_rope().
    first_block = next(iter(ref_cfg.block.values())) if isinstance(ref_cfg.block, dict) else ref_cfg.block
    if first_block.sequence_mixer.rope is not None:
        row_docs = ([5, 11, 8], [24], [1, 20, 3])
        cu = np.cumsum([0] + [n for row in row_docs for n in row]).astype(np.int32)
        packed = olm.forward(ours2, ids, cu_doc_lens=cu, max_doc_len=24)
        worst = 0.0
        for b, row in enumerate(row_docs):
            start = 0
            for n in row:
                with torch.no_grad():
                    alone = ref2(t_ids[b:b + 1, start:start + n]).float().numpy()
                worst = max(worst, float(np.abs(packed[b:b + 1, start:start + n] - alone).max()))
                start += n
        check(worst <= LOGIT_TOL, f"packed documents (cu_doc_lens) vs OLMo-core per document: "
                                  f"max |diff| = {worst:.3e} <= {LOGIT_TOL}")

    for m in (ours, loaded, ours2):
        olm.lib.olm_model_free(m)
    olm.lib.olm_config_free(cfg)
    return max(d1[0], d2[0]), max(d1[1], d2[1])


def check_doc_rope():
    """OLMo-core's RotaryEmbedding(cu_doc_lens=...) restarts positions per document; olm's
    packed forward relies on the same rule (tested end to end in run_config)."""
    from olmo_core.nn.rope import RotaryEmbedding
    print("[doc_rope]")
    rope = RotaryEmbedding(head_size=8, theta=10_000)
    q, k = torch.randn(2, 12, 3, 8), torch.randn(2, 12, 1, 8)
    cu = torch.tensor([0, 5, 12, 15, 19, 24], dtype=torch.int32)
    qp, kp = rope(q, k, head_first=False, cu_doc_lens=cu)
    worst = 0.0
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        b, t0 = divmod(s, 12)
        qa, ka = rope(q[b:b + 1, t0:t0 + e - s], k[b:b + 1, t0:t0 + e - s], head_first=False)
        worst = max(worst, float((qp[b:b + 1, t0:t0 + e - s] - qa).abs().max()),
                    float((kp[b:b + 1, t0:t0 + e - s] - ka).abs().max()))
    check(worst == 0.0, f"OLMo-core's intra-document RoPE equals per-document RoPE (max diff {worst})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    olm = Olm(args.lib)
    print("[presets]")
    compare_presets(olm)
    check_doc_rope()
    configs = {
        "olmo2_30M_2layers": TransformerConfig.olmo2_30M(vocab_size=1024, n_layers=2),
        "llama_like_gqa": TransformerConfig.llama_like(
            d_model=128, vocab_size=1000, n_layers=2, n_heads=8, n_kv_heads=2, rope_theta=10_000),
        "llama_like_head_qk_norm_clip": TransformerConfig.llama_like(
            d_model=96, vocab_size=500, n_layers=2, n_heads=4, n_kv_heads=1, qk_norm=True,
            use_head_qk_norm=True, init_seed=7),
    }
    configs["llama_like_head_qk_norm_clip"].block.sequence_mixer.clip_qkv = 0.5
    # The catalogue: block types, gating, sliding windows, norms, residual scaling, embeddings.
    from olmo_core.nn.attention import GateConfig, SlidingWindowAttentionConfig
    from olmo_core.nn.layer_norm import LayerNormConfig
    peri = TransformerConfig.llama_like(
        d_model=64, vocab_size=300, n_layers=3, n_heads=4, n_kv_heads=2, qk_norm=True,
        block_name="peri_norm", gate=GateConfig(granularity="headwise", full_precision=True))
    peri.block.attention_residual_alpha = 0.7
    peri.block.feed_forward_residual_alpha = 1.3
    configs["peri_norm_headwise_gate_alphas"] = peri
    configs["default_scaled_elementwise_gate_swa_qwen_rms"] = TransformerConfig.llama_like(
        d_model=64, vocab_size=300, n_layers=4, n_heads=4, qk_norm=True, use_head_qk_norm=True,
        layer_norm_name="qwen_rms", block_name="default_scaled",
        gate=GateConfig(granularity="elementwise", full_precision=False),
        sliding_window=SlidingWindowAttentionConfig(pattern=[5, -1], force_full_attention_on_first_layer=False))
    olmo3 = TransformerConfig.llama_like(
        d_model=64, vocab_size=300, n_layers=4, n_heads=4, n_kv_heads=1, qk_norm=True,
        block_name="reordered_norm", no_global_rope=True,
        sliding_window=SlidingWindowAttentionConfig(pattern=[4, 4, -1]))
    olmo3.embed_scale = 2.0
    olmo3.embedding_norm = LayerNormConfig(name="default", eps=1e-5, bias=True)
    configs["swa_no_global_rope_embed_scale_norm"] = olmo3
    # Biases everywhere and LayerNorm with bias (GPT-style), and OLMo-core's other inits.
    biased = TransformerConfig.llama_like(d_model=48, vocab_size=200, n_layers=2, n_heads=4,
                                          layer_norm_name="default", init_method="llama_depth")
    biased.block.sequence_mixer.bias = True
    biased.block.feed_forward.bias = True
    biased.block.layer_norm.bias = True
    biased.lm_head.bias = True
    biased.lm_head.layer_norm.bias = True
    configs["biases_layer_norm_llama_depth_init"] = biased
    # RoPE scaling and partial rotary embeddings.
    from olmo_core.nn.rope import (ABFRoPEScalingConfig, PIRoPEScalingConfig,
                                   StepwiseRoPEScalingConfig, YaRNRoPEScalingConfig)
    for label, scaling, partial in (
            ("rope_abf", ABFRoPEScalingConfig(new_theta=1_000_000, attention_rescale_factor=1.1), 1.0),
            ("rope_pi_partial", PIRoPEScalingConfig(factor=4.0), 0.5),
            ("rope_stepwise", StepwiseRoPEScalingConfig(factor=8.0, old_context_len=16, low_freq_proportion=0.1), 1.0),
            ("rope_yarn_partial", YaRNRoPEScalingConfig(factor=4.0, old_context_len=16), 0.75)):
        c = TransformerConfig.llama_like(d_model=64, vocab_size=200, n_layers=2, n_heads=2, n_kv_heads=1,
                                         rope_theta=10_000, rope_scaling=scaling)
        c.block.sequence_mixer.rope.partial_rotary_factor = partial
        configs[label] = c
    # Tied word embeddings (the LM head reads embeddings.weight) and OLMo-core's L2Norm as the
    # QK-norm.
    tied = TransformerConfig.llama_like(d_model=64, vocab_size=200, n_layers=2, n_heads=4, n_kv_heads=2,
                                        qk_norm=True)
    tied.tie_word_embeddings = True
    tied.block.sequence_mixer.qk_norm = LayerNormConfig(name="l2_norm")
    configs["tied_embeddings_l2_qk_norm"] = tied
    for method in ("llama", "fan_in"):
        configs[f"init_{method}"] = TransformerConfig.llama_like(
            d_model=48, vocab_size=200, n_layers=3, n_heads=4, n_kv_heads=2, init_method=method)
    # Gemma-3-like named blocks (5 local sliding-window layers per global one, two RoPE thetas,
    # per-head QK-norm, GeGLU with tanh GELU, embed scale), cut mid-pattern at 7 layers.
    configs["gemma3_like_named_blocks"] = TransformerConfig.gemma3_like(
        d_model=64, vocab_size=300, n_layers=7, n_heads=4, n_kv_heads=2, hidden_size=96, local_window_size=5)
    # block_overrides: one layer of another kind inside a llama-like stack.
    overridden = TransformerConfig.llama_like(d_model=64, vocab_size=300, n_layers=3, n_heads=4)
    other = peri.block.copy()
    overridden.block_overrides = {1: other}
    configs["llama_like_block_override"] = overridden
    # Qwen-3 0.6B, two layers: Qwen RMSNorm everywhere, per-head QK-norm, tied embeddings,
    # RoPE not in full precision.
    configs["qwen3_0_6B_2layers"] = TransformerConfig.qwen3_0_6B(vocab_size=300, n_layers=2)
    # nGPT: normalized transformer, blocks, attention (L2 QK-norm), feed-forward and head.
    configs["ngpt_like"] = TransformerConfig.ngpt_like(d_model=64, vocab_size=300, n_layers=3, n_heads=4)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in configs.items():
            results[label] = run_config(olm, label, cfg, tmp)
    print("\nmaximum differences (logits, losses):")
    for label, (dl, dloss) in results.items():
        print(f"  {label:32s} logits {dl:.3e}  losses {dloss:.3e}")


if __name__ == "__main__":
    main()
