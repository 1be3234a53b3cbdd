#!/usr/bin/env python3
"""Generate kymatio Scattering2D parity fixtures for src/stats/scattering.rs.

Reference: kymatio 0.3.0, NumPy frontend (`kymatio.numpy.Scattering2D`, no torch needed).
Set up once, from the repository root, with the pins of tools/requirements-scattering.txt, and
run (from anywhere; it writes into this repository's tests/fixtures; not needed at test time):

    python3 -m venv .venv-scattering && .venv-scattering/bin/pip install -r tools/requirements-scattering.txt
    .venv-scattering/bin/python tools/make_scattering_fixtures.py

Precision. kymatio's NumPy backend computes the FFTs in the dtype of the input (float64 input ->
complex128 arithmetic), but `filter_bank.gabor_2d` hard-codes complex64 for the spatial filters and
float32 for the rotation matrices, so the stock filters carry float32 rounding (relative ~1e-7 of
each filter). Two kinds of fixture are therefore written:

  * "f64" cases: kymatio's own code with its filter-bank module seeing a NumPy namespace whose
    `complex64`/`float32` are `complex128`/`float64` (a dtype substitution, no change to any
    formula, constant or loop); input float64. This is kymatio's algorithm in float64 and is what
    the Rust port is compared against element by element at ~1e-12 relative.
  * "stock" case: kymatio exactly as shipped (float32 filters, float64 input), to show the size of
    the float32 filter rounding (the Rust test allows 1e-5 relative for it).

Inputs are generated here with a fixed seed: Gaussian random fields with power spectrum k^-slope
and a lognormal map exp(0.8 x GRF). Everything is deterministic; JSON keys are sorted.

Outputs in tests/fixtures/stats/scattering/:

  <map>.npy            float64 input map [ny, nx]
  <case>.npy           kymatio's full output [channels, ny // 2^J, nx // 2^J], float64
  <case>.json          J, L, shape, dtype mode, channel metadata (j, theta per channel) and the
                       isotropic reductions s0, s1[j1], s2[(j1, j2)] (spatial mean, then mean over
                       angles) plus the reduced vector log2 s1 ++ log2(s2 / s1(j1))
  manifest.json        list of cases + package versions
"""

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import kymatio  # noqa: E402
import kymatio.scattering2d.filter_bank as kymatio_filter_bank  # noqa: E402
from kymatio.numpy import Scattering2D  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "stats", "scattering")


class Float64Namespace:
    """NumPy seen through a lens where the single-precision dtypes are the double ones."""

    complex64 = np.complex128
    float32 = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


def gaussian_random_field(ny, nx, slope, seed):
    """Real field with power spectrum |k|^-slope (k = 0 removed), unit variance."""
    rng = np.random.default_rng(seed)
    white = np.fft.fft2(rng.standard_normal((ny, nx)))
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    k = np.sqrt(ky**2 + kx**2)
    k[0, 0] = np.inf
    field = np.fft.ifft2(white * k ** (-slope / 2.0)).real
    return (field - field.mean()) / field.std()


def maps():
    grf = gaussian_random_field(32, 32, 3.0, 1)
    wide = gaussian_random_field(32, 48, 2.5, 2)
    odd = gaussian_random_field(29, 45, 3.0, 3)
    lognormal = np.exp(0.8 * gaussian_random_field(32, 48, 3.0, 4))
    tiny = gaussian_random_field(8, 12, 2.0, 5)
    return {
        "grf_32x32": grf,
        "grf_32x48": wide,
        "grf_29x45": odd,
        "lognormal_32x48": lognormal,
        "grf_8x12": tiny,
    }


CASES = [
    # (case name, map name, J, L, mode)
    ("grf_32x32_J2_L8", "grf_32x32", 2, 8, "f64"),
    ("grf_32x32_J3_L8", "grf_32x32", 3, 8, "f64"),
    ("grf_32x48_J3_L4", "grf_32x48", 3, 4, "f64"),
    ("grf_29x45_J2_L6", "grf_29x45", 2, 6, "f64"),
    ("lognormal_32x48_J3_L4", "lognormal_32x48", 3, 4, "f64"),
    # 2^J = ny: the reflect padding (8 rows per side) is longer than the map.
    ("grf_8x12_J3_L4", "grf_8x12", 3, 4, "f64"),
    ("grf_32x32_J3_L8_stock", "grf_32x32", 3, 8, "stock"),
]


def run_kymatio(image, J, L, mode):
    kymatio_filter_bank.np = Float64Namespace() if mode == "f64" else np
    try:
        scattering = Scattering2D(J, image.shape, L=L, max_order=2, out_type="list")
    finally:
        kymatio_filter_bank.np = np
    paths = scattering(image)
    return paths


def isotropic(paths, J):
    s0 = float(paths[0]["coef"].mean())
    s1 = []
    for j1 in range(J):
        s1.append(float(np.mean([p["coef"].mean() for p in paths if p["j"] == (j1,)])))
    s2 = []
    for j1 in range(J):
        for j2 in range(j1 + 1, J):
            value = np.mean([p["coef"].mean() for p in paths if p["j"] == (j1, j2)])
            s2.append([j1, j2, float(value)])
    reduced = [float(np.log2(v)) for v in s1]
    reduced += [float(np.log2(v / s1[j1])) for j1, _, v in s2]
    return s0, s1, s2, reduced


def main():
    os.makedirs(OUT, exist_ok=True)
    images = maps()
    for name, image in images.items():
        np.save(os.path.join(OUT, name + ".npy"), image.astype(np.float64))
    manifest = {
        "reference": "kymatio.numpy.Scattering2D (max_order=2, out_type list)",
        "versions": {"kymatio": kymatio.__version__, "numpy": np.__version__, "scipy": scipy.__version__},
        "cases": [],
    }
    for case, map_name, J, L, mode in CASES:
        image = images[map_name]
        paths = run_kymatio(image, J, L, mode)
        full = np.stack([p["coef"] for p in paths], axis=0).astype(np.float64)
        np.save(os.path.join(OUT, case + ".npy"), full)
        s0, s1, s2, reduced = isotropic(paths, J)
        record = {
            "map": map_name + ".npy",
            "shape": list(image.shape),
            "J": J,
            "L": L,
            "mode": mode,
            "output_shape": list(full.shape),
            "channel_j": [list(p["j"]) for p in paths],
            "channel_theta": [list(p["theta"]) for p in paths],
            "s0": s0,
            "s1": s1,
            "s2": s2,
            "reduced": reduced,
        }
        with open(os.path.join(OUT, case + ".json"), "w") as f:
            json.dump(record, f, sort_keys=True)
            f.write("\n")
        manifest["cases"].append({"case": case, "map": map_name, "J": J, "L": L, "mode": mode})
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
