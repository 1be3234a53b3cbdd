#!/usr/bin/env python3
"""Generate TurbuStat PowerSpectrum parity fixtures for the Rust power spectrum.

Run with the dedicated TurbuStat 1.3 venv (not needed at test time), made
from the repository root with the pins of tools/requirements-turbustat.txt:

    python3 -m venv .venv-turbustat
    .venv-turbustat/bin/pip install setuptools==65.5.0 wheel==0.42.0 numpy==1.26.4
    .venv-turbustat/bin/pip install --no-build-isolation --no-deps -r tools/requirements-turbustat.txt
    .venv-turbustat/bin/python tools/make_turbustat_fixtures.py [--out DIR]

(The pins matter: without them pip upgrades numpy to 2.x and astropy to 8.x
to satisfy the newest spectral-cube.)

Everything is deterministic (fixed seeds, no timestamps, sorted JSON keys):
re-running must give byte-identical files. Outputs, in tests/fixtures/stats/:

  <map>.npy        float64 input maps (C order, shape [ny, nx])
  <case>.json      TurbuStat results for one (map, options) pair
  manifest.json    list of cases + package versions

NaN values are written to JSON as null. All frequencies are in pixel^-1.
See TURBUSTAT_NOTES.md for the formulas.
"""

import argparse
import hashlib
import json
import os
import sys
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

import astropy  # noqa: E402
import astropy.units as u  # noqa: E402
from astropy.io import fits  # noqa: E402
import scipy  # noqa: E402
from scipy.stats import binned_statistic  # noqa: E402
import statsmodels  # noqa: E402
import statsmodels.api as sm  # noqa: E402
import turbustat  # noqa: E402
from turbustat.statistics import PowerSpectrum  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "stats")


# ----------------------------------------------------------------- maps

def grf(shape, index, seed):
    """Gaussian random field with P(k) ~ k**index (k in pixel^-1), k=0 removed,
    normalised to zero mean and unit std."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    k = np.sqrt(ky ** 2 + kx ** 2)
    amp = np.zeros(shape)
    amp[k > 0] = k[k > 0] ** (index / 2.0)
    field = np.fft.ifft2(np.fft.fft2(white) * amp).real
    field -= field.mean()
    field /= field.std()
    return np.ascontiguousarray(field, dtype=np.float64)


def make_maps():
    maps = {}
    maps["grf_k3_64"] = grf((64, 64), -3.0, 1001)
    maps["grf_k2_64"] = grf((64, 64), -2.0, 1002)
    maps["grf_k3_48x80"] = grf((48, 80), -3.0, 1003)
    maps["grf_k25_39x57"] = grf((39, 57), -2.5, 1004)
    maps["lognormal_64"] = np.exp(0.8 * grf((64, 64), -3.0, 1005))

    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    # Exactly periodic (integer cycles): all power in one +/- frequency pair
    # (|f| = sqrt(3^2+5^2)/64) plus the DC term from the offset, which must
    # be excluded from the radial profile. Other pixels are FFT round-off.
    maps["sinusoid_int_64"] = 1.0 + 0.5 * np.sin(
        2 * np.pi * (3 * xx / 64.0 + 5 * yy / 64.0))
    # Non-integer frequency: spectral leakage gives a smooth, well-conditioned
    # spectrum everywhere (comparable across FFT implementations).
    maps["sinusoid_leak_64"] = np.sin(
        2 * np.pi * (0.1234 * xx + 0.0789 * yy) + 0.3)

    nanmap = grf((64, 64), -3.0, 1006)
    for (y, x) in [(0, 0), (10, 17), (31, 63), (40, 40), (40, 41), (41, 40),
                   (41, 41), (63, 5)]:
        nanmap[y, x] = np.nan
    maps["nan_64"] = nanmap
    return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in maps.items()}


# (case name, map name, run kwargs, description)
CASES = [
    ("grf_k3_64", "grf_k3_64", {}, "GRF P~k^-3, 64x64, defaults"),
    ("grf_k2_64", "grf_k2_64", {}, "GRF P~k^-2, 64x64, defaults"),
    ("grf_k3_48x80", "grf_k3_48x80", {},
     "GRF P~k^-3, 48 rows x 80 cols (non-square, even), defaults"),
    ("grf_k25_39x57", "grf_k25_39x57", {},
     "GRF P~k^-2.5, 39 rows x 57 cols (non-square, odd), defaults"),
    ("lognormal_64", "lognormal_64", {}, "exp(0.8*GRF k^-3), 64x64, defaults"),
    ("sinusoid_int_64", "sinusoid_int_64", {},
     "1+0.5 sin(2pi(3x+5y)/64): exact periodic; off-peak bins are FFT "
     "round-off, slope meaningless"),
    ("sinusoid_leak_64", "sinusoid_leak_64", {},
     "sin(2pi(0.1234x+0.0789y)+0.3): leakage spectrum, defaults"),
    ("nan_64", "nan_64", {},
     "GRF k^-3 64x64 with 8 NaN pixels (TurbuStat sets NaN->0), defaults"),
    ("grf_k3_64_tukey03", "grf_k3_64",
     {"apodize_kernel": "tukey", "alpha": 0.3},
     "grf_k3_64 with apodize_kernel='tukey', alpha=0.3"),
    ("grf_k3_64_hanning", "grf_k3_64", {"apodize_kernel": "hanning"},
     "grf_k3_64 with apodize_kernel='hanning'"),
    ("grf_k3_64_fitrange", "grf_k3_64",
     {"low_cut": 0.05 / u.pix, "high_cut": 0.3 / u.pix},
     "grf_k3_64 with low_cut=0.05, high_cut=0.3 pix^-1"),
    ("grf_k3_48x80_fine", "grf_k3_48x80",
     {"radial_pspec_kwargs": {"binsize": 0.25}},
     "grf_k3_48x80 with radial_pspec_kwargs binsize=0.25 (4x the bins): "
     "empty bins, count<=1 masking and the small-count t correction"),
    ("grf_k3_64_log", "grf_k3_64",
     {"radial_pspec_kwargs": {"logspacing": True}},
     "grf_k3_64 with radial_pspec_kwargs logspacing=True"),
]


# ------------------------------------------------------------- helpers

def fake_header(shape):
    """TurbuStat requires a FITS header for ndarray input. Pixel scale is
    irrelevant here because everything is in pixel units; no beam keywords
    (TurbuStat then warns 'Header missing beam information')."""
    hdr = fits.Header()
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = shape[1]
    hdr["NAXIS2"] = shape[0]
    hdr["CTYPE1"] = "RA---CAR"
    hdr["CTYPE2"] = "DEC--CAR"
    hdr["CUNIT1"] = "deg"
    hdr["CUNIT2"] = "deg"
    hdr["CDELT1"] = -1.0 / 3600.0
    hdr["CDELT2"] = 1.0 / 3600.0
    hdr["CRPIX1"] = shape[1] / 2.0
    hdr["CRPIX2"] = shape[0] / 2.0
    hdr["CRVAL1"] = 0.0
    hdr["CRVAL2"] = 0.0
    return hdr


def nan_to_none(arr):
    out = []
    for v in np.asarray(arr, dtype=np.float64).ravel().tolist():
        out.append(None if not np.isfinite(v) else float(v))
    return out


def independent_profile(ps2d_shifted, nbins, min_bin, max_bin, logspacing):
    """Re-derive TurbuStat's binning without its row flips: frequency of
    fftshifted pixel (i, j) is hypot(fy[i], fx[j]), fy = fftshift(fftfreq(ny)).
    Returns edges, counts, mean, std(ddof=1) (before TurbuStat's t-correction
    and count<=1 masking)."""
    ny, nx = ps2d_shifted.shape
    fy = np.fft.fftshift(np.fft.fftfreq(ny))
    fx = np.fft.fftshift(np.fft.fftfreq(nx))
    yy, xx = np.meshgrid(fy, fx, indexing="ij")
    f = np.sqrt(yy ** 2 + xx ** 2)
    f[f == 0] = f[f != 0].min() / 2.0
    if logspacing:
        edges = np.logspace(np.log10(min_bin), np.log10(max_bin), nbins + 1)
    else:
        edges = np.linspace(min_bin, max_bin, nbins + 1)
    vals = ps2d_shifted.ravel()
    mean, e, _ = binned_statistic(f.ravel(), vals, bins=edges,
                                  statistic="mean")
    counts = binned_statistic(f.ravel(), vals, bins=edges,
                              statistic="count")[0]
    std = binned_statistic(f.ravel(), vals, bins=edges,
                           statistic=lambda x: np.std(x, ddof=1)
                           if len(x) > 1 else np.nan)[0]
    return e, counts, mean, std


def hc3_and_ols(x, y):
    """Manual OLS with HC3 and classic standard errors (for the notes)."""
    X = np.column_stack([np.ones_like(x), x])
    XtX_inv = np.linalg.inv(X.T @ X)
    beta = XtX_inv @ X.T @ y
    e = y - X @ beta
    h = np.einsum("ij,jk,ik->i", X, XtX_inv, X)
    meat = X.T @ (X * ((e / (1 - h)) ** 2)[:, None])
    cov_hc3 = XtX_inv @ meat @ XtX_inv
    n, p = X.shape
    s2 = (e @ e) / (n - p)
    cov_ols = s2 * XtX_inv
    return beta, np.sqrt(np.diag(cov_hc3)), np.sqrt(np.diag(cov_ols))


def run_case(name, mapname, kwargs, desc, data):
    shape = data.shape
    hdr = fake_header(shape)
    ps = PowerSpectrum(data, header=hdr)
    run_kwargs = dict(kwargs)
    # fit_2D (elliptical 2-D power-law fit with a random bootstrap) is on by
    # default but does not touch any 1-D output; it is disabled for speed and
    # checked once in main() to leave the 1-D results unchanged.
    run_kwargs["fit_2D"] = False
    ps.run(**run_kwargs)

    freqs = np.asarray(ps.freqs.value, dtype=np.float64)
    ps1d = np.asarray(ps.ps1D, dtype=np.float64)
    std1d = np.asarray(ps.ps1D_stddev, dtype=np.float64)
    nbins = int(freqs.size)

    # --- independent re-derivation of the binning (counts are not exposed)
    ny, nx = shape
    max_dist = np.sqrt((ny // 2) ** 2 + (nx // 2) ** 2)
    rkw = kwargs.get("radial_pspec_kwargs", {})
    binsize = float(rkw.get("binsize", 1.0))
    logspacing = bool(rkw.get("logspacing", False))
    nbins_expected = int(np.round(max_dist / binsize) + 1)
    assert nbins == nbins_expected, (nbins, nbins_expected)
    min_bin = 1.0 / min(shape)
    max_bin = 0.5
    ps2d_turbu = ps.ps2D[::-1]  # undo the property's row flip -> fftshift order
    d = np.where(np.isfinite(data), data, 0.0)
    if "apodize_kernel" in kwargs:
        d = d * ps.apodizing_kernel(kernel_type=kwargs["apodize_kernel"],
                                    alpha=kwargs.get("alpha", 0.2),
                                    beta=kwargs.get("beta", 0.0))
    ps2d_ref = np.fft.fftshift(np.abs(np.fft.fft2(d)) ** 2)
    assert np.allclose(ps2d_turbu, ps2d_ref, rtol=1e-10,
                       atol=1e-12 * ps2d_ref.max()), name
    edges, counts, mean_ref, std_ref = independent_profile(
        ps2d_turbu, nbins, min_bin, max_bin, logspacing)
    centres = 0.5 * (edges[1:] + edges[:-1])
    assert np.array_equal(centres, freqs), name
    valid = counts > 1
    assert np.array_equal(np.isfinite(ps1d), valid), name
    assert np.allclose(ps1d[valid], mean_ref[valid], rtol=1e-12), name
    from scipy.stats import t as t_dist
    with np.errstate(invalid="ignore", divide="ignore"):
        A = t_dist.ppf(1 - 0.15 / 2.0, counts - 1) / np.sqrt(counts)
    std_corr = std_ref.copy()
    std_corr[A > 1] *= A[A > 1]
    assert np.allclose(std1d[valid], std_corr[valid], rtol=1e-10), name
    assert np.all(np.isnan(std1d[~valid])), name

    # --- fit re-derivation
    low_cut = float(ps.low_cut.value)
    high_cut = float(ps.high_cut.value)
    in_range = (freqs > low_cut) & (freqs <= high_cut)
    used = in_range & np.isfinite(ps1d)
    x = np.log10(freqs[used])
    y = np.log10(ps1d[used])
    beta, se_hc3, se_ols = hc3_and_ols(x, y)
    slope = float(ps.slope)
    slope_err = float(ps.slope_err)
    assert np.isclose(beta[1], slope, rtol=1e-9, atol=1e-12), name
    assert np.isclose(se_hc3[1], slope_err, rtol=1e-8), (name, se_hc3, slope_err)
    assert np.isclose(float(ps.fit.params[0]), beta[0], rtol=1e-9, atol=1e-12)

    return {
        "case": name,
        "description": desc,
        "map": mapname + ".npy",
        "shape": [int(ny), int(nx)],
        "options": {
            "apodize_kernel": kwargs.get("apodize_kernel"),
            "alpha": kwargs.get("alpha") if "apodize_kernel" in kwargs else None,
            "beta": 0.0 if "apodize_kernel" in kwargs else None,
            "low_cut": (float(kwargs["low_cut"].value)
                        if "low_cut" in kwargs else None),
            "high_cut": (float(kwargs["high_cut"].value)
                         if "high_cut" in kwargs else None),
            "beam_correct": False,
            "logspacing": logspacing,
            "binsize": binsize,
            "fit_unbinned": False,
            "weighted_fit": False,
            "brk": None,
        },
        "nan_pixels": int(np.isnan(data).sum()),
        "ps2d_sum": float(ps2d_turbu.sum()),
        "ps2d_max": float(ps2d_turbu.max()),
        "profile": {
            "nbins": nbins,
            "binsize": binsize,
            "logspacing": logspacing,
            "t_corrected_bins": [bool(v) for v in (A > 1)],
            "min_bin": min_bin,
            "max_bin": max_bin,
            "bin_edges": edges.tolist(),
            "freqs": freqs.tolist(),
            "ps1D": nan_to_none(ps1d),
            "ps1D_stddev": nan_to_none(std1d),
            "counts": [int(c) for c in counts],
            "counts_source": "recomputed with identical binning (TurbuStat "
                             "does not expose them); mean cross-checked",
        },
        "fit": {
            "low_cut": low_cut,
            "high_cut": high_cut,
            "bins_used": [bool(b) for b in used],
            "n_used": int(used.sum()),
            "slope": slope,
            "slope_err": slope_err,
            "slope_err_kind": "HC3 robust (statsmodels cov_type='HC3')",
            "intercept": float(ps.fit.params[0]),
            "intercept_err": float(ps.fit.bse[0]),
            "slope_err_nonrobust": float(se_ols[1]),
            "slope_meaningful": name != "sinusoid_int_64",
        },
    }


def dump_json(obj, path):
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=False)
        fh.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    maps = make_maps()
    for mname, arr in maps.items():
        np.save(os.path.join(args.out, mname + ".npy"), arr)

    # One-off check: the default fit_2D=True leaves the 1-D results unchanged.
    m = maps["grf_k3_64"]
    a = PowerSpectrum(m, header=fake_header(m.shape)).run(fit_2D=False)
    b = PowerSpectrum(m, header=fake_header(m.shape)).run()
    assert np.array_equal(a.ps1D, b.ps1D, equal_nan=True)
    assert a.slope == b.slope and a.slope_err == b.slope_err
    assert a.low_cut == b.low_cut and a.high_cut == b.high_cut

    entries = []
    for (name, mapname, kwargs, desc) in CASES:
        res = run_case(name, mapname, kwargs, desc, maps[mapname])
        dump_json(res, os.path.join(args.out, name + ".json"))
        entries.append({"case": name, "json": name + ".json",
                        "map": mapname + ".npy", "shape": res["shape"],
                        "slope": res["fit"]["slope"]})
        print("%-20s shape=%-9s nbins=%3d slope=%+.4f +- %.4f  "
              "low=%.5f high=%.5f used=%d" % (
                  name, "x".join(map(str, res["shape"])),
                  res["profile"]["nbins"], res["fit"]["slope"],
                  res["fit"]["slope_err"], res["fit"]["low_cut"],
                  res["fit"]["high_cut"], res["fit"]["n_used"]))

    manifest = {
        "generator": "tools/make_turbustat_fixtures.py",
        "notes": "TURBUSTAT_NOTES.md",
        "units": "frequencies in pixel^-1; ps2D = |FFT|^2 unnormalised; "
                 "NaN encoded as null",
        "versions": {
            "turbustat": turbustat.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__,
            "astropy": astropy.__version__,
            "python": "%d.%d" % sys.version_info[:2],
        },
        "map_sha256": {
            mname + ".npy": hashlib.sha256(
                open(os.path.join(args.out, mname + ".npy"), "rb").read()
            ).hexdigest()
            for mname in sorted(maps)
        },
        "cases": entries,
    }
    dump_json(manifest, os.path.join(args.out, "manifest.json"))


if __name__ == "__main__":
    main()
