#!/usr/bin/env python3
"""Reference timing for BENCHMARKS.md: diffusers' UNet2DModel forward pass on the same weights,
batch, map size and thread count as `expanse bench`.

    python3 tools/bench_diffusers.py --model DIR --batch 8 --size 32 --threads 1 --repeats 10 [--device cuda] [--dtype bf16]

Needs torch and diffusers: python3 in a venv made from tools/requirements.txt
(`python3 -m venv .venv-ref && .venv-ref/bin/pip install -r tools/requirements.txt`).
Prints the median milliseconds per batch and per map, and the peak resident memory. `--dtype bf16`
runs the module in bfloat16 (weights and activations; on the CPU oneDNN's bf16 kernels), the
reference for expanse's `model.dtype = "bf16"`.
"""

import argparse
import os
import sys

import torch
from diffusers import UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import print_report, time_forward  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    model = UNet2DModel.from_pretrained(a.model).eval().to(a.device, dtype)
    size = a.size or model.config.sample_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, model.config.in_channels, size, size, generator=g).to(a.device, dtype)
    times = time_forward(lambda t: model(x, t), a.device, a.repeats)
    import diffusers
    header = f"diffusers {diffusers.__version__} torch {torch.__version__} {a.device} {a.dtype} threads {a.threads} batch {a.batch} {size}x{size}"
    print_report(header, times, a.batch, a.device)


if __name__ == "__main__":
    main()
