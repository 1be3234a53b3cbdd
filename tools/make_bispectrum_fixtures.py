#!/usr/bin/env python3
"""Generate TurbuStat `Bispectrum` parity fixtures for src/stats/bispectrum.rs.

Reference: TurbuStat 1.3 with numpy 1.26.4, astropy 6.0.1, scipy 1.13.1 (the project's TurbuStat venv,
pinned in tools/requirements-turbustat.txt), made from the repository root with

    python3 -m venv .venv-turbustat
    .venv-turbustat/bin/pip install setuptools==65.5.0 wheel==0.42.0 numpy==1.26.4
    .venv-turbustat/bin/pip install --no-build-isolation --no-deps -r tools/requirements-turbustat.txt

Run from anywhere (not needed at test time; writes into this repository's tests/fixtures):

    .venv-turbustat/bin/python tools/make_bispectrum_fixtures.py

Deterministic (fixed seeds, sorted JSON keys): re-running gives byte-identical files. Outputs in
tests/fixtures/stats/bispectrum/:

  <map>.npy          float64 input maps, C order, shape [ny, nx]
  <case>.npy         float64 array [4, ny//2, nx//2]: Re B, Im B, bicoherence, log10|B| as TurbuStat's
                     `bispectrum`, `bicoherence` and `bispectrum_logamp` for one (map, options) pair
  rng_uniform_0_2pi.npy  float64 [4, 300]: numpy legacy `np.random.seed(s)` then `uniform(0, 2*pi, 300)`
                     for s in (0, 7, 1000, 2**32-1) (checks the MT19937 port bit for bit)
  manifest.json      cases (map, nsamples, seed, mean_subtract) and package versions

Maps: Gaussian random fields with P(k) ~ k^-3 (32x32, and 29x31 because TurbuStat raises IndexError on
clearly non-square maps such as 24x40: its k3 index can exceed the short axis), a lognormal transform of
one (32x32, positive, skewed), and a 32x32 field with NaN pixels (TurbuStat sets NaN pixels to 0).
"""

import json
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import astropy  # noqa: E402
import scipy  # noqa: E402
import turbustat  # noqa: E402
from turbustat.statistics import Bispectrum  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "stats", "bispectrum")


def power_law_field(shape, index, seed):
    """Gaussian random field with power spectrum ~ |k|**index (k=0 removed), zero mean, unit std."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    kk = np.hypot(ky, kx)
    amp = np.zeros(shape)
    amp[kk > 0] = kk[kk > 0] ** (index / 2.0)
    noise = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    field = np.fft.ifft2(noise * amp).real
    return (field - field.mean()) / field.std()


def make_maps():
    grf32 = 1.0 + power_law_field((32, 32), -3.0, 11)
    lognormal = np.exp(0.8 * power_law_field((32, 32), -3.0, 12))
    grf29x31 = 2.0 + power_law_field((29, 31), -2.5, 13)
    nan32 = 5.0 + power_law_field((32, 32), -3.0, 14)
    nan32[3:6, 20:24] = np.nan
    nan32[17, 9] = np.nan
    return {
        "grf_32": grf32,
        "lognormal_32": lognormal,
        "grf_29x31": grf29x31,
        "nan_32": nan32,
    }


CASES = [
    # (case name, map name, nsamples, seed, mean_subtract)
    ("grf_32_default", "grf_32", 100, 1000, False),
    ("grf_32_meansub", "grf_32", 100, 1000, True),
    ("lognormal_32_default", "lognormal_32", 100, 1000, False),
    ("lognormal_32_meansub", "lognormal_32", 100, 1000, True),
    ("grf_29x31_default", "grf_29x31", 100, 1000, False),
    ("grf_29x31_seed7_n37", "grf_29x31", 37, 7, False),
    ("nan_32_default", "nan_32", 100, 1000, False),
]


RNG_SEEDS = (0, 7, 1000, 4294967295)


def rng_streams():
    """Row i: the first 300 draws of `np.random.uniform(0, 2 * np.pi)` after `np.random.seed(RNG_SEEDS[i])`."""
    rows = []
    for seed in RNG_SEEDS:
        np.random.seed(seed)
        rows.append(np.random.uniform(0, 2 * np.pi, 300))
    return np.stack(rows)


def main():
    os.makedirs(OUT, exist_ok=True)
    maps = make_maps()
    for name, data in maps.items():
        np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(data, dtype=np.float64))
    cases = []
    for case, map_name, nsamples, seed, mean_subtract in CASES:
        bispec = Bispectrum(maps[map_name])
        bispec.run(show_progress=False, use_pyfftw=False, nsamples=nsamples, seed=seed,
                   mean_subtract=mean_subtract)
        stacked = np.stack([bispec.bispectrum.real, bispec.bispectrum.imag, bispec.bicoherence,
                            bispec.bispectrum_logamp]).astype(np.float64)
        np.save(os.path.join(OUT, case + ".npy"), np.ascontiguousarray(stacked))
        cases.append({"case": case, "map": map_name, "nsamples": nsamples, "seed": seed,
                      "mean_subtract": mean_subtract})
    np.save(os.path.join(OUT, "rng_uniform_0_2pi.npy"), rng_streams())
    manifest = {
        "cases": cases,
        "versions": {"turbustat": turbustat.__version__, "numpy": np.__version__,
                     "astropy": astropy.__version__, "scipy": scipy.__version__},
        "rng_seeds": list(RNG_SEEDS),
        "layout": "<case>.npy is float64 [4, ny//2, nx//2]: Re B, Im B, bicoherence, log10|B|",
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, sort_keys=True, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
