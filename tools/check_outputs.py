#!/usr/bin/env python3
"""Open what expanse writes with astropy, h5py and numpy, and check it equals what expanse read.

    cargo build --release && python3 tools/check_outputs.py

Writes into a temporary folder; prints one line per check and exits non-zero on a mismatch.
"""

import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from astropy.io import fits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "expanse")


def run(*args):
    subprocess.run([EXE, *args], check=True, capture_output=True)


def main():
    src = os.path.join(ROOT, "data", "samples", "clouds_64.fits")
    want = fits.getdata(src).astype(np.float32)
    nan_src = os.path.join(ROOT, "tests", "fixtures", "io", "fits_nan_f32.fits")
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        for ext in ("fits", "h5", "npy"):
            out = os.path.join(d, f"raw.{ext}")
            run("ingest", src, "--raw", "--out", out)
            if ext == "fits":
                with fits.open(out) as h:
                    got, hdr = h[0].data, h[0].header
                    ok = np.array_equal(got, want) and hdr["BUNIT"] == "cm-2" and "EXPPROV" in hdr
                    json.loads(hdr["EXPPROV"])
            elif ext == "h5":
                with h5py.File(out) as f:
                    got = f["maps"][...]
                    ok = np.array_equal(got, want) and f["maps"].attrs["units"] == "cm-2"
                    json.loads(f.attrs["provenance"])
            else:
                got = np.load(out)
                side = json.load(open(out + ".json"))
                ok = np.array_equal(got, want) and side["units"] == "cm-2"
            print(f"raw {ext}: {'ok' if ok else 'MISMATCH'}")
            failures += not ok
            out = os.path.join(d, f"norm.{ext}")
            run("ingest", nan_src, "--transform", "asinh", "--out", out)
            if ext == "fits":
                with fits.open(out) as h:
                    data, mask = h[0].data, h["MASK"].data
            elif ext == "h5":
                with h5py.File(out) as f:
                    data, mask = f["maps"][...], f["mask"][...]
            else:
                data, mask = np.load(out), np.load(out[:-4] + ".mask.npy")
            blanks = np.isnan(fits.getdata(nan_src))
            ok = data.shape == (1, 1, 12, 16) and np.array_equal(mask[0].astype(bool), blanks) and np.isfinite(data).all()
            print(f"normalized {ext} with mask: {'ok' if ok else 'MISMATCH'}")
            failures += not ok
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
