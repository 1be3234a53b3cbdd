"""The quickstart (configs/quickstart.toml) in memory from Python: read the shipped clouds, invert
them with the shipped model, fit the prior, sample 16 latents, decode and refine them, validate
the synthetic maps against the real ones and plot both with matplotlib.

    python examples/quickstart.py [--out DIR] [--compare RUN_DIR]

With --compare, RUN_DIR is a run folder of `expanse run configs/quickstart.toml --out RUN_DIR`:
the example checks that its synthetic maps are that run's, byte for byte, and fails otherwise.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import expanse

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/quickstart-python"))
    parser.add_argument("--compare", type=Path, help="a run folder of configs/quickstart.toml")
    a = parser.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)

    # [model], [[domain]]: the maps in model space and their normalization.
    model = expanse.Model(ROOT / "data/models/expanse-natural-32", batch=8)
    stack, mask, normalizer = expanse.prepare(
        [ROOT / "data/samples/clouds_64.fits"], max_maps=16, transform="log10", size=32, channels=model.in_channels
    )
    print(f"{stack.shape[0]} maps {stack.shape[2]}x{stack.shape[3]}, {normalizer.transform}")

    # [inversion], [prior], [sampling]: the seed is the one `expanse run` derives for the stage.
    latents = model.invert(stack, steps=5, t0=50)
    prior = expanse.fit_prior(latents, kind="empirical", name="clouds")
    seed = expanse.derive_seed(0, "sample/clouds")
    accepted, record = prior.sample(count=16, seed=seed, k=10, band=(5.0, 95.0), budget=20000)
    print(f"{prior}: accepted 16 of {record['tried']} candidates")

    # Decoding, then [refinement], then back to physical units.
    images = model.generate(accepted, steps=5, t0=50)
    images, refinement = expanse.refine(images, stack, iterations=25)
    synthetic = normalizer.inverse(images)
    real = normalizer.inverse(stack)
    print(f"refinement loss {np.mean(refinement['loss_before']):.3f} -> {np.mean(refinement['loss_after']):.4f}")

    # [validation]: the battery and the classifier two-sample test.
    report = expanse.validate(real, synthetic, a.out / "report")
    c2st = report["battery"]["c2st"]["accuracy"]
    print(f"power-spectrum slopes: real {report['slopes']['real']['mean']:.2f}, "
          f"synthetic {report['slopes']['synthetic']['mean']:.2f}; C2ST accuracy {c2st['mean']:.2f}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 4, figsize=(8, 4.3))
        lo, hi = np.nanpercentile(np.log10(real), [1, 99])
        for i in range(4):
            for row, (maps, name) in enumerate([(real, "real"), (synthetic, "synthetic")]):
                axes[row, i].imshow(np.log10(maps[i]), origin="lower", cmap="magma", vmin=lo, vmax=hi)
                axes[row, i].set_title(f"{name} {i}", fontsize=8)
                axes[row, i].axis("off")
        fig.suptitle(f"log10 N [{normalizer.units}]")
        fig.savefig(a.out / "quickstart.png", dpi=100)
        print(f"wrote {a.out / 'quickstart.png'}")
    except ImportError:
        print("matplotlib is not installed: no figure")

    if a.compare is not None:
        run_maps, info = expanse.read_maps(a.compare / "samples/clouds.fits")
        if run_maps.tobytes() != synthetic.tobytes():
            sys.exit(f"the maps differ from {a.compare / 'samples/clouds.fits'} (max |diff| "
                     f"{np.max(np.abs(run_maps - synthetic))})")
        print(f"the synthetic maps are those of {a.compare}, byte for byte ({info['units']})")


if __name__ == "__main__":
    main()
