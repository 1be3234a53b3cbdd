#!/usr/bin/env python3
"""Make the fidelity benchmark's out-of-project domains with simulators this project did not
write: powerbox (Murray 2018, https://github.com/steven-murray/powerbox) and TurbuStat's
`make_extended` (Koch et al. 2019).

In the TurbuStat venv of tools/requirements-turbustat.txt (which has powerbox), made from the
repository root with

    python3 -m venv .venv-turbustat
    .venv-turbustat/bin/pip install setuptools==65.5.0 wheel==0.42.0 numpy==1.26.4
    .venv-turbustat/bin/pip install --no-build-isolation --no-deps -r tools/requirements-turbustat.txt

run (from anywhere; OUT_DIR defaults to this repository's data/samples):

    .venv-turbustat/bin/python tools/make_benchmark_domains.py [--heldout] [OUT_DIR]

Writes float32 FITS cubes (one 64x64 map per plane, BUNIT set, every parameter in header cards
and HISTORY) into OUT_DIR (default data/samples):

  powerbox_lognormal_64.fits  24 log-normal density fields, 1 + delta with P_delta(k) ~ k^-2
                              (flatter than the shipped clouds, per-map mean free to vary);
                              BUNIT = 'cm-3' (a density contrast times 100 cm^-3).
  turbustat_aniso_64.fits     24 Gaussian brightness-temperature cut-outs T = 20 K + 4 K * g:
                              two 256x256 make_extended fields with P(k) ~ k^-4 and an
                              elliptical spectrum (axis ratio 0.5, position angle 45 deg), each
                              cut into 16 tiles of 64x64 (the first 24 tiles kept), g scaled by
                              the standard deviation of all tiles together, so that tiles keep
                              their own mean levels and non-periodic edges, as cut-outs of a
                              survey do: smooth, anisotropic, linear (no logarithm); BUNIT = 'K'.

With --heldout it writes instead the held-out sets that the benchmark's defaults were never
chosen on (used once, to check that the chosen defaults carry over):

  heldout_powerbox_gauss_64.fits   24 Gaussian cut-outs (two 256x256 boxes, 16 tiles each),
                                   P(k) ~ k^-1.5, 50 + 10 g mJy/beam.
  heldout_turbustat_exp_64.fits    24 cut-outs exp(1.5 g) of two 256x256 make_extended fields
                                   with P ~ k^-3.3, isotropic, high contrast; BUNIT = 'MJy/sr'.

Deterministic: fixed seeds, no DATE cards; running twice gives byte-identical files.
"""

import argparse
import os

import numpy as np
from astropy.io import fits
import powerbox
import turbustat
from turbustat.simulator import make_extended

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, os.pardir, "data", "samples"))
COUNT = 24
SIZE = 64


def standardize(g):
    return (g - g.mean()) / g.std()


def tiles(fields):
    """The first COUNT 64x64 tiles of 256x256 fields, row by row, scaled together to unit
    standard deviation (each tile keeps its own mean)."""
    cut = [f[y:y + SIZE, x:x + SIZE] for f in fields for y in range(0, 256, SIZE) for x in range(0, 256, SIZE)][:COUNT]
    cube = np.array(cut)
    return cube / np.array(fields).std()


def write(path, cube, bunit, obj, cards, history):
    hdu = fits.PrimaryHDU(cube.astype(np.float32))
    h = hdu.header
    h["BUNIT"] = (bunit, "physical units of the pixel values")
    h["OBJECT"] = (obj, "")
    h["ORIGIN"] = ("tools/make_benchmark_domains.py", "")
    for k, v, c in cards:
        h[k] = (v, c)
    for line in history:
        h.add_history(line)
    hdu.writeto(path, overwrite=True)
    print(f"{path}: {cube.shape}, min {cube.min():.4g}, max {cube.max():.4g}, {bunit}")


def powerbox_lognormal(out):
    maps = []
    for i in range(COUNT):
        pb = powerbox.LogNormalPowerBox(N=SIZE, dim=2, pk=lambda k: 0.1 * k**-2.0, boxlength=1.0, seed=1000 + i)
        maps.append(100.0 * (1.0 + pb.delta_x()))
    cube = np.array(maps)
    write(
        os.path.join(out, "powerbox_lognormal_64.fits"), cube, "cm-3", "powerbox log-normal density fields",
        [("SIMCODE", "powerbox " + powerbox.__version__, "simulator"), ("SIMPK", "0.1*k**-2", "P_delta(k), boxlength 1"),
         ("SIMSEED0", 1000, "seed of plane 1; plane i uses SIMSEED0 + i - 1")],
        ["n = 100 cm-3 * (1 + delta), delta = powerbox.LogNormalPowerBox(N=64, dim=2, pk=0.1 k^-2, boxlength=1).delta_x()"],
    )


def turbustat_aniso(out):
    fields = [make_extended(256, powerlaw=4.0, ellip=0.5, theta=np.pi / 4, randomseed=2000 + i) for i in range(2)]
    cube = 20.0 + 4.0 * tiles(fields)
    write(
        os.path.join(out, "turbustat_aniso_64.fits"), cube, "K", "TurbuStat make_extended anisotropic fields",
        [("SIMCODE", "turbustat " + turbustat.__version__, "simulator"), ("SIMBETA", 4.0, "power-law index of P(k)"),
         ("SIMELLIP", 0.5, "axis ratio of the elliptical spectrum"), ("SIMTHETA", 45.0, "[deg] position angle"),
         ("SIMSEED0", 2000, "seeds of the two fields: SIMSEED0, SIMSEED0+1")],
        ["T = 20 K + 4 K * g: g = make_extended(256, powerlaw=4, ellip=0.5, theta=pi/4), two fields,",
         "cut into 64x64 tiles row by row (first 24 kept), divided by the std of both fields"],
    )


def heldout(out):
    fields = [powerbox.PowerBox(N=256, dim=2, pk=lambda k: k**-1.5, boxlength=4.0, seed=3000 + i).delta_x() for i in range(2)]
    write(
        os.path.join(out, "heldout_powerbox_gauss_64.fits"), 50.0 + 10.0 * tiles(fields), "mJy/beam", "powerbox Gaussian cut-outs (held out)",
        [("SIMCODE", "powerbox " + powerbox.__version__, "simulator"), ("SIMPK", "k**-1.5", "P(k), boxlength 4"), ("SIMSEED0", 3000, "")],
        ["S = 50 + 10 g mJy/beam, g = powerbox.PowerBox(N=256, dim=2, pk=k^-1.5).delta_x(), two boxes, 64x64 tiles"],
    )
    fields = [make_extended(256, powerlaw=3.3, randomseed=4000 + i) for i in range(2)]
    write(
        os.path.join(out, "heldout_turbustat_exp_64.fits"), np.exp(1.5 * tiles(fields)), "MJy/sr", "exponentiated make_extended cut-outs (held out)",
        [("SIMCODE", "turbustat " + turbustat.__version__, "simulator"), ("SIMBETA", 3.3, ""), ("SIMSEED0", 4000, "")],
        ["I = exp(1.5 g) MJy/sr, g = make_extended(256, powerlaw=3.3), two fields, 64x64 tiles"],
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=DEFAULT_OUT)
    ap.add_argument("--heldout", action="store_true", help="write the held-out sets instead")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.heldout:
        heldout(a.out)
    else:
        powerbox_lognormal(a.out)
        turbustat_aniso(a.out)


if __name__ == "__main__":
    main()
