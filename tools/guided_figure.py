"""Five maps of each set side by side (log10 when every value is positive), real first:

    python tools/guided_figure.py REAL.fits NAME=SET.fits|.npy ... OUT.png

(figures/fidelity_guided_*.png; the sets of tools/guided_decoding.py and a run's samples).
"""
import sys, numpy as np, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import expanse
real_path, out = sys.argv[1], sys.argv[-1]
sets = [("real", expanse.read_maps(real_path)[0])]
for spec in sys.argv[2:-1]:
    name, path = spec.split("=")
    sets.append((name, np.load(path) if path.endswith(".npy") else expanse.read_maps(path)[0]))
log = lambda m: np.log10(m) if np.all(m > 0) else m
fig, axes = plt.subplots(len(sets), 5, figsize=(10, 2.1 * len(sets)))
lo, hi = np.percentile(log(sets[0][1]), [1, 99])
for r, (name, maps) in enumerate(sets):
    for i in range(5):
        axes[r, i].imshow(log(maps[i]), origin="lower", cmap="magma", vmin=lo, vmax=hi)
        axes[r, i].set_xticks([]); axes[r, i].set_yticks([])
    axes[r, 0].set_ylabel(name, fontsize=9)
fig.tight_layout()
fig.savefig(out, dpi=60)
