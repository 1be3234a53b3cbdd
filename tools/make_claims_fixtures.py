#!/usr/bin/env python3
"""Write the parity fixtures of four statistics whose doc comments name a reference library.

Outputs go to tests/fixtures/stats/claims/ and are read by tests/stats_claims.rs (no Python at test
time). Each statistic is computed here by the library expanse's documentation names:

* SSIM (src/stats/maps.rs ``ssim``): scikit-image 0.26.0
  ``skimage.metrics.structural_similarity(a, b, data_range=R)`` with every other argument at its
  default (win_size 7, uniform windows, K1 0.01, K2 0.03, use_sample_covariance True). expanse has
  no caller that picks R; its model space is [-1, 1] (PSNR there uses a range of 2), so R = 2 is the
  main case, plus R = 1 on maps rescaled to [0, 1].
* Hellinger distance (src/stats/onepoint.rs ``hellinger`` and ``compare``): TurbuStat 1.3
  ``turbustat.statistics.stats_utils.hellinger`` on given histograms (normalized to unit sum as
  ``PDF_Distance.compute_hellinger_distance`` does), and ``PDF_Distance(a, b, do_fit=False)``
  end to end: its common bins, the two ``np.histogram(density=True)`` PDFs, its Hellinger
  distance and its KS D.
* Two-sample KS (src/stats/onepoint.rs ``ks_two_sample``, ``kolmogorov_p_value``): SciPy 1.13.1
  ``scipy.stats.ks_2samp`` with method 'asymp' (= ``kstwo.sf(D, round(n_a n_b / (n_a + n_b)))``),
  'exact' and the default 'auto' (exact below 10000 values), and ``scipy.special.kolmogorov`` at
  Stephens' lambda = (sqrt(n) + 0.12 + 0.11 / sqrt(n)) D with n = n_a n_b / (n_a + n_b), the
  formula expanse implements (SciPy < 1.5's ks_2samp p-value).
* Beam correction (src/stats/power_spectrum.rs, ``PowerSpectrumOptions::beam_fwhm``): TurbuStat
  1.3 ``PowerSpectrum(map, header=hdr).run(beam_correct=True, fit_2D=False)`` with BMAJ = BMIN =
  FWHM x |CDELT| in the header. TurbuStat divides the 2-D power by |FFT|^2 of radio_beam 0.3.9's
  ``Beam.as_kernel`` sampled on the map's own grid (pixel-centre sampling; for an even side the
  kernel's centre falls between pixels); expanse divides by the analytic exp(-4 pi^2 sigma^2 f^2).
  The maps are Gaussian random fields (P ~ k^-3) convolved with the analytic Gaussian beam. Besides
  TurbuStat's outputs the fixture records, per radial bin, the range of analytic / discrete beam
  power over the bin's pixels (which bounds the ratio of the two corrected bin means) and a numpy
  re-implementation of expanse's analytic correction on TurbuStat's binning.

Install (Python 3.11; the TurbuStat venv of tools/requirements-turbustat.txt, which has
scikit-image), from the repository root:

    python3 -m venv .venv-turbustat
    .venv-turbustat/bin/pip install setuptools==65.5.0 wheel==0.42.0 numpy==1.26.4
    .venv-turbustat/bin/pip install --no-build-isolation --no-deps -r tools/requirements-turbustat.txt

Versions used: Python 3.11.7, numpy 1.26.4, scipy 1.13.1, scikit-image 0.26.0, turbustat 1.3,
astropy 6.0.1, radio-beam 0.3.9 (checked at start-up; recorded in manifest.json).

Run (from anywhere; the default --out is this repository's tests/fixtures/stats/claims):

    .venv-turbustat/bin/python tools/make_claims_fixtures.py [--out DIR]

Deterministic (fixed seeds, sorted JSON keys, no timestamps): re-running gives byte-identical files.
"""

import argparse
import hashlib
import importlib.metadata
import os
import sys
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

from scipy import special, stats  # noqa: E402
from scipy.stats import binned_statistic  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_turbustat_fixtures import dump_json, fake_header  # noqa: E402
from turbustat.statistics import PDF_Distance, PowerSpectrum  # noqa: E402
from turbustat.statistics.stats_utils import hellinger as ts_hellinger  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "stats", "claims")

PINNED = {"numpy": "1.26.4", "scipy": "1.13.1", "scikit-image": "0.26.0", "turbustat": "1.3",
          "astropy": "6.0.1", "radio-beam": "0.3.9"}


def versions():
    found = {name: importlib.metadata.version(name) for name in PINNED}
    found["python"] = "%d.%d.%d" % sys.version_info[:3]
    return found


def nan_to_none(arr):
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(arr, dtype=np.float64).ravel()]


def grf(shape, index, seed):
    """Gaussian random field with P(k) ~ k**index (k in pixel^-1), k = 0 removed, zero mean, unit
    std (as tools/make_turbustat_fixtures.py)."""
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


def to_range(x, lo, hi):
    return lo + (hi - lo) * (x - x.min()) / (x.max() - x.min())


def save(out, name, arr):
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    np.save(os.path.join(out, name), arr)
    return name


# ------------------------------------------------------------------------------------------ SSIM

def ssim_fixtures(out):
    rng = np.random.default_rng(2001)
    a48 = to_range(grf((48, 48), -3.0, 2002), -1.0, 1.0)
    b48 = np.clip(a48 + 0.15 * rng.standard_normal(a48.shape), -1.0, 1.0)
    a37 = to_range(grf((37, 53), -2.5, 2003), -1.0, 1.0)
    b37 = np.clip(0.7 * a37 + 0.3 * to_range(grf((37, 53), -2.0, 2004), -1.0, 1.0) + 0.1, -1.0, 1.0)
    a7 = rng.uniform(-1.0, 1.0, (7, 9))
    b7 = np.clip(a7 + 0.5 * rng.uniform(-1.0, 1.0, (7, 9)), -1.0, 1.0)
    files = {}
    for name, arr in [("ssim_48_a", a48), ("ssim_48_b", b48), ("ssim_37x53_a", a37),
                      ("ssim_37x53_b", b37), ("ssim_7x9_a", a7), ("ssim_7x9_b", b7)]:
        files[name] = save(out, name + ".npy", arr)
    pairs = [
        ("grf_48_noise", "ssim_48_a", "ssim_48_b", 2.0, None,
         "48x48 GRF k^-3 in [-1, 1] vs itself + 0.15 N(0,1), clipped to [-1, 1]"),
        ("grf_37x53_mix", "ssim_37x53_a", "ssim_37x53_b", 2.0, None,
         "37x53 GRF k^-2.5 in [-1, 1] vs 0.7 a + 0.3 (another GRF) + 0.1, clipped"),
        ("uniform_7x9", "ssim_7x9_a", "ssim_7x9_b", 2.0, None,
         "7x9 uniform noise: one row of 3 windows"),
        ("grf_48_unit_range", "ssim_48_a", "ssim_48_b", 1.0, (0.5, 0.5),
         "the grf_48_noise pair mapped to [0, 1] by (x + 1) / 2, data_range 1"),
        ("grf_48_identical", "ssim_48_a", "ssim_48_a", 2.0, None, "a map against itself: 1"),
    ]
    cases = []
    for name, fa, fb, data_range, affine, desc in pairs:
        a = np.load(os.path.join(out, files[fa] if fa in files else fa + ".npy"))
        b = np.load(os.path.join(out, files[fb]))
        if affine is not None:
            a, b = affine[0] * a + affine[1], affine[0] * b + affine[1]
        value = structural_similarity(a, b, data_range=data_range)
        # Same thing from the full SSIM image: the mean over windows that fit inside the map.
        _, full = structural_similarity(a, b, data_range=data_range, full=True)
        pad = 3
        assert np.isclose(full[pad:-pad, pad:-pad].mean(), value, rtol=1e-14, atol=0), name
        cases.append({"case": name, "a": fa + ".npy", "b": fb + ".npy", "data_range": data_range,
                      "affine": list(affine) if affine else None, "ssim": float(value),
                      "description": desc, "call": "structural_similarity(a, b, data_range=%g)" % data_range})
        print("ssim %-18s %.17g" % (name, value))
    dump_json({"reference": "skimage.metrics.structural_similarity, defaults (win_size=7, "
                            "gaussian_weights=False, K1=0.01, K2=0.03, use_sample_covariance=True)",
               "affine": "if not null, [s, t]: both maps are replaced by s * map + t before the call",
               "cases": cases}, os.path.join(out, "ssim.json"))
    return cases


# ------------------------------------------------------------------------------------- one-point

def onepoint_fixtures(out):
    rng = np.random.default_rng(3001)
    a = rng.standard_normal(2000)
    b = 1.2 * rng.standard_normal(3000) + 0.3
    save(out, "onepoint_a.npy", a)
    save(out, "onepoint_b.npy", b)

    # PDF_Distance end to end (what expanse's `compare` mirrors).
    d = PDF_Distance(a, b, do_fit=False)
    d.compute_hellinger_distance()
    d.compute_ks_distance()
    edges = np.asarray(d.bins, dtype=np.float64)
    pdf1 = np.asarray(d.PDF1.pdf, dtype=np.float64)
    pdf2 = np.asarray(d.PDF2.pdf, dtype=np.float64)
    counts1 = np.histogram(a, bins=edges)[0]
    counts2 = np.histogram(b, bins=edges)[0]
    assert np.allclose(pdf1, counts1 / (counts1.sum() * np.diff(edges)), rtol=1e-14)
    end_to_end = {
        "a": "onepoint_a.npy", "b": "onepoint_b.npy",
        "call": "PDF_Distance(a, b, do_fit=False); compute_hellinger_distance(); compute_ks_distance()",
        "edges": edges.tolist(), "pdf_a": pdf1.tolist(), "pdf_b": pdf2.tolist(),
        "counts_a": [int(c) for c in counts1], "counts_b": [int(c) for c in counts2],
        "hellinger": float(d.hellinger_distance), "ks_statistic": float(d.ks_distance),
        "ks_pvalue_auto": float(d.ks_pval),
    }
    print("PDF_Distance hellinger %.17g  KS D %.17g  (%d edges)" % (d.hellinger_distance, d.ks_distance, edges.size))

    # stats_utils.hellinger on given histograms, each normalized to unit sum first (as PDF_Distance).
    hists = [
        ("pdf_distance_pdfs", pdf1.tolist(), pdf2.tolist(), "the two PDFs above"),
        ("counts_with_empty_bins", [0, 3, 10, 25, 40, 12, 0, 1, 0], [2, 0, 14, 30, 33, 20, 5, 0, 0],
         "raw counts, unequal totals (91 vs 104), bins empty in one or both"),
        ("disjoint", [5, 7, 0, 0], [0, 0, 1, 2], "no common support: distance 1"),
        ("fractions", [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], "already unit sum"),
    ]
    hcases = []
    for name, p, q, desc in hists:
        p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
        h = ts_hellinger(p / p.sum(), q / q.sum())
        hcases.append({"case": name, "p": p.tolist(), "q": q.tolist(), "hellinger": float(h),
                       "description": desc})
        print("hellinger %-24s %.17g" % (name, h))
    dump_json({"reference": "turbustat.statistics.stats_utils.hellinger(p / p.sum(), q / q.sum()) "
                            "(bin_width 1), as PDF_Distance.compute_hellinger_distance calls it",
               "histograms": hcases, "pdf_distance": end_to_end}, os.path.join(out, "hellinger.json"))

    # KS: scipy.stats.ks_2samp on several sample pairs.
    rng = np.random.default_rng(3002)
    pool = []

    def put(x):
        start = sum(len(v) for v in pool)
        pool.append(np.asarray(x, dtype=np.float64))
        return [start, len(x)]

    small = [
        ("normal_20_30", rng.standard_normal(20), rng.standard_normal(30) + 0.5),
        ("normal_50_70", rng.standard_normal(50), rng.standard_normal(70) + 0.3),
        ("normal_200_300", rng.standard_normal(200), rng.standard_normal(300) + 0.4),
        ("poisson_ties_300_400", rng.poisson(3.0, 300), rng.poisson(3.3, 400)),
        ("normal_500_500_same", rng.standard_normal(500), rng.standard_normal(500)),
    ]
    kcases = []
    for name, x, y in small:
        kcases.append({"case": name, "a": put(x), "b": put(y)})
    # Cases built in the test from the one-point samples (no extra storage).
    kcases.append({"case": "onepoint_2000_3000", "a": "onepoint_a.npy", "b": "onepoint_b.npy"})
    kcases.append({"case": "near_identical_2000", "a": "onepoint_a.npy", "b": "onepoint_a.npy",
                   "b_replace_first_with": 10.0,
                   "description": "b = a with a[0] replaced by 10: D = 1/2000, Stephens' lambda 0.016 "
                                  "(the p-value series needs its small-lambda branch)"})
    kcases.append({"case": "identical_2000", "a": "onepoint_a.npy", "b": "onepoint_a.npy"})
    allv = np.concatenate(pool)
    save(out, "ks_samples.npy", allv)
    base = {"onepoint_a.npy": a, "onepoint_b.npy": b}
    for c in kcases:
        x = base[c["a"]] if isinstance(c["a"], str) else allv[c["a"][0]:c["a"][0] + c["a"][1]]
        y = base[c["b"]] if isinstance(c["b"], str) else allv[c["b"][0]:c["b"][0] + c["b"][1]]
        if "b_replace_first_with" in c:
            y = y.copy()
            y[0] = c["b_replace_first_with"]
        na, nb = len(x), len(y)
        en = na * nb / (na + nb)
        asymp = stats.ks_2samp(x, y, method="asymp")
        exact = stats.ks_2samp(x, y, method="exact")
        auto = stats.ks_2samp(x, y)
        # 'exact' reports D rounded to its fraction h / lcm(n_a, n_b); 'asymp' reports the raw
        # max |F_a - F_b| from searchsorted / n, as expanse computes it.
        assert exact.statistic == auto.statistic and abs(asymp.statistic - exact.statistic) < 1e-15
        D = float(asymp.statistic)
        lam = (np.sqrt(en) + 0.12 + 0.11 / np.sqrt(en)) * D
        c.update({"n_a": na, "n_b": nb, "n_eff": en, "statistic": D,
                  "statistic_exact_fraction": float(exact.statistic),
                  "pvalue_asymp": float(asymp.pvalue), "pvalue_exact": float(exact.pvalue),
                  "pvalue_auto": float(auto.pvalue),
                  "pvalue_asymp_check": float(stats.kstwo.sf(D, np.round(en))),
                  "stephens_lambda": float(lam), "pvalue_stephens": float(special.kolmogorov(lam))})
        assert c["pvalue_asymp"] == c["pvalue_asymp_check"], c
        print("ks %-22s D %.6f  asymp %.6g  exact %.6g  stephens %.6g" % (
            c["case"], D, asymp.pvalue, exact.pvalue, special.kolmogorov(lam)))
    dump_json({"reference": "scipy.stats.ks_2samp(a, b, method=...) for 'asymp', 'exact' and the default "
                            "'auto'; pvalue_stephens = scipy.special.kolmogorov(stephens_lambda) with "
                            "stephens_lambda = (sqrt(n_eff) + 0.12 + 0.11 / sqrt(n_eff)) * D",
               "samples": "ks_samples.npy: [start, length] slices of one float64 vector, or a file name",
               "cases": kcases}, os.path.join(out, "ks.json"))


# ------------------------------------------------------------------------------------------ beam

def beam_header(shape, fwhm_pix):
    """make_turbustat_fixtures.py's pixel-unit header (1 arcsec pixels) with a round beam of
    `fwhm_pix` pixels."""
    hdr = fake_header(shape)
    hdr["BMAJ"] = fwhm_pix / 3600.0
    hdr["BMIN"] = fwhm_pix / 3600.0
    hdr["BPA"] = 0.0
    return hdr


def beam_case(out, name, shape, fwhm, seed):
    sigma = fwhm / np.sqrt(8.0 * np.log(2.0))
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    transfer = np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * (fy ** 2 + fx ** 2))
    m = np.fft.ifft2(np.fft.fft2(grf(shape, -3.0, seed)) * transfer).real
    m = np.ascontiguousarray(m, dtype=np.float64)
    save(out, name + ".npy", m)

    hdr = beam_header(shape, fwhm)
    ps = PowerSpectrum(m, header=hdr)
    ps.run(beam_correct=True, fit_2D=False)
    plain = PowerSpectrum(m, header=beam_header(shape, fwhm))
    plain.run(beam_correct=False, fit_2D=False)

    freqs = np.asarray(ps.freqs.value, dtype=np.float64)
    ps1d = np.asarray(ps.ps1D, dtype=np.float64)
    nbins = freqs.size
    # Re-derive TurbuStat's binning on the fftshifted grid (as tools/make_turbustat_fixtures.py).
    ny, nx = shape
    fys = np.fft.fftshift(np.fft.fftfreq(ny))
    fxs = np.fft.fftshift(np.fft.fftfreq(nx))
    yy, xx = np.meshgrid(fys, fxs, indexing="ij")
    f = np.sqrt(yy ** 2 + xx ** 2)
    f[f == 0] = f[f != 0].min() / 2.0
    edges = np.linspace(1.0 / min(shape), 0.5, nbins + 1)
    assert np.array_equal(0.5 * (edges[1:] + edges[:-1]), freqs)
    raw = np.fft.fftshift(np.abs(np.fft.fft2(m)) ** 2)
    beam_pow = np.asarray(ps._beam_pow, dtype=np.float64)  # fftshifted, zeros set to NaN
    # TurbuStat's 2-D power is |FFT|^2 / beam power (away from the zero-frequency pixel, which is
    # round-off for these zero-mean maps and excluded from every bin).
    # Beam power 0 is set to NaN by TurbuStat, and so is the corrected power there.
    ok = np.isfinite(beam_pow)
    assert np.array_equal(np.isfinite(ps._ps2D), ok)
    assert np.allclose((ps._ps2D * beam_pow)[ok], raw[ok], rtol=1e-10, atol=1e-13 * raw.max())
    analytic = np.exp(-4.0 * np.pi ** 2 * sigma ** 2 * f ** 2)
    analytic[f == f.min()] = 1.0  # the zero-frequency pixel, excluded from every bin anyway
    ts_2d = raw / beam_pow
    an_2d = raw / analytic
    finite = np.isfinite(ts_2d)
    mean_ts = binned_statistic(f[finite], ts_2d[finite], bins=edges, statistic="mean")[0]
    assert np.allclose(mean_ts, ps1d, rtol=1e-12, equal_nan=True), name
    mean_an = binned_statistic(f.ravel(), an_2d.ravel(), bins=edges, statistic="mean")[0]
    counts_ts = binned_statistic(f[finite], ts_2d[finite], bins=edges, statistic="count")[0]
    counts_all = binned_statistic(f.ravel(), an_2d.ravel(), bins=edges, statistic="count")[0]
    ratio = analytic / beam_pow  # = (TurbuStat corrected pixel) / (analytic corrected pixel)
    rmin = binned_statistic(f[finite], ratio[finite], bins=edges, statistic="min")[0]
    rmax = binned_statistic(f[finite], ratio[finite], bins=edges, statistic="max")[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = ps1d / mean_an - 1.0
    worst = int(np.nanargmax(np.abs(rel)))
    print("beam %-12s fwhm %g px: TurbuStat/analytic per bin: first %.3g, worst %.4g at bin %d "
          "(f=%.4f); slope %.4f (TurbuStat) vs %.4f uncorrected; NaN beam pixels %d" % (
              name, fwhm, rel[0], rel[worst], worst, freqs[worst], ps.slope, plain.slope,
              int((~np.isfinite(beam_pow)).sum())))
    for i in range(nbins):
        print("   bin %2d f=%.4f ts/analytic-1 = %+.3e  pixel ratio in [%.4g, %.4g]  n=%d/%d" % (
            i, freqs[i], rel[i], rmin[i], rmax[i], counts_ts[i], counts_all[i]))
    return {
        "case": name, "map": name + ".npy", "shape": [int(ny), int(nx)], "fwhm_pix": fwhm,
        "header": {"CDELT1": hdr["CDELT1"], "CDELT2": hdr["CDELT2"], "BMAJ": hdr["BMAJ"],
                   "BMIN": hdr["BMIN"], "BPA": hdr["BPA"]},
        "description": "GRF P~k^-3 (seed %d) convolved with exp(-2 pi^2 sigma^2 f^2), sigma = FWHM / "
                       "sqrt(8 ln 2)" % seed,
        "call": "PowerSpectrum(map, header=hdr).run(beam_correct=True, fit_2D=False)",
        "freqs": freqs.tolist(), "edges": edges.tolist(),
        "ps1D": nan_to_none(ps1d), "ps1D_stddev": nan_to_none(ps.ps1D_stddev),
        "slope": float(ps.slope), "slope_err": float(ps.slope_err),
        "ps1D_uncorrected": nan_to_none(plain.ps1D), "slope_uncorrected": float(plain.slope),
        "counts": [int(c) for c in counts_ts], "counts_all_pixels": [int(c) for c in counts_all],
        "beam_nan_pixels": int((~np.isfinite(beam_pow)).sum()),
        "analytic_ps1D": nan_to_none(mean_an),
        "analytic_ps1D_note": "numpy: mean per bin of |FFT|^2 / exp(-4 pi^2 sigma^2 f^2) on TurbuStat's "
                              "bins, all pixels (expanse's algorithm)",
        "pixel_ratio_min": nan_to_none(rmin), "pixel_ratio_max": nan_to_none(rmax),
        "pixel_ratio_note": "per bin, min and max over the pixels TurbuStat keeps of "
                            "exp(-4 pi^2 sigma^2 f^2) / TurbuStat's beam power",
    }


def beam_fixtures(out):
    cases = [beam_case(out, "beam_even_64", (64, 64), 3.0, 4001),
             beam_case(out, "beam_odd_63", (63, 63), 3.0, 4002)]
    dump_json({"reference": "turbustat.statistics.PowerSpectrum(..., header with BMAJ/BMIN/BPA)"
                            ".run(beam_correct=True, fit_2D=False)",
               "cases": cases}, os.path.join(out, "beam.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    found = versions()
    for name, want in PINNED.items():
        if found[name] != want:
            print("warning: %s %s (fixtures were made with %s)" % (name, found[name], want), file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    ssim_fixtures(args.out)
    onepoint_fixtures(args.out)
    beam_fixtures(args.out)
    files = sorted(f for f in os.listdir(args.out) if f != "manifest.json")
    manifest = {
        "generator": "tools/make_claims_fixtures.py",
        "test": "tests/stats_claims.rs",
        "versions": found,
        "sha256": {f: hashlib.sha256(open(os.path.join(args.out, f), "rb").read()).hexdigest() for f in files},
    }
    dump_json(manifest, os.path.join(args.out, "manifest.json"))


if __name__ == "__main__":
    main()
