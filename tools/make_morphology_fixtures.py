"""Write the parity fixtures of the morphology statistics: Minkowski functionals and peak counts.

Inputs are generated here with numpy and fixed seeds (Gaussian random fields with power-law spectra, a
non-square one, a lognormal transform, one with NaN pixels) and saved as float64 .npy next to the expected
outputs (.json) in tests/fixtures/stats/morphology/. The Rust tests in tests/battery_morphology.rs read both.

References (see src/stats/minkowski.rs and src/stats/peaks.rs for the conventions):

* Minkowski functionals: quantimpy 0.2.6, ``quantimpy.minkowski.functionals`` on the binary excursion set
  ``z >= nu`` (2x2-configuration estimator: Crofton length over 4 directions, Euler characteristic with
  vertex/edge/face weights). Its outputs are extensive (area, length / (2 pi), Euler / pi) and sum over
  disjoint window sets, so a masked map is measured by summing quantimpy over 2-row strips that cover exactly
  the 2x2 windows of finite pixels; for unmasked maps the strip sum is checked against one full-map call.
  v0 is the fraction of finite pixels >= nu (plain numpy).
* Peak counts: lenstools 1.2, ``lenstools.extern._topology.peakCount`` (the C routine behind
  ``ConvergenceMap.peakCount``), called on the standardized map inside a NaN frame (square, as lenstools
  needs) with the finite pixels as mask, so that edge pixels and pixels next to a NaN cannot be peaks and
  nothing wraps around; minima are the maxima of -z. Cross-checked against scipy.ndimage
  maximum_filter/minimum_filter (3x3 footprint) + numpy.histogram, whose last-bin-closed convention the
  fixtures record (lenstools leaves the last bin open; no peak falls on the last edge here, asserted).

Install (Python 3.11; lenstools needs numpy < 1.24 and both packages build from source against it; checked in
a fresh venv, which reproduces the fixtures byte for byte), from the repository root, with the pins of
tools/requirements-morphology.txt:
    python3 -m venv .venv-morphology
    .venv-morphology/bin/pip install setuptools==65.5.0 wheel==0.48.0 Cython==0.29.37 numpy==1.23.5
    .venv-morphology/bin/pip install --no-build-isolation --no-deps -r tools/requirements-morphology.txt

Run (from anywhere; it writes into this repository's tests/fixtures):
    .venv-morphology/bin/python tools/make_morphology_fixtures.py
"""

import importlib.metadata
import json
import math
import os
import warnings

import numpy as np
import scipy
import scipy.ndimage as ndi

warnings.filterwarnings("ignore", message="Could not import mpi4py")
from lenstools.extern import _topology  # noqa: E402
from quantimpy import minkowski as qmk  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "stats",
                       "morphology")
DEFAULT_THRESHOLDS = np.linspace(-3.0, 3.0, 25)
DEFAULT_EDGES = np.linspace(-5.0, 5.0, 41)


def power_law_grf(ny, nx, slope, seed):
    """Gaussian random field with power spectrum P(k) ~ k^-slope (k = 0 removed), unit variance."""
    rng = np.random.default_rng(seed)
    noise = np.fft.fft2(rng.standard_normal((ny, nx)))
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    k = np.hypot(ky, kx)
    amplitude = np.zeros_like(k)
    amplitude[k > 0] = k[k > 0] ** (-slope / 2.0)
    field = np.ascontiguousarray(np.fft.ifft2(noise * amplitude).real)
    return (field - field.mean()) / field.std()


def standardize(image):
    finite = np.isfinite(image)
    values = image[finite]
    return (image - values.mean()) / values.std(), finite


def window_strips(finite):
    """(row, first column, last column + 1) of maximal runs of 2x2 windows whose four pixels are finite."""
    valid = finite[:-1, :-1] & finite[1:, :-1] & finite[:-1, 1:] & finite[1:, 1:]
    strips = []
    for row in range(valid.shape[0]):
        col = 0
        while col < valid.shape[1]:
            if not valid[row, col]:
                col += 1
                continue
            start = col
            while col < valid.shape[1] and valid[row, col]:
                col += 1
            strips.append((row, start, col))
    return strips, int(valid.sum())


def minkowski_reference(image, thresholds):
    z, finite = standardize(image)
    strips, windows = window_strips(finite)
    v0, v1, v2 = [], [], []
    for nu in thresholds:
        length = 0.0
        euler = 0.0
        for row, start, stop in strips:
            excursion = np.ascontiguousarray(z[row:row + 2, start:stop + 1] >= nu)
            _, length_mf, euler_mf = qmk.functionals(excursion)
            length += 2.0 * math.pi * length_mf
            euler += math.pi * euler_mf
        if finite.all():
            _, length_mf, euler_mf = qmk.functionals(np.ascontiguousarray(z >= nu))
            assert abs(2.0 * math.pi * length_mf - length) <= 1e-9 * max(1.0, length)
            assert abs(math.pi * euler_mf - euler) <= 1e-9
        v0.append(float(np.mean(z[finite] >= nu)))
        v1.append(length / (4.0 * windows))
        v2.append(euler / windows)
    return {"thresholds": [float(t) for t in thresholds], "windows": windows, "v0": v0, "v1": v1, "v2": v2}


def peak_candidates(finite):
    """Pixels not on the edge whose 3x3 neighbourhood is finite."""
    return ndi.minimum_filter(finite.astype(np.uint8), size=3, mode="constant", cval=0).astype(bool)


def peaks_scipy(z, finite, edges):
    candidates = peak_candidates(finite)
    filled = np.where(finite, z, 0.0)
    footprint = np.ones((3, 3), dtype=bool)
    footprint[1, 1] = False
    neighbour_max = ndi.maximum_filter(filled, footprint=footprint, mode="constant", cval=0.0)
    neighbour_min = ndi.minimum_filter(filled, footprint=footprint, mode="constant", cval=0.0)
    maxima = candidates & (filled > neighbour_max)
    minima = candidates & (filled < neighbour_min)
    max_counts = np.histogram(z[maxima], bins=edges)[0]
    min_counts = np.histogram(z[minima], bins=edges)[0]
    return max_counts, min_counts, int(candidates.sum())


def peaks_lenstools(z, finite, edges):
    side = max(z.shape) + 2
    framed = np.full((side, side), np.nan)
    framed[1:1 + z.shape[0], 1:1 + z.shape[1]] = z
    mask = np.isfinite(framed)
    widths = np.diff(edges)
    max_density = _topology.peakCount(framed, mask, edges, 1.0)
    min_density = _topology.peakCount(-framed, mask, -edges[::-1].copy(), 1.0)[::-1]
    max_counts = np.rint(max_density * widths).astype(int)
    min_counts = np.rint(min_density * widths).astype(int)
    return max_counts, min_counts


def peaks_reference(image, edges):
    z, finite = standardize(image)
    max_counts, min_counts, pixels = peaks_scipy(z, finite, edges)
    lt_max, lt_min = peaks_lenstools(z, finite, edges)
    assert np.array_equal(max_counts, lt_max), (max_counts, lt_max)
    assert np.array_equal(min_counts, lt_min), (min_counts, lt_min)
    assert not np.isin(z[finite], edges).any(), "a pixel lies on a bin edge: lenstools and numpy would differ"
    return {
        "edges": [float(e) for e in edges],
        "pixels": pixels,
        "maxima_counts": [int(c) for c in max_counts],
        "minima_counts": [int(c) for c in min_counts],
        "maxima": [float(c) / pixels for c in max_counts],
        "minima": [float(c) / pixels for c in min_counts],
    }


def make_maps():
    maps = {
        "grf_a3_64": power_law_grf(64, 64, 3.0, seed=11),
        "grf_a4_48x80": power_law_grf(48, 80, 4.0, seed=12),
        "lognormal_64": np.exp(0.8 * power_law_grf(64, 64, 3.5, seed=13)),
    }
    masked = power_law_grf(64, 64, 3.0, seed=14)
    masked[10:22, 30:45] = np.nan
    rng = np.random.default_rng(15)
    masked[rng.integers(0, 64, 40), rng.integers(0, 64, 40)] = np.nan
    masked[40, :] = np.nan
    masked[50:, 0:3] = np.nan
    maps["nan_64"] = masked
    return maps


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    custom_thresholds = np.array([-1.7, 0.0, 0.35, 2.2, -0.4])
    custom_edges = np.array([-4.0, -2.5, -1.0, 0.0, 0.5, 1.0, 2.0, 3.5, 6.0])
    manifest = {
        "generator": "tools/make_morphology_fixtures.py",
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "quantimpy": importlib.metadata.version("quantimpy"),
            "lenstools": importlib.metadata.version("lenstools"),
        },
        "cases": [],
    }
    for name, image in make_maps().items():
        np.save(os.path.join(OUT_DIR, f"{name}.npy"), image)
        minkowski = {"default": minkowski_reference(image, DEFAULT_THRESHOLDS)}
        peaks = {"default": peaks_reference(image, DEFAULT_EDGES)}
        if name == "grf_a4_48x80":
            minkowski["custom"] = minkowski_reference(image, custom_thresholds)
            peaks["custom"] = peaks_reference(image, custom_edges)
        with open(os.path.join(OUT_DIR, f"{name}_minkowski.json"), "w") as handle:
            json.dump(minkowski, handle, indent=1)
        with open(os.path.join(OUT_DIR, f"{name}_peaks.json"), "w") as handle:
            json.dump(peaks, handle, indent=1)
        manifest["cases"].append({"name": name, "shape": list(image.shape), "nan": int(np.isnan(image).sum())})
        print(name, image.shape, "windows", minkowski["default"]["windows"], "peak pixels",
              peaks["default"]["pixels"], "maxima", sum(peaks["default"]["maxima_counts"]),
              "minima", sum(peaks["default"]["minima_counts"]))
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=1)


if __name__ == "__main__":
    main()
