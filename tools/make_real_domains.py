"""The fidelity benchmark's real third-party domains (data/samples/README.md lists them).

Copies maps from three public repositories into FITS files under data/samples, values unchanged
(float32), with their source, licence and reference in the header:

  * pywph (github bregaldo/pywph, BSD-3-Clause, commit 7356cfc): simulated dust emission of the
    diffuse interstellar medium from an MHD simulation, Stokes I and Q, 512 x 512, periodic
    (examples/data/I_1.npy, Q_1.npy, I_3.npy; Regaldo-Saint Blancard et al. 2021, A&A 649, L18);
  * wph_quijote (github Ttantto/wph_quijote, BSD-3-Clause, commit 2ada436): projected matter
    density of Quijote N-body simulations at z = 0, ln(rho/mean), 256 x 256
    (data/quijote_fiducial_log_256/<k>/df_z=0.npy; Allys et al. 2020, PRD 102, 103506;
    Villaescusa-Navarro et al. 2020, ApJS 250, 2);
  * jax-lensing (github CosmoStat/jax-lensing, MIT, commit 81da742): weak-lensing convergence
    maps of the kappaTNG simulations, 360 x 360 (data/ktng/ktng_kappa360v2.fits,
    ktng_cosmos_kappa360.fits; Osato, Liu & Haiman 2021, MNRAS 502, 5593).

The benchmark's development domains are I_1, Q_1 and Quijote maps 0-3; its held-out domains
(fixed before any default was changed) are I_3, Quijote maps 4-7 and the two kappaTNG maps.

The network of this project's machines reaches GitHub only through its mirror tool, so the
script takes a folder holding the source files under their upstream names (I_1.npy, I_3.npy,
Q_1.npy, quijote_<k>.npy for k = 0..7, ktng_kappa360v2.fits, ktng_cosmos_kappa360.fits), checks
each file's SHA-256 and writes the FITS files. To make that folder from clones:

    git clone https://github.com/bregaldo/pywph && git -C pywph checkout 7356cfc
    git clone https://github.com/Ttantto/wph_quijote && git -C wph_quijote checkout 2ada436
    git clone https://github.com/CosmoStat/jax-lensing && git -C jax-lensing checkout 81da742
    mkdir src && cp pywph/examples/data/{I_1,I_3,Q_1}.npy src/
    for k in 0 1 2 3 4 5 6 7; do cp "wph_quijote/data/quijote_fiducial_log_256/$k/df_z=0.npy" src/quijote_$k.npy; done
    cp jax-lensing/data/ktng/ktng_{kappa360v2,cosmos_kappa360}.fits src/

    python tools/make_real_domains.py src [--out data/samples] [--check]

Deterministic: no DATE or checksum cards, so two runs give identical files (--check).
"""

import argparse
import hashlib
import os
import sys
import tempfile

import numpy as np
from astropy.io import fits

SHA256 = {
    "I_1.npy": "362eaa1790238f778f769958fe2ae300f42581616aa9f9bfc269172fd4953584",
    "I_3.npy": "9ebac65545545403aadb57565e33e0680529f0469185ec34ffcf8ca38db1a9d8",
    "Q_1.npy": "e5b43fb22a140234bbecf3d1b2e7a6be694cd3c64ed7a347417d30fa163c6dda",
    "quijote_0.npy": "e85816e015dbe42d3fc96aac0be391e337a6bc6e532b468d340cd3a52cf877a7",
    "quijote_1.npy": "8e434f5985258cc9db57bdd7eda6d24d8b59eee9b98969ece5fa29b3a9b41eca",
    "quijote_2.npy": "e6bfee78f653985f76636f99a728421a9980bda800ee84abc47199ad61a94792",
    "quijote_3.npy": "c86e8997f995118053c5148043d5820af55a650ad79e693922d132661afa6756",
    "quijote_4.npy": "11076a1a28535e9e34b090989baf0bbf91230c0874966b7257053261f4ea565f",
    "quijote_5.npy": "c19d40c0462925aa3d7ba6b7a30622e193319a4b7fb19ecb6102c7ed5331e04e",
    "quijote_6.npy": "89be70c482456af89d3b4288ec979725b2acf734aa55918ae2f86da387a275eb",
    "quijote_7.npy": "932366dec59c7540dbda54f359213ee771f386bfa59387b87f167e6b19af15d0",
    "ktng_kappa360v2.fits": "4a71d2f19569c4b98159c247f0e50fad9a9aa7920dafc0554e28a9a37355ed24",
    "ktng_cosmos_kappa360.fits": "e4b94cf70527eebda60054168f0e0081cad7fb8e19a327eb95eb96d69746f0d2",
}

PYWPH = dict(
    ORIGIN=("github.com/bregaldo/pywph", "source repository"),
    SRCCOMMT=("7356cfc", "source commit"),
    LICENSE=("BSD-3-Clause, (c) 2021 B. Regaldo-Saint Blancard", ""),
    REFERENC=("Regaldo-Saint Blancard et al. 2021, A&A 649, L18", ""),
)
QUIJOTE = dict(
    ORIGIN=("github.com/Ttantto/wph_quijote", "source repository"),
    SRCCOMMT=("2ada436", "source commit"),
    LICENSE=("BSD-3-Clause, (c) 2020 Tanguy Marchand", ""),
    REFERENC=("Allys et al. 2020, PRD 102, 103506; Quijote: ApJS 250, 2", ""),
)
KTNG = dict(
    ORIGIN=("github.com/CosmoStat/jax-lensing", "source repository"),
    SRCCOMMT=("81da742", "source commit"),
    LICENSE=("MIT, (c) 2020 CosmoStat Laboratory", ""),
    REFERENC=("Osato, Liu & Haiman 2021, MNRAS 502, 5593 (kappaTNG)", ""),
)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(src, name):
    path = os.path.join(src, name)
    got = sha256(path)
    if got != SHA256[name]:
        raise SystemExit(f"{path}: SHA-256 {got} is not the upstream file's {SHA256[name]}")
    if name.endswith(".npy"):
        a = np.load(path)
    else:
        a = fits.getdata(path)
    return np.asarray(a, dtype=np.float32)


def write(path, data, obj, cards, files, history):
    hdu = fits.PrimaryHDU(np.ascontiguousarray(data))
    h = hdu.header
    h["OBJECT"] = obj
    for k, (v, c) in cards.items():
        h[k] = (v, c)
    for i, f in enumerate(files):
        h[f"SRCFILE{i + 1}"] = (f, f"plane {i + 1}" if data.ndim == 3 else "")
    for line in history:
        h.add_history(line)
    hdu.writeto(path, overwrite=True)


def build(src, out):
    os.makedirs(out, exist_ok=True)
    for name, obj, planes, comment in [
        ("mhd_dust_I1.fits", "MHD dust emission, Stokes I (I_1)", ["I_1.npy"], "development"),
        ("mhd_dust_Q1.fits", "MHD dust emission, Stokes Q (Q_1)", ["Q_1.npy"], "development"),
        ("mhd_dust_I3.fits", "MHD dust emission, Stokes I (I_3)", ["I_3.npy"], "held out"),
    ]:
        write(
            os.path.join(out, name),
            load(src, planes[0]),
            obj,
            PYWPH,
            [f"examples/data/{planes[0]}"],
            [
                "Simulated dust emission of the diffuse ISM (MHD simulation)",
                "as distributed with pywph (examples/data); values unchanged,",
                "units as distributed (arbitrary). Periodic 512x512 map.",
                "expanse fidelity benchmark, " + comment + " domain.",
            ],
        )
    for name, ks, comment in [("quijote_lnrho_dev.fits", range(0, 4), "development"),
                              ("quijote_lnrho_heldout.fits", range(4, 8), "held out")]:
        cube = np.stack([load(src, f"quijote_{k}.npy") for k in ks])
        write(
            os.path.join(out, name),
            cube,
            "Quijote projected matter density, z = 0",
            QUIJOTE,
            [f"data/quijote_fiducial_log_256/{k}/df_z=0.npy" for k in ks],
            [
                "ln(rho / mean rho) of projected Quijote N-body density fields",
                "at z = 0, fiducial cosmology (1000 Mpc/h box, 256x256 pixels);",
                "values unchanged (dimensionless). One map per plane.",
                "expanse fidelity benchmark, " + comment + " domain.",
            ],
        )
    cube = np.stack([load(src, f) for f in ["ktng_kappa360v2.fits", "ktng_cosmos_kappa360.fits"]])
    write(
        os.path.join(out, "kappa_tng.fits"),
        cube,
        "kappaTNG weak-lensing convergence",
        KTNG,
        ["data/ktng/ktng_kappa360v2.fits", "data/ktng/ktng_cosmos_kappa360.fits"],
        [
            "Weak-lensing convergence kappa (dimensionless) of the kappaTNG",
            "simulations (IllustrisTNG ray tracing), two independent 360x360",
            "maps; values unchanged. expanse fidelity benchmark, held-out domain.",
        ],
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="folder with the upstream files (see the module docstring)")
    ap.add_argument("--out", default="data/samples")
    ap.add_argument("--check", action="store_true", help="build twice into temporary folders and compare")
    a = ap.parse_args()
    if a.check:
        with tempfile.TemporaryDirectory() as t:
            build(a.src, os.path.join(t, "a"))
            build(a.src, os.path.join(t, "b"))
            bad = [f for f in sorted(os.listdir(os.path.join(t, "a")))
                   if sha256(os.path.join(t, "a", f)) != sha256(os.path.join(t, "b", f))]
            print("reproducible" if not bad else f"differ: {bad}")
            return 1 if bad else 0
    build(a.src, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
