#!/usr/bin/env python3
"""Reference timing for BENCHMARKS.md: guided-diffusion's own `UNetModel` forward pass on an ADM
model folder (adm.json + model.pt), at the batch, map size and thread count of `expanse bench`.

    PYTHONPATH=.venv-gdsdk python3 tools/bench_adm.py --model DIR --batch 1 --threads 2 --repeats 3

Needs torch (python3 in a venv made from tools/requirements.txt) and guided-diffusion-sdk 1.0.0
(`pip install --no-deps --target .venv-gdsdk -r tools/requirements-adm.txt`). The model is built with `guided_diffusion.script_util.create_model`
from the flags in adm.json (guided-diffusion's defaults for the missing ones) and runs in float32
(as `expanse bench --dtype f32`; `use_fp16` only matters on a GPU). Prints the median milliseconds
per batch and per map, and the peak resident memory.
"""

import argparse
import json
import os
import sys

import torch
from guided_diffusion.script_util import create_model, model_and_diffusion_defaults

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import print_report, time_forward  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    flags = model_and_diffusion_defaults()
    with open(os.path.join(a.model, "adm.json")) as f:
        flags.update(json.load(f))
    keys = create_model.__code__.co_varnames[: create_model.__code__.co_argcount]
    kwargs = {k: flags[k] for k in keys if k in flags}
    kwargs["use_fp16"] = False
    model = create_model(**kwargs)
    ckpt = [f for f in os.listdir(a.model) if f.endswith((".pt", ".pth", ".ckpt"))][0]
    model.load_state_dict(torch.load(os.path.join(a.model, ckpt), map_location="cpu", weights_only=True))
    model.eval().to(a.device)
    size = a.size or flags["image_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, size, size, generator=g).to(a.device)
    times = time_forward(lambda t: model(x, torch.full((a.batch,), t, device=a.device)), a.device, a.repeats)
    params = sum(p.numel() for p in model.parameters())
    header = (f"guided-diffusion torch {torch.__version__} {a.device} threads {a.threads} batch {a.batch} "
              f"{size}x{size}, {params / 1e6:.2f} M parameters")
    print_report(header, times, a.batch, a.device)


if __name__ == "__main__":
    main()
