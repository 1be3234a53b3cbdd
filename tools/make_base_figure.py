#!/usr/bin/env python3
"""figures/base_model.png: training crops beside DDIM samples from N(0, I), the training loss
curve, and reconstructions of unseen maps (written by tools/evaluate_base.sh)."""

import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_base  # noqa: E402


def grid(images, rows, cols):
    """(N, 3, H, W) in [-1, 1] → an RGB mosaic in [0, 1]."""
    n, _, h, w = images.shape
    out = np.ones((rows * (h + 2), cols * (w + 2), 3))
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        img = np.clip((images[i].transpose(1, 2, 0) + 1) / 2, 0, 1)
        out[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = img
    return out


def gray_rows(originals, recons, count):
    h, w = originals.shape[2:]
    out = np.ones((2 * (h + 2), count * (w + 2)))
    for i in range(count):
        out[0:h, i * (w + 2):i * (w + 2) + w] = originals[i, 0]
        out[h + 2:2 * h + 2, i * (w + 2):i * (w + 2) + w] = recons[i, 0]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    images, _ = train_base.load_images(train_base.DATA_DIR)
    crops = train_base.CropSampler(images, np.random.default_rng(123)).sample(16).numpy()
    samples = np.load(os.path.join(a.eval, "samples.npy"))
    clipped = np.load(os.path.join(a.eval, "samples_clip1.npy"))
    steps, losses = [], []
    with open(os.path.join(a.model, "training_log.csv")) as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))

    fig = plt.figure(figsize=(17, 8.5))
    gs = fig.add_gridspec(2, 4, height_ratios=[1, 1])
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(grid(crops, 4, 4))
    ax.set_title("training crops (32×32, random scale/flip)")
    ax.axis("off")
    ax = fig.add_subplot(gs[0, 1])
    ax.imshow(grid(samples, 4, 4))
    ax.set_title("expanse DDIM samples from N(0, I)\n(100 steps, t0 = 999, no clipping)")
    ax.axis("off")
    ax = fig.add_subplot(gs[0, 2])
    ax.imshow(grid(clipped, 4, 4))
    ax.set_title("the same latents, x̂₀ clipped to [-1, 1]")
    ax.axis("off")
    ax = fig.add_subplot(gs[0, 3])
    ax.plot(steps, losses, color="#0072B2")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("ε-MSE (mean of last 50 steps)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    table = []
    for k, domain in enumerate(["hubble", "clouds"]):
        orig_path = os.path.join(a.eval, f"{domain}.h5")
        import h5py
        with h5py.File(orig_path) as f:
            orig = f["maps"][...]
        rec = np.load(os.path.join(a.eval, f"rec_{domain}_100.npy"))
        ax = fig.add_subplot(gs[1, k])
        ax.imshow(gray_rows(orig, rec, 6), cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(f"{domain}: originals (top),\n100-step reconstructions (bottom)")
        ax.axis("off")
        for s in (50, 100):
            r = json.load(open(os.path.join(a.eval, f"rec_{domain}_{s}.json")))
            table.append((domain, s, r["mean_mse"], r["mean_psnr_db"]))
    ax = fig.add_subplot(gs[1, 2:])
    ax.axis("off")
    text = "invert → generate, model space [-1, 1], 32 maps each\n\n"
    text += f"{'domain':<8}{'steps':>6}{'MSE':>11}{'PSNR dB':>10}\n"
    for d, s, mse, psnr in table:
        text += f"{d:<8}{s:>6}{mse:>11.2e}{psnr:>10.2f}\n"
    ax.text(0.0, 0.9, text, family="monospace", fontsize=10, va="top")
    ax.set_title("reconstruction error of unseen maps")
    fig.suptitle(f"base model {os.path.basename(os.path.normpath(a.model))}")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)
    for d, s, mse, psnr in table:
        print(f"{d} {s} steps: mean MSE {mse:.3e}, mean PSNR {psnr:.2f} dB")


if __name__ == "__main__":
    main()
