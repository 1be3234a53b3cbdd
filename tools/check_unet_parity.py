#!/usr/bin/env python3
"""Compares expanse's raw UNet output with diffusers' on one random input: the check behind the
parity lines of BENCHMARKS.md for models too large to commit as fixtures.

    python3 tools/check_unet_parity.py --model out/unet64-attn --batch 2 --timestep 421

(python3 in a venv made from tools/requirements.txt.)

Runs `target/release/expanse unet-eval` (build it first) and diffusers' UNet2DModel on the same
float32 input and prints the largest absolute difference and the output's scale.
"""

import argparse
import os
import subprocess
import tempfile

import numpy as np
import torch
from diffusers import UNet2DModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--timestep", type=float, default=421)
    p.add_argument("--expanse", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "expanse"))
    a = p.parse_args()
    model = UNet2DModel.from_pretrained(a.model).eval()
    size = model.config.sample_size
    x = np.random.default_rng(0).standard_normal((a.batch, model.config.in_channels, size, size)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x), a.timestep).sample.numpy()
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x.npy"), x)
        subprocess.run([a.expanse, "unet-eval", "--model", a.model, "--input", os.path.join(d, "x.npy"), "--timestep", str(a.timestep),
                        "--out", os.path.join(d, "y.npy")], check=True, capture_output=True)
        got = np.load(os.path.join(d, "y.npy"))
    print(f"{a.model}: max abs difference {np.abs(got - want).max():.2e} (output max abs {np.abs(want).max():.2f})")


if __name__ == "__main__":
    main()
