#!/usr/bin/env python3
"""Open every kind of file expanse writes with astropy, h5py and numpy, and check what is in it.

    cargo build --release && python3 tools/check_outputs.py
    python3 tools/check_outputs.py --exe target/debug/expanse          # what .ci/run does

The binary: --exe PATH, else $EXPANSE_EXE, else target/release/expanse. Needs numpy, astropy
and h5py (tools/requirements-check.txt pins the versions CI installs).

Two parts, both in a temporary folder:

- `expanse ingest` (raw and normalized, FITS/HDF5/NPY): values equal what astropy reads from
  the input, units, masks, provenance.
- `expanse run` on a small config (8 shipped cloud maps, batch 2, 10-point grid, 4 samples,
  formats fits + h5 + npy): every file of the run folder that holds data — the stacks, the
  latents, the priors and their diagnostics, the synthetic maps in every format and their
  latents, the report, the manifest — opened with the reference libraries and checked against
  the input maps, against each other and against numbers recomputed here with numpy.

Prints one line per check and exits non-zero on any mismatch (a file that does not open counts
as one). --blanks also runs the small config on a copy of the maps with blank (NaN) pixels.
"""

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import h5py
import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUDS = os.path.join(ROOT, "data", "samples", "clouds_64.fits")
NAN_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "io", "fits_nan_f32.fits")
MODEL = os.path.join(ROOT, "data", "models", "expanse-natural-32")
WEIGHTS = os.path.join(MODEL, "diffusion_pytorch_model.safetensors")

# The small run (as tests/run_cli.rs's small_config, with all three writers).
DOMAIN = "clouds"
SEED = 3
N_MAPS = 8
SIZE = 32
STEPS = 10
T0 = 300
COUNT = 4
K = 5
FORMATS = ["fits", "h5", "npy"]
# Column densities (and anything else in these units) must come out positive.
POSITIVE_UNITS = {"cm-2", "cm^-2", "cm**-2", "1/cm2"}


class Mismatch(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Mismatch(what)


def expect_eq(got, want, what):
    expect(got == want, f"{what}: expected {want!r}, found {got!r}")


def expect_close(got, want, what, rtol=0.0, atol=0.0):
    """Element-wise |got - want| <= atol + rtol |want|, NaN where NaN; names the worst pixel."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    expect_eq(got.shape, want.shape, f"{what} shape")
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    expect(np.array_equal(nan_g, nan_w), f"{what}: NaN at {np.argwhere(nan_g != nan_w)[:3].tolist()} differs")
    g, w = got[~nan_w], want[~nan_w]
    err = np.abs(g - w) - (atol + rtol * np.abs(w))
    if err.size and err.max() > 0:
        i = int(np.argmax(err))
        raise Mismatch(f"{what}: expected {float(w[i])!r}, found {float(g[i])!r} (|diff| {abs(g[i] - w[i]):.3g}, "
                       f"{int((err > 0).sum())} of {err.size} values off; rtol {rtol}, atol {atol})")


def expect_finite_number(v, what):
    expect(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
           f"{what}: expected a finite number, found {v!r}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def derive_seed(seed, name):
    """pipeline::manifest::derive_seed: SplitMix64 of the run seed mixed with FNV-1a of the name."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & mask
    z = ((seed ^ h) + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def read_fits(path):
    """astropy's HDUList (data loaded), any astropy warning or failed verification an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyWarning)
        hdus = fits.open(path, memmap=False)
        hdus.verify("exception")
        for hdu in hdus:
            _ = hdu.data
    return hdus


def fits_provenance(header):
    expect("EXPPROV" in header, "no EXPPROV keyword")
    return json.loads(header["EXPPROV"])


def h5_str_attr(obj, name):
    expect(name in obj.attrs, f"no attribute {name!r} on {obj.name}")
    v = obj.attrs[name]
    expect(isinstance(v, str), f"attribute {name!r} on {obj.name}: expected a UTF-8 string, found {type(v).__name__}")
    return v


def read_npy(path):
    a = np.load(path, allow_pickle=False)
    return a


def read_stack(path):
    """(data, units, provenance, mask or None) of an expanse stack in any of the three formats."""
    if path.endswith(".fits"):
        with read_fits(path) as h:
            data, hdr = h[0].data, h[0].header
            mask = h["MASK"].data if "MASK" in h else None
            return data, hdr.get("BUNIT"), fits_provenance(hdr), mask
    if path.endswith(".h5"):
        with h5py.File(path, "r") as f:
            ds = f["maps"]
            units = h5_str_attr(ds, "units") if "units" in ds.attrs else None
            mask = f["mask"][...] if "mask" in f else None
            return ds[...], units, json.loads(h5_str_attr(f, "provenance")), mask
    if path.endswith(".npy"):
        data = read_npy(path)
        with open(path + ".json") as f:
            side = json.load(f)
        expect_eq(side["shape"], list(data.shape), f"{os.path.basename(path)}.json shape")
        mask_path = path[:-4] + ".mask.npy"
        mask = read_npy(mask_path) if os.path.exists(mask_path) else None
        return data, side["units"], side["provenance"], mask
    raise Mismatch(f"unknown format: {path}")


class Checks:
    def __init__(self):
        self.failures = 0
        self.count = 0

    def __call__(self, name, fn):
        """Runs one check: it passes when fn() returns; a Mismatch or any error fails it."""
        self.count += 1
        try:
            fn()
            print(f"{name}: ok", flush=True)
        except Exception as e:  # noqa: BLE001 - a file that does not open is a failed check too
            self.failures += 1
            detail = str(e) if isinstance(e, Mismatch) else f"{type(e).__name__}: {e}"
            print(f"{name}: MISMATCH ({detail})", flush=True)


class Shared(dict):
    """Values one check reads and later checks reuse; a missing one names the check it needs."""

    def __missing__(self, key):
        raise Mismatch(f"needs {key!r} from an earlier check, which failed")


class Expanse:
    def __init__(self, exe):
        self.exe = exe

    def __call__(self, *args):
        env = dict(os.environ, RUST_BACKTRACE="0")
        r = subprocess.run([self.exe, *args], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            tail = " | ".join(l for l in (r.stderr or r.stdout).strip().splitlines()[-3:])
            raise Mismatch(f"`expanse {' '.join(args[:1])}` exited {r.returncode}: {tail}")
        return r.stdout


# ---------------------------------------------------------------------------------------------
# expanse ingest


def check_ingest(c, expanse, tmp):
    with fits.open(CLOUDS) as h:
        want, units = h[0].data.astype(np.float32), h[0].header["BUNIT"]
    blanks = np.isnan(fits.getdata(NAN_FIXTURE))
    for ext in FORMATS:
        raw = os.path.join(tmp, f"raw.{ext}")

        def raw_check(raw=raw, ext=ext):
            expanse("ingest", CLOUDS, "--raw", "--out", raw)
            data, got_units, prov, _ = read_stack(raw)
            expect_eq(data.dtype.kind + str(data.dtype.itemsize), "f4", "dtype")
            expect(np.array_equal(data, want), "values differ from astropy's read of the input")
            expect_eq(got_units, units, "units")
            expect(prov["command"].startswith("ingest"), f"provenance command: expected ingest, found {prov['command']!r}")

        c(f"ingest raw {ext}: values, units, provenance", raw_check)
        norm = os.path.join(tmp, f"norm.{ext}")

        def norm_check(norm=norm):
            expanse("ingest", NAN_FIXTURE, "--transform", "asinh", "--out", norm)
            data, _, prov, mask = read_stack(norm)
            expect_eq(data.shape, (1, 1, 12, 16), "shape")
            expect(mask is not None, "no mask written for an input with blank pixels")
            expect(np.array_equal(mask[0].astype(bool), blanks), "mask differs from the input's NaN pixels")
            expect(np.isfinite(data).all(), "non-finite model-space values")
            expect("normalization" in prov["records"], "no normalization record in the provenance")

        c(f"ingest normalized {ext}: mask, finite values, normalization", norm_check)


# ---------------------------------------------------------------------------------------------
# expanse run


def write_config(folder, inputs):
    text = f"""[run]
name = "small"
seed = {SEED}
formats = {json.dumps(FORMATS)}

[model]
path = {json.dumps(MODEL)}
batch = 2

[inversion]
steps = {STEPS}
t0 = {T0}

[prior]
kind = "empirical"

[sampling]
count = {COUNT}
k = {K}
budget = 50000

[[domain]]
name = "{DOMAIN}"
inputs = [{json.dumps(inputs)}]
max_maps = {N_MAPS}
transform = "log10"
size = {SIZE}
"""
    path = os.path.join(folder, "small.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def write_blank_input(folder):
    """The first maps of clouds_64.fits with blank pixels: one whole 2x2 block (a blank pixel at
    32x32) and one single pixel (averaged over the rest of its block)."""
    with fits.open(CLOUDS) as h:
        data = h[0].data[:N_MAPS].astype(np.float32)
        units = h[0].header["BUNIT"]
    data[0, 10:12, 20:22] = np.nan
    data[1, 5, 7] = np.nan
    path = os.path.join(folder, "clouds_blanks.fits")
    fits.PrimaryHDU(data, header=fits.Header([("BUNIT", units)])).writeto(path)
    return path


def block_mean(maps, factor):
    """Area-averaging by an integer factor, NaN pixels left out (NaN where a block is all NaN)."""
    n, h, w = maps.shape
    b = maps.reshape(n, h // factor, factor, w // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(b, axis=(2, 4))


def check_run(c, expanse, tmp, inputs, label):
    """Runs the small config on `inputs` into tmp/<label> and checks every data file it writes."""
    folder = os.path.join(tmp, label.replace(" ", "_"))
    os.makedirs(folder)
    config = write_config(folder, inputs)
    run = os.path.join(folder, "run")
    p = lambda *parts: os.path.join(run, *parts)  # noqa: E731
    d = DOMAIN

    c(f"[{label}] expanse run (small config, formats {'/'.join(FORMATS)}) exits 0", lambda: expanse("run", config, "--out", run))

    # What the run must reproduce, from the input as astropy reads it.
    with fits.open(inputs) as h:
        src = h[0].data[:N_MAPS].astype(np.float64)
        units = h[0].header["BUNIT"]
    real_want = block_mean(src, src.shape[-1] // SIZE)
    blank = np.isnan(real_want)
    weights_sha = sha256(WEIGHTS)
    sample_seed = derive_seed(SEED, f"sample/{d}")
    st = Shared()  # what later checks reuse

    def manifest():
        with open(p("manifest.json")) as f:
            return json.load(f)

    # -- config.toml ---------------------------------------------------------------------------
    def config_check():
        expect(tomllib is not None, "tomllib needs Python >= 3.11")
        with open(p("config.toml"), "rb") as f:
            cfg = tomllib.load(f)
        expect_eq(cfg["run"]["seed"], SEED, "run.seed")
        expect_eq(cfg["run"]["formats"], FORMATS, "run.formats")
        expect_eq((cfg["inversion"]["steps"], cfg["inversion"]["t0"]), (STEPS, T0), "inversion steps, t0")
        expect_eq(os.path.realpath(cfg["model"]["path"]), os.path.realpath(MODEL), "model.path")
        expect_eq(cfg["domain"][0]["name"], d, "domain name")

    c(f"[{label}] config.toml: TOML, the resolved config (seed, formats, grid, model)", config_check)

    # -- stacks/<d>.real.<fmt> -----------------------------------------------------------------
    def real_check():
        found = [f for f in sorted(os.listdir(p("stacks"))) if f.startswith(f"{d}.real.") and f.rsplit(".", 1)[1] in FORMATS]
        expect(found, f"no stacks/{d}.real.<fmt>")
        for name in found:
            data, got_units, prov, _ = read_stack(p("stacks", name))
            expect_eq(data.dtype.kind + str(data.dtype.itemsize), "f4", f"{name} dtype")
            expect_eq(data.shape, (N_MAPS, SIZE, SIZE), f"{name} shape")
            # Geometry in physical units: 2x2 area means of the input (float32 output).
            expect_close(data, real_want, f"{name} values vs 2x2 means of the input", rtol=1e-6)
            expect_eq(got_units, units, f"{name} units")
            expect_eq(len(prov["sources"]), N_MAPS, f"{name} provenance sources")
            expect(prov["command"].startswith("ingest"), f"{name} provenance command {prov['command']!r}")
            st["real"] = data.astype(np.float64)

    c(f"[{label}] stacks/{d}.real.<fmt>: geometry (area means of the input), units, provenance", real_check)

    # -- stacks/<d>.h5 -------------------------------------------------------------------------
    def stack_check():
        with h5py.File(p("stacks", f"{d}.h5"), "r") as f:
            ds = f["maps"]
            expect_eq(ds.dtype, np.dtype("float32"), "maps dtype")
            expect_eq(ds.shape, (N_MAPS, 3, SIZE, SIZE), "maps shape (N, C, H, W)")
            stack = ds[...].astype(np.float64)
            prov = json.loads(h5_str_attr(f, "provenance"))
            h5_str_attr(f, "expanse_version")
            mask = f["mask"][...] if "mask" in f else None
        norm = prov["records"]["normalization"]
        tr = norm["transform"]
        expect_eq(tr["kind"], "log10", "transform")
        expect_eq(norm["units"], units, "normalization units")
        expect_eq(prov["units"], units, "provenance units")
        expect_eq(norm["n_maps"], N_MAPS, "n_maps")
        expect_eq(norm["shape"], [SIZE, SIZE], "normalization shape")
        expect_eq(norm["geometry"]["size"], SIZE, "geometry size")
        # minmax: lo and hi are the extremes of log10(x + offset) over all maps.
        lg = np.log10(real_want + tr["offset"])
        expect_close([tr["lo"], tr["hi"]], [np.nanmin(lg), np.nanmax(lg)], "lo, hi vs log10 extremes", atol=1e-5)
        y = 2 * (lg - tr["lo"]) / (tr["hi"] - tr["lo"]) - 1
        # Blank pixels hold the transformed median, recorded; the mask marks them.
        expect_close(norm["fill"], np.nanmedian(real_want), "fill vs median of the maps", rtol=1e-6)
        fill_model = 2 * (np.log10(norm["fill"] + tr["offset"]) - tr["lo"]) / (tr["hi"] - tr["lo"]) - 1
        expect_close(norm["fill_model"], fill_model, "fill_model", atol=1e-6)
        y = np.where(blank, norm["fill_model"], y)
        for ch in range(3):
            expect_close(stack[:, ch], y, f"channel {ch} vs the log10 transform of the input", atol=1e-5)
        if blank.any():
            expect(mask is not None, "no mask dataset although the input has blank pixels")
            expect_eq(mask.dtype, np.dtype("uint8"), "mask dtype")
            expect(np.array_equal(mask.astype(bool), blank), f"mask: expected blanks at {np.argwhere(blank).tolist()}, "
                   f"found {np.argwhere(mask).tolist()}")
        else:
            expect(mask is None or not mask.any(), "mask marks pixels although the input has none blank")
        st["norm"] = norm

    c(f"[{label}] stacks/{d}.h5: model-space stack = log10 transform of the input, mask, normalization", stack_check)

    # -- latents/<d>.h5 ------------------------------------------------------------------------
    def latents_check():
        with h5py.File(p("latents", f"{d}.h5"), "r") as f:
            ds = f["maps"]
            expect_eq(ds.dtype, np.dtype("float32"), "dtype")
            expect_eq(ds.shape, (N_MAPS, 3, SIZE, SIZE), "shape")
            z = ds[...]
            prov = json.loads(h5_str_attr(f, "provenance"))
        expect(np.isfinite(z).all(), "non-finite latents")
        rec = prov["records"]
        ddim = rec["ddim"]
        expect_eq((ddim["steps"], ddim["t0"]), (STEPS, T0), "grid steps, t0")
        expect_eq(len(ddim["seq"]), STEPS, "grid length")
        expect_eq((ddim["seq"][0], ddim["seq"][-1]), (0, T0), "grid ends")
        expect(all(a < b for a, b in zip(ddim["seq"], ddim["seq"][1:])), f"grid not increasing: {ddim['seq']}")
        expect_eq(rec["model"]["weights_sha256"], weights_sha, "model weights_sha256 vs the weights file")
        expect_eq(os.path.realpath(rec["model"]["folder"]), os.path.realpath(MODEL), "model folder")
        if "norm" in st:
            expect_eq(rec["normalization"], st["norm"], "normalization carried from the stack")
        st["latents"] = z.astype(np.float64).reshape(N_MAPS, -1)

    c(f"[{label}] latents/{d}.h5: latents, grid and model provenance (weights SHA-256)", latents_check)

    # -- prior/prior.h5 ------------------------------------------------------------------------
    def prior_check():
        with h5py.File(p("prior", "prior.h5"), "r") as f:
            h5_str_attr(f, "expanse_version")
            expect_eq(json.loads(h5_str_attr(f, "info"))["kind"], "empirical", "file info kind")
            expect_eq(list(f["priors"].keys()), [d], "prior groups")
            g = f["priors"][d]
            expect_eq(h5_str_attr(g, "kind"), "empirical", "kind")
            expect_eq(int(g.attrs["n"]), N_MAPS, "n")
            expect_eq(int(g.attrs["d"]), 3 * SIZE * SIZE, "d")
            expect_eq(list(g.attrs["shape"]), [3, SIZE, SIZE], "shape")
            prov = json.loads(h5_str_attr(g, "provenance"))
            expect_eq(g["mean"].shape, (3 * SIZE * SIZE,), "mean shape")
            expect_eq(g["latents"].dtype, np.float32, "kept latents' type")
            expect_eq(g["latents"].shape, (N_MAPS, 3 * SIZE * SIZE), "kept latents' shape")
            mean, kept = g["mean"][...], g["latents"][...]
        expect_eq(prov["latents"], f"latents/{d}.h5", "provenance latents")
        expect_eq(prov["records"]["model"]["weights_sha256"], weights_sha, "provenance model")
        z = st["latents"]
        # The empirical prior: the latents' mean, and the latents themselves (float32, as inverted).
        expect_close(mean, z.mean(0), "mean vs the latents' mean", atol=1e-9)
        expect_eq(np.array_equal(kept, z.reshape(N_MAPS, -1).astype(np.float32)), True, "kept latents = the latents")

    c(f"[{label}] prior/prior.h5: empirical prior = mean and centred latents, attrs, provenance", prior_check)

    def diagnostics_check():
        with open(p("prior", "prior.diagnostics.json")) as f:
            diag = json.load(f)
        expect_eq([x["name"] for x in diag["domains"]], [d], "domains")
        x = diag["domains"][0]
        expect_eq((x["n"], x["d"], x["kind"]), (N_MAPS, 3 * SIZE * SIZE, "empirical"), "n, d, kind")
        z = st["latents"]
        norms = np.linalg.norm(z, axis=1)
        expect_close([x["norms"][k] for k in ("mean", "std", "min", "max")],
                     [norms.mean(), norms.std(), norms.min(), norms.max()], "norms mean/std/min/max", rtol=1e-9)
        i, j = np.triu_indices(N_MAPS, 1)
        dist = np.linalg.norm(z[i] - z[j], axis=1)
        expect_close([x["pairwise_distance"][k] for k in ("mean", "min", "max")],
                     [dist.mean(), dist.min(), dist.max()], "pairwise distances", rtol=1e-9)
        expect_close(x["mean_norm"], np.linalg.norm(z.mean(0)), "mean_norm", rtol=1e-9)
        for key in ("sigma", "mean_norm_debiased", "offset_over_radius"):
            expect_finite_number(x[key], key)

    c(f"[{label}] prior/prior.diagnostics.json: parses; norms and distances recomputed from the latents",
      diagnostics_check)

    # -- samples/<d>.<fmt> ---------------------------------------------------------------------
    def samples_formats_check():
        got = {}
        for ext in FORMATS:
            path = p("samples", f"{d}.{ext}")
            data, got_units, prov, mask = read_stack(path)
            expect_eq(data.dtype.kind + str(data.dtype.itemsize), "f4", f"{ext} dtype")
            expect_eq(data.shape, (COUNT, SIZE, SIZE), f"{ext} shape")
            expect_eq(got_units, units, f"{ext} units (FITS BUNIT / HDF5 units / NPY sidecar) vs the input's")
            got[ext] = (data.astype(np.float64), prov)
            if ext == FORMATS[0]:
                st["samples"], st["samples_prov"] = got[ext]
        first = FORMATS[0]
        for ext in FORMATS[1:]:
            expect_close(got[ext][0], got[first][0], f"{ext} vs {first} values", rtol=2.0 ** -23)
            expect_eq(got[ext][1], got[first][1], f"{ext} vs {first} provenance")

    c(f"[{label}] samples/{d}.fits/.h5/.npy(+.json): open; shapes, units, values and provenance agree",
      samples_formats_check)

    def samples_values_check():
        s = st["samples"]
        expect(np.isfinite(s).all(), "non-finite synthetic values")
        if units in POSITIVE_UNITS:
            expect(s.min() > 0, f"column densities must be positive; minimum {s.min()!r}")

    c(f"[{label}] samples/{d}: finite, positive column densities", samples_values_check)

    def samples_provenance_check():
        rec = st["samples_prov"]["records"]
        expect_eq(rec["run"]["seed"], SEED, "run seed")
        expect_eq(rec["sampling"]["spec"]["seed"], sample_seed, "sampling seed vs derive_seed(run seed, 'sample/<d>')")
        expect_eq(rec["sampling"]["accepted"], COUNT, "accepted")
        expect_eq(rec["model"]["weights_sha256"], weights_sha, "model weights_sha256 vs the weights file")
        expect_eq(os.path.realpath(rec["model"]["folder"]), os.path.realpath(MODEL), "model folder")
        expect_eq((rec["ddim"]["steps"], rec["ddim"]["t0"]), (STEPS, T0), "grid")
        expect_eq(st["samples_prov"]["units"], units, "provenance units")

    c(f"[{label}] samples/{d} provenance: run and sampling seed, model (weights SHA-256), grid",
      samples_provenance_check)

    # -- samples/<d>.latents.npy ---------------------------------------------------------------
    def sample_latents_check():
        z = read_npy(p("samples", f"{d}.latents.npy"))
        expect_eq(z.dtype, np.dtype("<f4"), "dtype")
        expect_eq(z.shape, (COUNT, 3, SIZE, SIZE), "shape")
        expect(np.isfinite(z).all(), "non-finite latents")
        with open(p("samples", f"{d}.latents.npy.json")) as f:
            side = json.load(f)
        expect_eq(side["shape"], list(z.shape), "sidecar shape")
        sampling = side["provenance"]["records"]["sampling"]
        expect_eq(sampling["spec"]["seed"], sample_seed, "sidecar seed")
        expect_eq(sampling["accepted"], COUNT, "sidecar accepted")
        expect(sampling["tried"] >= COUNT, f"tried {sampling['tried']} < accepted")
        if "samples_prov" in st:
            expect_eq(sampling, st["samples_prov"]["records"]["sampling"], "sampling record vs the maps'")
        # The norm test accepted only latents whose norm lies in the target band.
        lo, hi = sampling["targets"]["norm"]
        norms = np.linalg.norm(z.reshape(COUNT, -1).astype(np.float64), axis=1)
        expect(((norms >= lo) & (norms <= hi)).all(), f"latent norms {norms.tolist()} outside the target [{lo}, {hi}]")

    c(f"[{label}] samples/{d}.latents.npy(+.json): shape, seed, norms inside the accepted band",
      sample_latents_check)

    # -- report/<d>/report.json ----------------------------------------------------------------
    def report_check():
        with open(p("report", d, "report.json")) as f:
            r = json.load(f)
        expect_eq((r["n_real"], r["n_synthetic"]), (N_MAPS, COUNT), "n_real, n_synthetic")
        expect_eq(r["shape"], [SIZE, SIZE], "shape")
        expect_eq(r["units"], units, "units")
        key = {
            "spectrum_real.slope": r["spectrum_real"]["slope"],
            "spectrum_synthetic.slope": r["spectrum_synthetic"]["slope"],
            "spectrum_distance": r["spectrum_distance"],
            "slopes.welch_t": r["slopes"]["welch_t"],
            "level.ratio": r["level"]["ratio"],
            "pdf.hellinger": r["pdf"]["hellinger"],
            "pdf.hellinger_std": r["pdf"]["hellinger_std"],
            "memorization.ratio": r["memorization"]["ratio"],
            "battery.chi2": r["battery"]["chi2"]["value"],
            "battery.distance": r["battery"]["distance"]["value"],
        }
        for s in r["battery"]["statistics"]:
            key[f"battery {s['statistic']} chi2"] = s["chi2"]["value"]
        for k, v in key.items():
            expect_finite_number(v, k)
        # The same numbers as the manifest's validation record (the validate stage's counts).
        v = manifest()["stages"][f"validate/{d}"]["counts"]["validation"]
        b = v["battery"]
        pairs = {
            "battery.chi2": (b["chi2"], key["battery.chi2"]),
            "battery.distance": (b["distance"], key["battery.distance"]),
            "ensemble_spectrum_distance": (v["ensemble_spectrum_distance"], r["spectrum_distance"]),
            "hellinger.mean": (v["hellinger"]["mean"], r["pdf"]["hellinger"]),
            "hellinger.std": (v["hellinger"]["std"], r["pdf"]["hellinger_std"]),
            "hellinger_real_halves": (v["hellinger_real_halves"], r["pdf"]["hellinger_real_halves"]),
            "level_spread_ratio": (v["level_spread_ratio"], r["level"]["ratio"]),
            "memorization_ratio": (v["memorization_ratio"], r["memorization"]["ratio"]),
            "memorized": (v["memorized"], len(r["memorization"]["flagged"])),
            "outside_real_range": (v["outside_real_range"], r["pdf"]["synthetic_outside"]),
            "slope_real.mean": (v["slope_real"]["mean"], r["slopes"]["real"]["mean"]),
            "slope_real.std": (v["slope_real"]["std"], r["slopes"]["real"]["std"]),
            "slope_synthetic.mean": (v["slope_synthetic"]["mean"], r["slopes"]["synthetic"]["mean"]),
            "slope_synthetic.std": (v["slope_synthetic"]["std"], r["slopes"]["synthetic"]["std"]),
            "slope_welch_t": (v["slope_welch_t"], r["slopes"]["welch_t"]),
        }
        # The C2ST: the same accuracies, or None in both where too few maps were given.
        test = r["battery"].get("c2st") or {}
        for k, rep in (("c2st", "accuracy"), ("c2st_real_halves", "real_halves")):
            pairs[k] = ((b.get(k) or {}).get("mean"), (test.get(rep) or {}).get("mean"))
        for s_rec, s_rep in zip(b["statistics"], r["battery"]["statistics"]):
            pairs[f"battery {s_rep['statistic']} chi2"] = (
                (s_rec["statistic"], s_rec["chi2"], s_rec["real_halves"]),
                (s_rep["statistic"], s_rep["chi2"]["value"], s_rep["chi2_real_halves"]),
            )
        expect_eq(len(b["statistics"]), len(r["battery"]["statistics"]), "manifest validation statistics")
        for k, (got, want) in pairs.items():
            expect_eq(got, want, f"manifest validation record {k} vs report.json")
        st["report"] = r

    c(f"[{label}] report/{d}/report.json: parses; key numbers finite and equal to the manifest's validation record", report_check)

    def report_recomputed_check():
        r = st["report"]
        tr = st["norm"]["transform"]
        model = lambda x: 2 * (np.log10(x + tr["offset"]) - tr["lo"]) / (tr["hi"] - tr["lo"]) - 1  # noqa: E731
        real, syn = model(st["real"]), model(st["samples"])
        # Levels: each map's mean in model space; the ratio of the spreads.
        lr, ls = np.nanmean(real, axis=(1, 2)), np.nanmean(syn, axis=(1, 2))
        expect_close(r["level"]["real"]["values"], lr, "real levels", atol=1e-9)
        expect_close(r["level"]["synthetic"]["values"], ls, "synthetic levels", atol=1e-9)
        expect_close(r["level"]["ratio"], ls.std(ddof=1) / lr.std(ddof=1), "level spread ratio", rtol=1e-9)
        # Memorization: RMS distances in model space to the nearest real map, over the pixels
        # finite in both maps (blank pixels of the real maps are left out).
        def rms(a, b):
            both = np.isfinite(a) & np.isfinite(b)
            return np.sqrt(np.mean((a[both] - b[both]) ** 2)) if both.any() else np.nan
        real_nn = [min(rms(real[i], real[j]) for j in range(N_MAPS) if j != i) for i in range(N_MAPS)]
        syn_nn = [min(rms(s, x) for x in real) for s in syn]
        expect_close(r["memorization"]["real_nn"], real_nn, "real nearest-neighbour distances", rtol=1e-9)
        expect_close([x[1] for x in r["memorization"]["synthetic_nn"]], syn_nn, "synthetic nearest-real distances",
                     rtol=1e-9)
        expect_close(r["memorization"]["ratio"], min(syn_nn) / min(real_nn), "memorization ratio", rtol=1e-9)
        # Per-map slopes: mean, sample std, Welch's t.
        a, b = (np.array(r["slopes"][k]["values"]) for k in ("synthetic", "real"))
        expect_eq((len(a), len(b)), (COUNT, N_MAPS), "slope counts")
        for k, v in (("synthetic", a), ("real", b)):
            expect_close([r["slopes"][k]["mean"], r["slopes"][k]["std"]], [v.mean(), v.std(ddof=1)], f"{k} slope mean, std",
                         rtol=1e-9)
        welch = (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        expect_close(r["slopes"]["welch_t"], welch, "Welch t", rtol=1e-9)

    c(f"[{label}] report/{d}/report.json: levels, memorization, Welch t recomputed from the maps",
      report_recomputed_check)

    # -- manifest.json -------------------------------------------------------------------------
    def manifest_check():
        m = manifest()
        expect_eq(m["complete"], True, "complete")
        want = [f"ingest/{d}", f"invert/{d}", "fit", f"sample/{d}", f"decode/{d}", f"validate/{d}"]
        expect_eq(sorted(m["stages"]), sorted(want), "stages")
        expect_eq(m["seeds"].get("run"), SEED, "run seed")
        expect_eq(m["seeds"].get(f"sample/{d}"), sample_seed, "sample seed vs derive_seed")
        expect_eq(m["config_sha256"], sha256(p("config.toml")), "config_sha256 vs config.toml")
        recorded = set()
        for stage, rec in m["stages"].items():
            expect(rec["outputs"], f"{stage} records no outputs")
            for o in rec["outputs"]:
                path = p(o["path"])
                expect(os.path.isfile(path), f"{stage}: {o['path']} recorded but missing")
                expect_eq(os.path.getsize(path), o["bytes"], f"{stage}: {o['path']} bytes")
                expect_eq(sha256(path), o["sha256"], f"{stage}: {o['path']} SHA-256")
                recorded.add(os.path.normpath(o["path"]))
        for group in ("inputs", "model"):
            for o in m[group]:
                expect_eq(sha256(o["path"]), o["sha256"], f"{group}: {o['path']} SHA-256")
        written = {os.path.relpath(os.path.join(dp, f), run) for dp, _, fs in os.walk(run) for f in fs}
        unrecorded = sorted(written - recorded - {"config.toml", "manifest.json", "run.log", "summary.md"})
        expect(not unrecorded, f"files no stage records (left-over partial or temporary files?): {unrecorded}")

    c(f"[{label}] manifest.json: every stage, every output's size and SHA-256 (hashlib), inputs, model, config",
      manifest_check)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exe", default=os.environ.get("EXPANSE_EXE", os.path.join(ROOT, "target", "release", "expanse")),
                    help="the expanse binary (default: $EXPANSE_EXE, else target/release/expanse)")
    ap.add_argument("--blanks", action="store_true",
                    help="also run the small config on maps with blank (NaN) pixels")
    args = ap.parse_args()
    exe = os.path.abspath(args.exe)
    if not os.access(exe, os.X_OK):
        sys.exit(f"check_outputs: no expanse binary at {exe} (build it, or pass --exe / set EXPANSE_EXE)")
    start = time.time()
    c = Checks()
    expanse = Expanse(exe)
    print(f"checking the outputs of {exe} with numpy {np.__version__}, astropy {__import__('astropy').__version__}, "
          f"h5py {h5py.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="expanse-check-") as tmp:
        check_ingest(c, expanse, tmp)
        check_run(c, expanse, tmp, CLOUDS, "run")
        if args.blanks:
            check_run(c, expanse, tmp, write_blank_input(tmp), "run with blanks")
    print(f"check_outputs took {time.time() - start:.1f} s")
    print(f"check_outputs: {c.count - c.failures} passed, {c.failures} failed")
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
