"""Per-operator CPU profile of one diffusers UNet2DModel forward (torch.profiler): the reference
side of `expanse bench --profile`.

    OMP_NUM_THREADS=1 python3 tools/profile_diffusers.py MODEL_DIR BATCH THREADS

(python3 in a venv made from tools/requirements.txt.)

Prints torch's table for three forwards after two warm-ups (divide its times by three).
"""
import sys

import torch
from diffusers import UNet2DModel
from torch.profiler import ProfilerActivity, profile


def main():
    model_dir, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    model = UNet2DModel.from_pretrained(model_dir).eval()
    size = model.config.sample_size
    torch.manual_seed(0)
    x = torch.randn(batch, model.config.in_channels, size, size)
    t = torch.tensor([500] * batch)
    with torch.no_grad():
        for _ in range(2):
            model(x, t)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(3):
                model(x, t)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
