#!/usr/bin/env python3
"""Reference timing for BENCHMARKS.md: diffusers' UNet2DModel forward pass on the same weights,
batch, map size and thread count as `expanse bench`.

    python3 tools/bench_diffusers.py --model DIR --batch 8 --size 32 --threads 1 --repeats 10 [--device cuda]

Needs torch and diffusers: python3 in a venv made from tools/requirements.txt
(`python3 -m venv .venv-ref && .venv-ref/bin/pip install -r tools/requirements.txt`).
Prints the median milliseconds per batch and per map, and the peak resident memory.
"""

import argparse
import resource
import statistics
import time

import torch
from diffusers import UNet2DModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = UNet2DModel.from_pretrained(a.model).eval().to(a.device)
    size = a.size or model.config.sample_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, model.config.in_channels, size, size, generator=g).to(a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    times = []
    with torch.no_grad():
        model(x, 500)
        sync()
        for i in range(a.repeats):
            t = time.perf_counter()
            model(x, (i * 97) % 1000)
            sync()
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    import diffusers
    print(f"diffusers {diffusers.__version__} torch {torch.__version__} {a.device} threads {a.threads} batch {a.batch} {size}x{size}")
    print(f"UNet forward: median {1e3 * med:.1f} ms per batch ({1e3 * med / a.batch:.2f} ms per map, "
          f"{a.batch / med:.1f} maps/s) over {len(times)} runs; min {1e3 * min(times):.1f} ms, max {1e3 * max(times):.1f} ms")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if a.device.startswith("cuda"):
        print(f"peak device memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
