#!/usr/bin/env python3
"""Writes a randomly initialized diffusers UNet2DModel with the architecture of the google/ddpm-*-256
hub models (LSUN church/cat/bedroom: 6 levels of 128-512 channels, attention at 16x16, 256x256 RGB)
and their linear-beta scheduler config, for benchmarks and dry runs without a download.
The weights are random: the folder is for timing and memory only, never for samples.

    python3 tools/make_ddpm256_like.py --out out/ddpm256-like
    python3 tools/make_ddpm256_like.py --arch unet64 --out out/unet64-attn

`--arch unet64` writes instead the benchmarks' 64x64 four-level UNet with attention: channels
64-128-128-256, two resnets per level, multi-head attention (head dim 32) at 16x16 and in the
middle block, 32 groups.

Needs torch and diffusers (python3 in a venv made from tools/requirements.txt).
"""

import argparse
import json
import os

import torch
from diffusers import UNet2DModel

CONFIG = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    center_input_sample=False,
    time_embedding_type="positional",
    freq_shift=1,
    flip_sin_to_cos=False,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    block_out_channels=(128, 128, 256, 256, 512, 512),
    layers_per_block=2,
    mid_block_scale_factor=1,
    downsample_padding=0,
    act_fn="silu",
    attention_head_dim=None,
    norm_num_groups=32,
    norm_eps=1e-6,
)

UNET64 = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    block_out_channels=(64, 128, 128, 256),
    layers_per_block=2,
    attention_head_dim=32,
    norm_num_groups=32,
)

SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--arch", choices=["ddpm256", "unet64"], default="ddpm256")
    a = p.parse_args()
    torch.manual_seed(0)
    model = UNet2DModel(**(CONFIG if a.arch == "ddpm256" else UNET64))
    model.save_pretrained(a.out, safe_serialization=True)
    with open(os.path.join(a.out, "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: {n / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
