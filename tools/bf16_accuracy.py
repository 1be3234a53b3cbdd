#!/usr/bin/env python3
"""How far bf16 moves the UNet's output, expanse beside PyTorch, for BENCHMARKS.md.

    python3 tools/bf16_accuracy.py --model data/models/expanse-natural-32 --size 128 --batch 2 \
        [--expanse target/release/expanse] [--timesteps 50,500,950]

One random (B, C, H, W) input (seed 0) through `expanse unet-eval` in f32 and bf16 and through
diffusers' UNet2DModel in float32 and bfloat16, at each timestep; prints the relative RMS error
(RMS of the difference over the RMS of diffusers' float32 output) of each against diffusers'
float32. Needs torch and diffusers (a venv from tools/requirements.txt).
"""

import argparse
import os
import subprocess
import tempfile

import numpy as np
import torch
from diffusers import UNet2DModel


def rel(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--expanse", default="target/release/expanse")
    p.add_argument("--timesteps", default="50,500,950")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = UNet2DModel.from_pretrained(a.model).eval()
    model_bf16 = UNet2DModel.from_pretrained(a.model, torch_dtype=torch.bfloat16).eval()
    size = a.size or model.config.sample_size
    x = np.random.default_rng(0).standard_normal((a.batch, model.config.in_channels, size, size)).astype(np.float32)
    print(f"# {a.model} batch {a.batch} {size}x{size}: relative RMS error against diffusers float32")
    print("| timestep | expanse f32 | expanse bf16 | PyTorch bf16 |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "x.npy")
        np.save(inp, x)
        for t in [int(v) for v in a.timesteps.split(",")]:
            ours = {}
            for dtype in ["f32", "bf16"]:
                out = os.path.join(tmp, f"y_{dtype}.npy")
                subprocess.run(
                    [a.expanse, "--threads", str(a.threads), "unet-eval", "--model", a.model, "--input", inp,
                     "--timestep", str(t), "--out", out, "--dtype", dtype],
                    check=True, capture_output=True)
                ours[dtype] = np.load(out)
            with torch.no_grad():
                ref = model(torch.from_numpy(x), t).sample.numpy()
                bf = model_bf16(torch.from_numpy(x).to(torch.bfloat16), t).sample.float().numpy()
            print(f"| {t} | {rel(ours['f32'], ref):.2e} | {rel(ours['bf16'], ref):.2e} | {rel(bf, ref):.2e} |")


if __name__ == "__main__":
    main()
