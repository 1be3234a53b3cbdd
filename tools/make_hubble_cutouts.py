#!/usr/bin/env python3
"""Cut 32 non-overlapping 64x64 luminance cut-outs from the Hubble eXtreme
Deep Field JPEG and write them as one float32 FITS cube.

    python3 tools/make_hubble_cutouts.py [SOURCE_JPEG] [OUT_DIR]

(from the repository root, with numpy, astropy and Pillow: e.g. in a venv made
from tools/requirements-turbustat.txt.)

Defaults: SOURCE_JPEG = data/samples/hubble_deep_field.jpg, the copy this
repository ships (the NASA image of scikit-image's data bundle; source, SHA-256
and credit in data/samples/README.md), OUT_DIR = data/samples. Both are taken
relative to the repository root, wherever the script is run from.

Writes OUT_DIR/hubble_xdf_64.fits and a copy of the source JPEG,
OUT_DIR/hubble_deep_field.jpg (nothing to copy when the source is already
there, as with the defaults).

Method (every step is recorded as HISTORY in the FITS header):
1. Decode the JPEG with Pillow to 8-bit RGB.
2. Luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601), computed in float64
   and stored as float32 in JPEG data numbers (DN, 0-255).
3. Split the image into a regular grid of 64x64 cells starting at the top-left
   pixel (cells that would cross the right or bottom edge are dropped), pick
   32 distinct cells with numpy.random.default_rng(SEED).choice, and keep them
   in raster order (top-to-bottom, left-to-right). Distinct grid cells never
   overlap.
4. Each cut-out is flipped top-to-bottom before it is stored, so that FITS
   viewers (which draw the first row at the bottom) show it the same way up as
   the JPEG. Corner positions in the header are 0-based (x, y) = (column, row)
   of the cut-out's top-left pixel in the JPEG, with y counted from the top.

The output is deterministic for a given source file and Pillow/libjpeg build:
no DATE card, no checksum, fixed seed.
"""

import hashlib
import os
import shutil
import sys

import numpy as np
from astropy.io import fits
from PIL import Image

SEED = 20240917
SIZE = 64
COUNT = 32
HERE = os.path.dirname(os.path.abspath(__file__))
FITS_NAME = "hubble_xdf_64.fits"
JPEG_NAME = "hubble_deep_field.jpg"
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, os.pardir, "data", "samples"))
DEFAULT_SRC = os.path.join(DEFAULT_OUT, JPEG_NAME)


def luma(path):
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return y.astype(np.float32)


def pick_cells(height, width):
    ny, nx = height // SIZE, width // SIZE
    rng = np.random.default_rng(SEED)
    cells = np.sort(rng.choice(ny * nx, size=COUNT, replace=False))
    # (x0, y0) = top-left corner in JPEG pixels, y from the top
    return [(int(c % nx) * SIZE, int(c // nx) * SIZE) for c in cells], ny, nx


def build(src, out):
    os.makedirs(out, exist_ok=True)
    y = luma(src)
    height, width = y.shape
    corners, ny, nx = pick_cells(height, width)
    cube = np.empty((COUNT, SIZE, SIZE), dtype=np.float32)
    for i, (x0, y0) in enumerate(corners):
        cube[i] = np.flipud(y[y0:y0 + SIZE, x0:x0 + SIZE])

    with open(src, "rb") as fh:
        src_sha = hashlib.sha256(fh.read()).hexdigest()

    hdu = fits.PrimaryHDU(cube)
    h = hdu.header
    h["BUNIT"] = ("DN", "8-bit JPEG data numbers (luma, 0-255)")
    h["OBJECT"] = ("Hubble eXtreme Deep Field", "")
    h["TELESCOP"] = ("HST", "source image: NASA/ESA Hubble Space Telescope")
    h["ORIGIN"] = ("expanse tools/make_hubble_cutouts.py", "")
    h["CUTSIZE"] = (SIZE, "[pixel] side of each square cut-out")
    h["NCUTOUT"] = (COUNT, "number of cut-outs (planes, NAXIS3)")
    h["CUTSEED"] = (SEED, "numpy default_rng seed used to pick grid cells")
    h["CUTGRIDX"] = (nx, "grid cells across the source image")
    h["CUTGRIDY"] = (ny, "grid cells down the source image")
    h["SRCWIDTH"] = (width, "[pixel] source JPEG width")
    h["SRCHEIGH"] = (height, "[pixel] source JPEG height")
    h["SRCFILE"] = (JPEG_NAME, "source image file name")
    h["ROWORDER"] = ("FLIPPED", "rows flipped: FITS row 1 = bottom of cut-out")
    lines = [
        f"Source: {JPEG_NAME}, NASA Hubble eXtreme Deep Field,",
        "public domain, via the scikit-image data bundle.",
        "Source SHA-256:",
        src_sha,
        "Step 1: decoded to 8-bit RGB with Pillow.",
        "Step 2: luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601),",
        "computed in float64, stored as float32 DN (0-255).",
        f"Step 3: {nx}x{ny} grid of {SIZE}x{SIZE} cells from the top-left pixel;",
        f"{COUNT} distinct cells picked with numpy default_rng({SEED}).choice,",
        "kept in raster order; distinct cells do not overlap.",
        "Step 4: each cut-out flipped top-to-bottom so FITS viewers show",
        "it the same way up as the JPEG.",
        "Corners: plane k (1-based) x0,y0 = 0-based column,row of the",
        "cut-out's top-left pixel in the JPEG, y counted from the top.",
    ] + [f"CUTOUT {i + 1:2d} x0={x0:4d} y0={y0:4d}" for i, (x0, y0) in enumerate(corners)]
    for line in lines:
        assert len(line) <= 72, line  # one HISTORY card each, never wrapped
        h.add_history(line)
    assert len(h["HISTORY"]) == len(lines)

    fits.HDUList([hdu]).writeto(os.path.join(out, FITS_NAME), output_verify="exception",
                                overwrite=True)
    dst = os.path.join(out, JPEG_NAME)
    if os.path.abspath(dst) != os.path.abspath(src):
        shutil.copyfile(src, dst)
    return corners


def main(argv):
    if len(argv) > 3 or argv[1:2] in (["-h"], ["--help"]):
        print(f"usage: {argv[0]} [SOURCE_JPEG] [OUT_DIR]   (defaults: {DEFAULT_SRC}, {DEFAULT_OUT})",
              file=sys.stderr)
        return 2
    src = argv[1] if len(argv) > 1 else DEFAULT_SRC
    out = argv[2] if len(argv) > 2 else DEFAULT_OUT
    if not os.path.isfile(src):
        print(f"{argv[0]}: no source JPEG at {src} (the Hubble XDF image; data/samples/README.md "
              "says where it comes from)", file=sys.stderr)
        return 2
    corners = build(src, out)
    path = os.path.join(out, FITS_NAME)
    with open(path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(corners)} cut-outs, sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
