#!/usr/bin/env python3
"""A sharded olm checkpoint, converted by `olm convert`, loads into the real OLMo-core.

Two ranks (started by hand with torchrun's environment variables) train a llama-like model
built from an OLMo-core TransformerConfig for a few steps and write a sharded checkpoint
(rank0.safetensors, rank1.safetensors, meta.olmk). `olm convert` turns it into one
safetensors file with OLMo-core names; OLMo-core's model loads it with load_state_dict
(strict) and its float32 logits must equal olm's, computed from the sharded checkpoint itself
through the C API (olm_trainer_load_checkpoint at world size 1), to 1e-5.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from olm_ctypes import Olm  # noqa: E402
from olmo_core_parity import to_olm_json  # noqa: E402

from olmo_core.nn.transformer import TransformerConfig  # noqa: E402

LOGIT_TOL = 1e-5


def check(cond, message):
    print(("ok   " if cond else "FAIL ") + message, flush=True)
    if not cond:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--olm", required=True)
    args = ap.parse_args()
    olm_cli = os.path.abspath(args.olm)
    olm = Olm(args.lib)

    ref_cfg = TransformerConfig.llama_like(d_model=64, vocab_size=264, n_layers=2, n_heads=4, n_kv_heads=2)
    model_json = to_olm_json(ref_cfg)

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        with open("a.txt", "w") as f:
            for i in range(80):
                f.write(f"Line {i} of some text to train on, with a little variety {i * i}.\n%\n")
        subprocess.run([olm_cli, "tokenize", "--fortunes", "--output", "train.bin", "a.txt"], check=True,
                       stdout=subprocess.DEVNULL)
        train = {"model": model_json, "sequence_length": 16, "global_batch_size": 64, "rank_microbatch_size": 16,
                 "max_steps": 4, "seed": 7, "max_grad_norm": 1.0, "optimizer": {"name": "adamw", "lr": 0.003},
                 "data": {"paths": ["train.bin"], "eos_token_id": 256}, "save_folder": "runs/sharded"}
        train_text = json.dumps(train)
        with open("train.json", "w") as f:
            f.write(train_text)

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        procs = []
        for rank in range(2):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen([olm_cli, "train", "--config", "train.json"], env=env,
                                          stdout=open(f"rank{rank}.out", "w"), stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=300) for p in procs]
        if any(codes):
            for rank in range(2):
                print(open(f"rank{rank}.out").read())
        check(codes == [0, 0], f"2 ranks trained 4 steps (exit codes {codes})")
        step = "runs/sharded/step4"
        files = sorted(os.listdir(step))
        check(files == ["meta.olmk", "rank0.safetensors", "rank1.safetensors"], f"sharded checkpoint: {files}")

        subprocess.run([olm_cli, "convert", "--checkpoint", "runs/sharded", "--output", "converted.safetensors"],
                       check=True)
        state = load_file("converted.safetensors")
        ref = ref_cfg.build(init_device="cpu")
        ref.eval()
        ref_names = sorted(ref.state_dict())
        check(sorted(state) == ref_names, f"converted names equal OLMo-core's state dict ({len(ref_names)} tensors)")
        ref.load_state_dict(state, strict=True)
        check(True, "OLMo-core load_state_dict(strict=True) of the converted file")

        # olm's logits from the sharded checkpoint itself, loaded at world size 1.
        cfg = olm.config_from_json(json.dumps(model_json))
        model = olm.model(cfg, init_weights=False)
        trainer = olm.trainer(model, olm.train_config(train_text))
        olm.load_checkpoint(trainer, "runs/sharded")

        rng = np.random.default_rng(1234)
        ids = rng.integers(0, ref_cfg.vocab_size, size=(3, 24), dtype=np.int64)
        with torch.no_grad():
            ref_logits = ref(torch.from_numpy(ids)).float().numpy()
        logits = olm.forward(model, ids)
        diff = float(np.abs(logits - ref_logits).max())
        check(diff <= LOGIT_TOL, f"OLMo-core logits on the converted file vs olm's from the sharded checkpoint: "
                                 f"max |diff| = {diff:.3e} <= {LOGIT_TOL}")
    print("convert parity: all checks passed")


if __name__ == "__main__":
    main()
