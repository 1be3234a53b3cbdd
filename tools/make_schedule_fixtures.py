#!/usr/bin/env python3
"""Write tests/fixtures/schedules/: diffusers' DDPMScheduler ᾱ (alphas_cumprod) for every beta
schedule expanse supports, with and without `rescale_betas_zero_snr`, so that
src/diffusion/schedule.rs is checked against diffusers itself.

Run:    python3 tools/make_schedule_fixtures.py [OUT_DIR]
        (in a venv made from tools/requirements.txt: torch and diffusers 0.42.1; default OUT_DIR
        tests/fixtures/schedules of this repository)

Files: <schedule>[_zero_snr].npy, float64 casts of diffusers' float32 alphas_cumprod (1000
values), and manifest.json (versions and the scheduler configs).
"""

import json
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import DDPMScheduler

CONFIGS = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures", "schedules")
    os.makedirs(out, exist_ok=True)
    manifest = {"diffusers": diffusers.__version__, "torch": torch.__version__, "files": {}}
    for name, cfg in CONFIGS.items():
        for zero in (False, True):
            s = DDPMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=zero, **cfg)
            file = f"{name}{'_zero_snr' if zero else ''}.npy"
            np.save(os.path.join(out, file), s.alphas_cumprod.numpy().astype(np.float64))
            manifest["files"][file] = dict(cfg, num_train_timesteps=1000, rescale_betas_zero_snr=zero)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
