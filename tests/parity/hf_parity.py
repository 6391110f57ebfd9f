#!/usr/bin/env python3
"""Hugging Face model directories in and out of olm, against the pinned transformers.

For every architecture olm imports (Llama with each rope_scaling type, OLMo-2, OLMo-3, Qwen3,
OLMoE, Qwen3-MoE, Gemma3), a small transformers model with random weights (norm weights
included, so a misplaced or mis-offset norm shows) is saved with save_pretrained, sharded with a
small max_shard_size, and as a bfloat16 copy. olm loads both through the C API
(olm_model_from_hf_dir) and its logits on the same tokens are compared with transformers':

- float32: olm's float32 model against transformers' float32 model. The bound is derived from
  the computation: float32 rounding (eps 2^-24 relative per operation) accumulates over dot
  products of length ~d (a sqrt(d) growth for random-sign errors) in each of the n_layers blocks
  and the head, so |diff| <= C * eps * sqrt(d) * (n_layers + 1) * max|logit| with a safety
  constant C = 16.
- bfloat16: olm's bfloat16 model (the directory's torch_dtype) against transformers in float32
  on the bfloat16-rounded weights. bfloat16 matmuls accumulate in float32 and round their
  outputs, so the error is a few roundings (eps 2^-9) per block: |diff| <= C' * eps_bf16 *
  (n_layers + 1) * max|logit| with C' = 8.

Then olm writes the float32 model back (olm_model_save_hf_dir, sharded), transformers loads it
with output_loading_info=True: no missing or unexpected keys, and the logits must equal the
original model's (the weights are the same float32 values, so the difference is 0 up to
transformers' own nondeterminism, bounded by the float32 bound above).

A few config.json fields olm cannot express are checked to be refused naming the field.
"""
import argparse
import ctypes as C
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olm_ctypes import Olm, OlmError  # noqa: E402

import transformers  # noqa: E402

OLM_DTYPE_FLOAT32 = 2
OLM_DTYPE_BFLOAT16 = 3
EPS32 = 2.0 ** -24
EPSBF16 = 2.0 ** -9
SAFETY = 16.0
# bfloat16 rounds each layer's activations (its matmuls accumulate in float32): a handful of
# roundings per block, no sqrt(d) growth.
BF16_SAFETY = 8.0
VOCAB = 1000
SEQ = 48


class HfLoadOptions(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("dtype", C.c_int32), ("device", C.c_char_p)]


class HfSaveOptions(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("max_shard_bytes", C.c_int64), ("tokenizer_source_dir", C.c_char_p),
                ("dtype", C.c_int32), ("bos_token_id", C.c_int64), ("eos_token_id", C.c_int64)]


class OlmHf(Olm):
    def __init__(self, path):
        super().__init__(path)
        vp = C.c_void_p
        pvp = C.POINTER(vp)
        sigs = {
            "olm_hf_load_options_init_sized": (None, [C.POINTER(HfLoadOptions), C.c_size_t]),
            "olm_hf_save_options_init_sized": (None, [C.POINTER(HfSaveOptions), C.c_size_t]),
            "olm_model_from_hf_dir": (vp, [C.c_char_p, C.POINTER(HfLoadOptions), pvp]),
            "olm_config_from_hf_dir": (vp, [C.c_char_p, C.POINTER(HfLoadOptions), pvp]),
            "olm_model_save_hf_dir": (vp, [vp, C.c_char_p, C.POINTER(HfSaveOptions)]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(self.lib, name)
            fn.restype = res
            fn.argtypes = args

    def load_hf(self, path, dtype=-1):
        opts = HfLoadOptions()
        self.lib.olm_hf_load_options_init_sized(C.byref(opts), C.sizeof(opts))
        opts.dtype = dtype
        out = C.c_void_p()
        self.check(self.lib.olm_model_from_hf_dir(str(path).encode(), C.byref(opts), C.byref(out)))
        return out

    def hf_config(self, path):
        out = C.c_void_p()
        self.check(self.lib.olm_config_from_hf_dir(str(path).encode(), None, C.byref(out)))
        cfg = self.config_to_dict(out)
        self.lib.olm_config_free(out)
        return cfg

    def save_hf(self, model, path, max_shard_bytes):
        opts = HfSaveOptions()
        self.lib.olm_hf_save_options_init_sized(C.byref(opts), C.sizeof(opts))
        opts.max_shard_bytes = max_shard_bytes
        self.check(self.lib.olm_model_save_hf_dir(model, str(path).encode(), C.byref(opts)))


def check(cond, message):
    print(("ok   " if cond else "FAIL ") + message, flush=True)
    if not cond:
        sys.exit(1)


COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)


def cases():
    """(name, config class, model class, config kwargs)."""
    T = transformers
    llama = [
        ("llama", dict()),
        ("llama_tied", dict(tie_word_embeddings=True)),
        ("llama_rope_llama3", dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
        ("llama_rope_linear", dict(rope_scaling={"rope_type": "linear", "factor": 2.0})),
        # max_position_embeddings below the sequence: the dynamic base grows.
        ("llama_rope_dynamic", dict(max_position_embeddings=32, rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
        ("llama_rope_yarn", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 32})),
    ]
    out = [(n, T.LlamaConfig, T.LlamaForCausalLM, {**COMMON, **kw}) for n, kw in llama]
    out.append(("olmo2", T.Olmo2Config, T.Olmo2ForCausalLM, dict(COMMON)))
    out.append(("olmo3", T.Olmo3Config, T.Olmo3ForCausalLM,
                {**COMMON, "num_hidden_layers": 4, "sliding_window": 8,
                 "rope_scaling": {"rope_type": "linear", "factor": 2.0}}))
    # OLMo-3's long-context configs: YaRN with its default attention_factor stated.
    out.append(("olmo3_yarn", T.Olmo3Config, T.Olmo3ForCausalLM,
                {**COMMON, "num_hidden_layers": 4, "sliding_window": 8,
                 "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16,
                                  "attention_factor": 0.1 * math.log(8.0) + 1.0, "beta_fast": 32, "beta_slow": 1}}))
    out.append(("qwen3", T.Qwen3Config, T.Qwen3ForCausalLM,
                {**COMMON, "head_dim": 32, "tie_word_embeddings": True}))
    out.append(("olmoe", T.OlmoeConfig, T.OlmoeForCausalLM,
                {**COMMON, "num_experts": 8, "num_experts_per_tok": 2, "intermediate_size": 32}))
    out.append(("qwen3_moe", T.Qwen3MoeConfig, T.Qwen3MoeForCausalLM,
                {**COMMON, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                 "norm_topk_prob": True}))
    out.append(("gemma3", T.Gemma3TextConfig, T.Gemma3ForCausalLM,
                {**COMMON, "num_hidden_layers": 4, "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 8,
                 "sliding_window_pattern": 2, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                 "rope_scaling": {"rope_type": "linear", "factor": 2.0}}))
    # Gemma3 27B's query_pre_attn_scalar (168 for head_dim 128) differs from head_dim.
    out.append(("gemma3_query_scalar", T.Gemma3TextConfig, T.Gemma3ForCausalLM,
                {**COMMON, "num_hidden_layers": 2, "head_dim": 32, "query_pre_attn_scalar": 42, "sliding_window": 8}))
    return out


def build(config_cls, model_cls, kwargs, seed):
    torch.manual_seed(seed)
    config = config_cls(**kwargs)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # Gemma3's are zero-centred (1 + w), the others one-centred
                base = 0.0 if isinstance(model, transformers.Gemma3ForCausalLM) else 1.0
                p.copy_(base + 0.2 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):
                # Decisive routers: near-ties in the top-k would flip under any rounding change.
                p.copy_(1.0 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.float().numpy()


def run_case(olm, name, config_cls, model_cls, kwargs, tmp, seed, report):
    t0 = time.time()
    model = build(config_cls, model_cls, kwargs, seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=(2, SEQ)).astype(np.int64)
    ref32 = hf_logits(model, ids)
    scale = float(np.abs(ref32).max())
    d = kwargs["hidden_size"]
    layers = kwargs["num_hidden_layers"]
    bound32 = SAFETY * EPS32 * math.sqrt(d) * (layers + 1) * scale

    f32_dir = os.path.join(tmp, name + "_f32")
    model.save_pretrained(f32_dir, max_shard_size="100KB", safe_serialization=True)
    shards = [f for f in os.listdir(f32_dir) if f.endswith(".safetensors")]
    check(len(shards) > 1 and os.path.exists(os.path.join(f32_dir, "model.safetensors.index.json")),
          f"{name}: transformers wrote {len(shards)} shards and an index")
    m32 = olm.load_hf(f32_dir, OLM_DTYPE_FLOAT32)
    got32 = olm.forward(m32, ids)
    diff32 = float(np.abs(got32 - ref32).max())
    check(diff32 <= bound32, f"{name}: float32 max |olm - transformers| = {diff32:.3g} "
                             f"(bound {bound32:.3g}, max |logit| {scale:.3g})")

    # bfloat16: the directory's torch_dtype; the reference is float32 on the rounded weights.
    bf_dir = os.path.join(tmp, name + "_bf16")
    model.to(torch.bfloat16).save_pretrained(bf_dir, max_shard_size="100KB")
    ref_model = model_cls.from_pretrained(bf_dir, dtype=torch.float32).eval()
    refbf = hf_logits(ref_model, ids)
    del ref_model
    cfg_bf = olm.hf_config(bf_dir)
    check(cfg_bf.get("dtype") == "bfloat16", f"{name}: bfloat16 directory gives an olm bfloat16 config")
    # The bfloat16 files exactly: olm in float32 on them against the float32 reference.
    mbf32 = olm.load_hf(bf_dir, OLM_DTYPE_FLOAT32)
    diffbf32 = float(np.abs(olm.forward(mbf32, ids) - refbf).max())
    olm.lib.olm_model_free(mbf32)
    check(diffbf32 <= bound32, f"{name}: bfloat16 files read into float32: max diff {diffbf32:.3g} (bound {bound32:.3g})")
    mbf = olm.load_hf(bf_dir)
    gotbf = olm.forward(mbf, ids)
    olm.lib.olm_model_free(mbf)
    per_position = np.abs(gotbf - refbf).max(-1)
    diffbf = float(per_position.max())
    boundbf = BF16_SAFETY * EPSBF16 * (layers + 1) * float(np.abs(refbf).max())
    # MoE: bfloat16 rounding can flip a near-tie in a router's top-k, which moves that
    # position's logits by far more than rounding does (transformers' own bfloat16 run flips
    # some too). Such positions are counted and must stay rare; dense models have none.
    outliers = int((per_position > boundbf).sum())
    allowed = int(0.05 * per_position.size) if "num_experts" in kwargs else 0
    check(outliers <= allowed,
          f"{name}: bfloat16 max |olm bf16 - transformers f32 on bf16 weights| = {diffbf:.3g} (bound {boundbf:.3g}; "
          f"{outliers} of {per_position.size} positions past it, {allowed} allowed for router flips; "
          f"max elsewhere {float(per_position[per_position <= boundbf].max()):.3g})")

    if name == "llama":
        # float16 files: a float32 olm model (olm has no float16 models), exact on those weights.
        f16_dir = os.path.join(tmp, name + "_f16")
        model.to(torch.float16).save_pretrained(f16_dir, max_shard_size="100KB")
        model.to(torch.float32)
        ref16 = hf_logits(model_cls.from_pretrained(f16_dir, dtype=torch.float32).eval(), ids)
        check(olm.hf_config(f16_dir).get("dtype", "float32") == "float32", f"{name}: a float16 directory is a float32 olm model")
        m16 = olm.load_hf(f16_dir)
        diff16 = float(np.abs(olm.forward(m16, ids) - ref16).max())
        olm.lib.olm_model_free(m16)
        check(diff16 <= bound32, f"{name}: float16 files: max diff {diff16:.3g} (bound {bound32:.3g})")

    # Export and reload in transformers.
    out_dir = os.path.join(tmp, name + "_export")
    olm.save_hf(m32, out_dir, max_shard_bytes=150_000)
    olm.lib.olm_model_free(m32)
    files = sorted(os.listdir(out_dir))
    check("config.json" in files and "generation_config.json" in files and "model.safetensors.index.json" in files,
          f"{name}: export wrote {len(files)} files, sharded with an index")
    back, info = transformers.AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True,
                                                                   dtype=torch.float32)
    check(type(back) is model_cls, f"{name}: transformers loads the export as {type(back).__name__}")
    check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
          f"{name}: no missing/unexpected/mismatched keys ({info['missing_keys']}, {info['unexpected_keys']}, "
          f"{info['mismatched_keys']})")
    back_logits = hf_logits(back.eval(), ids)
    diff_back = float(np.abs(back_logits - ref32).max())
    check(diff_back <= bound32, f"{name}: exported model's logits in transformers differ by {diff_back:.3g}")
    report.append((name, diff32, diffbf, outliers, diff_back, time.time() - t0))


def refusals(olm, tmp):
    base = transformers.LlamaConfig(**COMMON).to_dict()

    def expect(label, edits, field, start=base):
        cfg = dict(start, **edits)
        d = os.path.join(tmp, "refuse_" + label)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        try:
            olm.hf_config(d)
        except OlmError as e:
            check(field in str(e), f"refused {label}: {e}")
            return
        check(False, f"{label} was accepted")

    expect("unknown_architecture", {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "MistralForCausalLM")
    expect("attention_bias", {"attention_bias": True}, "attention_bias")
    expect("mlp_bias", {"mlp_bias": True}, "mlp_bias")
    expect("longrope", {"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope_scaling.rope_type")
    expect("yarn_mscale", {"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "mscale": 0.7}}, "rope_scaling.mscale")
    expect("unknown_field", {"my_new_feature": 3}, "my_new_feature")
    expect("olmoe_clip_qkv", {"clip_qkv": 8.0}, "clip_qkv", start=transformers.OlmoeConfig(**COMMON).to_dict())
    expect("gemma3_attn_logit_softcapping", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping",
           start=transformers.Gemma3TextConfig(**dict(COMMON, head_dim=16, query_pre_attn_scalar=16)).to_dict())


MEMORY_CHILD = r"""
import ctypes as C, sys
lib = C.CDLL(sys.argv[1])
lib.olm_model_from_hf_dir.restype = C.c_void_p
lib.olm_model_from_hf_dir.argtypes = [C.c_char_p, C.c_void_p, C.POINTER(C.c_void_p)]
lib.olm_model_free.argtypes = [C.c_void_p]
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
out = C.c_void_p()
assert lib.olm_model_from_hf_dir(sys.argv[2].encode(), None, C.byref(out)) is None  # warm up the library
lib.olm_model_free(out)
with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak (VmHWM) to the current RSS
    f.write("5")
before = status("VmRSS")
out = C.c_void_p()
assert lib.olm_model_from_hf_dir(sys.argv[3].encode(), None, C.byref(out)) is None
print(status("VmHWM") - before)
"""


def memory_check(lib, tmp):
    """Loading never holds two copies of the weights: the peak resident memory a load adds is
    the model plus the one shard mapped at a time (file pages count as resident once read)."""
    import subprocess
    small = build(transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(COMMON), 1)
    small_dir = os.path.join(tmp, "mem_small")
    small.save_pretrained(small_dir)
    kwargs = dict(COMMON, vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8)
    torch.manual_seed(0)
    big = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs))
    model_bytes = sum(p.numel() * 4 for p in big.parameters())
    big_dir = os.path.join(tmp, "mem_big")
    big.save_pretrained(big_dir, max_shard_size="40MB")
    del big
    shard = max(os.path.getsize(os.path.join(big_dir, f)) for f in os.listdir(big_dir) if f.endswith(".safetensors"))
    added = int(subprocess.run([sys.executable, "-c", MEMORY_CHILD, lib, small_dir, big_dir], check=True,
                               capture_output=True, text=True).stdout.strip())
    limit = model_bytes + shard + 32 * 2 ** 20
    check(added <= limit, f"loading {model_bytes / 2**20:.0f} MiB of weights ({shard / 2**20:.0f} MiB shards) raised the "
                          f"peak resident memory by {added / 2**20:.0f} MiB (limit: the model, one shard and 32 MiB, "
                          f"{limit / 2**20:.0f} MiB; two copies would be {2 * model_bytes / 2**20:.0f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--only", default="", help="comma-separated case names (skips the memory check)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    olm = OlmHf(args.lib)
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        refusals(olm, tmp)
        if not args.only:
            memory_check(args.lib, tmp)
        for name, config_cls, model_cls, kwargs in cases():
            if args.only and name not in args.only.split(","):
                continue
            run_case(olm, name, config_cls, model_cls, kwargs, tmp, zlib.crc32(name.encode()) % 100000, report)
            for entry in os.listdir(tmp):
                if entry.startswith(name + "_"):
                    shutil.rmtree(os.path.join(tmp, entry))
    print("\narchitecture          float32 max|diff|  bfloat16 max|diff| (router-flip positions)  "
          "export reload max|diff|  seconds")
    for name, d32, dbf, flips, dback, secs in report:
        print(f"{name:22s}{d32:18.3g}{dbf:20.3g} ({flips}){'':20s}{dback:25.3g}{secs:9.1f}")


if __name__ == "__main__":
    main()
