"""Real-vs-synthetic figures of the fidelity benchmark on real fields (FIDELITY.md).

For each domain of a benchmark folder (`expanse fidelity CONFIG --out DIR`), one figure: the first
six real maps, then the first six synthetic maps of each variant's seed-0 run (and of the WPH
baseline when its folder is given), all on one colour scale, the 1st-99th percentiles of the real
maps in the domain's transform (log10 for positive maps made with transform = "log10", asinh for
"asinh", else the values), so that structure can be compared by eye: filaments must stay
filaments, compact sources compact.

    python tools/make_real_fidelity_figures.py runs/fidelity_real_64 --wph runs/wph_64 \\
        --out figures/fidelity_real_64

writes figures/fidelity_real_64_<domain>.png. Needs numpy, astropy, matplotlib (and its pillow)
(tools/requirements-figures.txt).
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from PIL import Image  # noqa: E402

VARIANTS = ["diffusion", "diffusion-refined", "paper", "gaussian", "gaussian-refined"]


def transform_of(run, domain):
    """The domain's transform kind and its asinh softening, from the run's resolved config."""
    text = open(os.path.join(run, "config.toml")).read()
    kind, block = "linear", None
    for part in text.split("[[domain]]")[1:]:
        if f'name = "{domain}"' in part:
            block = part
    if block and 'transform = "log10"' in block:
        kind = "log10"
    if block and 'transform = "asinh"' in block:
        kind = "asinh"
    return kind


def shown(maps, kind, softening):
    if kind == "log10":
        return np.log10(np.clip(maps, 1e-30, None))
    if kind == "asinh":
        return np.arcsinh(maps / softening)
    return maps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", help="benchmark folder (expanse fidelity --out)")
    ap.add_argument("--wph", help="folder of tools/wph_baseline.sh outputs, one subfolder per domain")
    ap.add_argument("--out", required=True, help="output prefix: <out>_<domain>.png")
    ap.add_argument("--maps", type=int, default=6)
    a = ap.parse_args()
    report = json.load(open(os.path.join(a.bench, "fidelity.json")))
    variants = [v["name"] for v in report["variants"] if v["name"] in VARIANTS] or [
        v["name"] for v in report["variants"]
    ]
    for domain in report["domains"]:
        first = os.path.join(a.bench, "runs", variants[0], "seed0")
        real = fits.getdata(os.path.join(first, "stacks", f"{domain}.real.fits")).astype(np.float64)
        kind = transform_of(first, domain)
        softening = 1.4826 * np.median(np.abs(real - np.median(real))) if kind == "asinh" else 1.0
        rows = [("real", real)]
        for v in variants:
            f = os.path.join(a.bench, "runs", v, "seed0", "samples", f"{domain}.fits")
            if os.path.exists(f):
                rows.append((v, fits.getdata(f).astype(np.float64)))
        if a.wph:
            f = os.path.join(a.wph, domain, f"{domain}.wph.fits")
            if os.path.exists(f):
                rows.append(("WPH (pywph)", fits.getdata(f).astype(np.float64)))
        ref = shown(real, kind, softening)
        lo, hi = np.percentile(ref, [1, 99])
        n = a.maps
        fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n + 1.2, 1.6 * len(rows) + 0.5), squeeze=False)
        for r, (name, maps) in enumerate(rows):
            data = shown(maps, kind, softening)
            for c in range(n):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(data):
                    im = ax.imshow(data[c], origin="lower", cmap="inferno", vmin=lo, vmax=hi)
            axes[r, 0].set_ylabel(name, fontsize=8)
        label = {"log10": "log10 value", "asinh": "asinh(value / softening)", "linear": "value"}[kind]
        fig.suptitle(f"{domain}, {real.shape[1]}x{real.shape[2]}: real and synthetic maps (seed 0), one colour scale",
                     fontsize=9)
        fig.colorbar(im, ax=axes, shrink=0.6, label=label)
        path = f"{a.out}_{domain}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        # The maps use one 256-colour map, so a 256-colour palette keeps them exactly and the
        # file several times smaller than RGBA.
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
