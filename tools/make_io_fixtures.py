#!/usr/bin/env python3
"""Write the small reader parity fixtures in tests/fixtures/io/.

Each case is a tiny FITS / HDF5 / NPY file plus `<case>.expected.npy`: a
float64 array of shape (N, H, W) that holds exactly what the reference
library (astropy.io.fits / h5py / numpy) returns for it. `manifest.json`
lists every case; the Rust tests read only the manifest, the input files
and the expected arrays, so they run without Python.

Run from anywhere:  python3 tools/make_io_fixtures.py [OUT_DIR]
Reproducibility:    python3 tools/make_io_fixtures.py --check
Read-back check:    python3 tools/make_io_fixtures.py --verify [DIR]
(python3 with numpy, astropy and h5py: a venv made from tools/requirements-check.txt, whose
versions reproduce the committed files.)

The output is deterministic: fixed RNG seed, no DATE / CHECKSUM cards, HDF5
objects without timestamps, and every file is rewritten from scratch. Running
it twice gives byte-identical files (checked with --check, which writes twice
into temporary folders and compares SHA-256 sums).

Value conventions that the Rust tests can rely on:
* Integer pixel values (raw and physical) are chosen exactly representable
  in float32, so an f32 map can be compared to the f64 expectation exactly.
  Float64 images are not (compare those with a relative tolerance ~1e-7).
* NaN in an expected array means a blank pixel (NaN in a float image, or a
  raw integer equal to BLANK in an integer FITS image).
* Cases with a non-null "error" that the reference library can still read
  (all_nan, constant) keep their expected array; the others have
  "expected": null, "n_maps": 0 and "shape": null.
"""

import functools
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings

import h5py
import numpy as np
from astropy.io import fits
from astropy.io.fits.hdu.compressed import _codecs as _fits_codecs

# astropy compresses GZIP_1 / GZIP_2 tiles with Python's gzip.compress, which
# stamps the current time into each tile's gzip header (MTIME). Pin it to 0 so
# the compressed files are reproducible. The data stream is unchanged.
_fits_codecs.gzip_compress = functools.partial(gzip.compress, mtime=0)

SEED = 20240917
H, W = 12, 16  # rows, columns of the FITS test images (numpy shape (12, 16))
# Smaller, differently shaped maps for HDF5 and NPY (keeps the folder small
# and catches readers that assume one shape): HDF5 is wide, NPY is tall.
H5_H, H5_W = 6, 9
NPY_H, NPY_W = 8, 5

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "tests", "fixtures", "io")

WCS_CARDS = [
    ("CTYPE1", "RA---TAN", "gnomonic projection, right ascension"),
    ("CTYPE2", "DEC--TAN", "gnomonic projection, declination"),
    ("CRPIX1", 8.5, "reference pixel, axis 1"),
    ("CRPIX2", 6.5, "reference pixel, axis 2"),
    ("CRVAL1", 53.1625, "[deg] RA at reference pixel"),
    ("CRVAL2", -27.7914, "[deg] Dec at reference pixel"),
    ("CDELT1", -1.5e-05, "[deg] pixel step, axis 1"),
    ("CDELT2", 1.5e-05, "[deg] pixel step, axis 2"),
    ("CUNIT1", "deg", ""),
    ("CUNIT2", "deg", ""),
    ("RADESYS", "ICRS", ""),
]
# Header values the tests check for every FITS image that carries the WCS.
WCS_CHECK = ["CTYPE1", "CTYPE2", "CRPIX1", "CRVAL1", "CDELT1", "CUNIT1"]


class Builder:
    def __init__(self, out):
        self.out = out
        self.rng = np.random.default_rng(SEED)
        self.cases = []

    # ------------------------------------------------------------------ util
    def path(self, name):
        return os.path.join(self.out, name)

    def add(self, case, file, fmt, select=None, expected=None, units=None,
            cards=None, attrs=None, error=None):
        """Record a case. `expected` is a float64 array (N,H,W) or None."""
        entry = {
            "case": case,
            "file": file,
            "format": fmt,
            "select": select,
            "expected": None,
            "n_maps": 0,
            "shape": None,
            "units": units,
            "cards": cards or {},
            "attrs": attrs or {},
            "error": error,
        }
        if expected is not None:
            expected = np.asarray(expected, dtype="<f8")
            if expected.ndim == 2:
                expected = expected[np.newaxis]
            assert expected.ndim == 3, (case, expected.shape)
            name = f"{case}.expected.npy"
            np.save(self.path(name), np.ascontiguousarray(expected))
            entry["expected"] = name
            entry["n_maps"] = int(expected.shape[0])
            entry["shape"] = [int(expected.shape[1]), int(expected.shape[2])]
        assert all(c["case"] != case for c in self.cases), case
        self.cases.append(entry)

    @staticmethod
    def header(obj, bunit, wcs=True):
        hdr = fits.Header()
        if obj is not None:
            hdr["OBJECT"] = (obj, "test object")
        if bunit is not None:
            hdr["BUNIT"] = (bunit, "physical unit of the pixel values")
        if wcs:
            for k, v, c in WCS_CARDS:
                hdr[k] = (v, c)
        return hdr

    @staticmethod
    def cards_of(hdr, keys):
        out = {}
        for k in keys:
            v = hdr[k]
            if isinstance(v, (bool, np.bool_)):
                v = bool(v)
            elif isinstance(v, (int, np.integer)):
                v = int(v)
            elif isinstance(v, (float, np.floating)):
                v = float(v)
            else:
                v = str(v)
            out[k] = v
        return out

    def write_fits(self, name, hdus):
        hdul = fits.HDUList(hdus)
        hdul.writeto(self.path(name), output_verify="exception", overwrite=True)
        hdul.close()

    def fits_expected(self, name, index):
        """What astropy returns (default scaling) as float64, with raw==BLANK
        pixels of integer images set to NaN."""
        with fits.open(self.path(name)) as f:
            hdu = f[index]
            data = np.array(hdu.data, dtype="f8")
            hdr = hdu.header
            blank = hdr.get("BLANK") if hdr["BITPIX"] > 0 else None
            is_comp = isinstance(hdu, fits.CompImageHDU)
        if blank is not None and not is_comp:
            with fits.open(self.path(name), do_not_scale_image_data=True) as f:
                raw = np.array(f[index].data)
            data[raw == blank] = np.nan
        return data

    def fits_case(self, case, name, index, select=None, keys=("OBJECT",) + tuple(WCS_CHECK),
                  error=None):
        with fits.open(self.path(name)) as f:
            hdr = f[index].header
            units = hdr.get("BUNIT")
            cards = self.cards_of(hdr, [k for k in keys if k in hdr])
        self.add(case, name, "fits", select=select,
                 expected=self.fits_expected(name, index), units=units,
                 cards=cards, error=error)

    # ----------------------------------------------------------------- FITS
    def fits_plain(self):
        rng = self.rng
        # bitpix 8: full 0..255 range
        u8 = rng.integers(0, 256, size=(H, W), dtype=np.uint8)
        u8[0, 0], u8[0, 1] = 0, 255
        # bitpix 16: full signed range
        i16 = rng.integers(-32768, 32768, size=(H, W), dtype=np.int16)
        i16[0, 0], i16[0, 1] = -32768, 32767
        # bitpix 32: |v| < 2^24 plus a few large values that stay f32-exact
        i32 = rng.integers(-(2**23), 2**23, size=(H, W)).astype(np.int32)
        i32[0, 0], i32[0, 1], i32[0, 2] = -(2**31), 2**30 + 2**8 * 12345, -(2**29) - 2**6
        # bitpix 64: a*2^33 + b*2^20 spans 24 bits -> exact in f32, uses both words
        a = rng.integers(-1000, 1000, size=(H, W))
        b = rng.integers(0, 4096, size=(H, W))
        i64 = (a * 2**33 + b * 2**20).astype(np.int64)
        f32 = (rng.normal(0.0, 1.0, size=(H, W)) * 1.0e-3).astype(np.float32)
        f32[0, 0], f32[0, 1] = np.float32(3.4e38), np.float32(-1.0e-30)
        f64 = rng.normal(1.0e4, 2.5e3, size=(H, W)).astype(np.float64)
        f64[0, 0] = 1.0e300
        plain = [
            ("fits_bitpix8", u8, "adu"),
            ("fits_bitpix16", i16, "adu"),
            ("fits_bitpix32", i32, "count"),
            ("fits_bitpix64", i64, "count"),
            ("fits_bitpix_m32", f32, "Jy/beam"),
            ("fits_bitpix_m64", f64, "K"),
        ]
        for case, data, unit in plain:
            name = case + ".fits"
            self.write_fits(name, [fits.PrimaryHDU(data, header=self.header(case, unit))])
            self.fits_case(case, name, 0, keys=("OBJECT", "BITPIX") + tuple(WCS_CHECK))

        # int16 with BSCALE=0.5, BZERO=100 written through astropy's scale()
        raw = rng.integers(-32768, 32768, size=(H, W)).astype(np.int16)
        phys = raw.astype(np.float64) * 0.5 + 100.0
        hdu = fits.PrimaryHDU(phys.astype(np.float32), header=self.header("scaled int16", "mJy"))
        hdu.scale("int16", bscale=0.5, bzero=100)
        self.write_fits("fits_scaled_i16.fits", [hdu])
        self.fits_case("fits_scaled_i16", "fits_scaled_i16.fits", 0,
                       keys=("OBJECT", "BITPIX", "BSCALE", "BZERO") + tuple(WCS_CHECK))

        # int16 with BLANK=-32768, BSCALE=2, BZERO=-10 (raw ints, keywords set)
        raw = rng.integers(-32767, 32768, size=(H, W)).astype(np.int16)
        raw[[0, 3, 7, 11], [0, 5, 9, 15]] = -32768
        hdr = self.header("blank int16", "erg/s/cm2")
        hdu = fits.PrimaryHDU(raw, header=hdr)
        hdu.header["BSCALE"] = 2.0
        hdu.header["BZERO"] = -10.0
        hdu.header["BLANK"] = -32768
        self.write_fits("fits_blank_i16.fits", [hdu])
        self.fits_case("fits_blank_i16", "fits_blank_i16.fits", 0,
                       keys=("OBJECT", "BSCALE", "BZERO", "BLANK") + tuple(WCS_CHECK))

        # int32 with BLANK and no scaling: astropy returns the raw ints; we
        # expect NaN where raw == BLANK
        raw = rng.integers(-(2**23), 2**23, size=(H, W)).astype(np.int32)
        raw[[1, 2, 10], [1, 14, 3]] = -999
        hdu = fits.PrimaryHDU(raw, header=self.header("blank int32", "count"))
        hdu.header["BLANK"] = -999
        self.write_fits("fits_blank_i32.fits", [hdu])
        self.fits_case("fits_blank_i32", "fits_blank_i32.fits", 0,
                       keys=("OBJECT", "BLANK") + tuple(WCS_CHECK))

        # uint16: astropy writes BITPIX=16, BZERO=32768, BSCALE=1
        u16 = rng.integers(0, 65536, size=(H, W)).astype(np.uint16)
        u16[0, 0], u16[0, 1], u16[0, 2], u16[0, 3] = 0, 32767, 32768, 65535
        self.write_fits("fits_uint16.fits",
                        [fits.PrimaryHDU(u16, header=self.header("uint16", "adu"))])
        self.fits_case("fits_uint16", "fits_uint16.fits", 0,
                       keys=("OBJECT", "BITPIX", "BZERO", "BSCALE") + tuple(WCS_CHECK))

        # uint8 with BSCALE=0.25, BZERO=-5
        raw = rng.integers(0, 256, size=(H, W)).astype(np.uint8)
        hdu = fits.PrimaryHDU(raw, header=self.header("scaled uint8", "mag"))
        hdu.header["BSCALE"] = 0.25
        hdu.header["BZERO"] = -5.0
        self.write_fits("fits_scaled_u8.fits", [hdu])
        self.fits_case("fits_scaled_u8", "fits_scaled_u8.fits", 0,
                       keys=("OBJECT", "BITPIX", "BSCALE", "BZERO") + tuple(WCS_CHECK))

        # float32 with NaNs
        f = rng.normal(5.0, 1.0, size=(H, W)).astype(np.float32)
        f[2, 3] = f[5, 0] = f[11, 15] = f[6, 6] = np.nan
        self.write_fits("fits_nan_f32.fits",
                        [fits.PrimaryHDU(f, header=self.header("nan float32", "Jy/beam"))])
        self.fits_case("fits_nan_f32", "fits_nan_f32.fits", 0)

        # 3-D cube, 3 planes of float32; each plane is one map
        cube = rng.normal(0.0, 1.0, size=(3, H, W)).astype(np.float32)
        cube += np.arange(3, dtype=np.float32)[:, None, None] * 10.0
        hdr = self.header("cube float32", "K")
        hdr["CTYPE3"] = ("FREQ", "")
        hdr["CRPIX3"] = 1.0
        hdr["CRVAL3"] = 1.0e11
        hdr["CDELT3"] = 1.0e9
        hdr["CUNIT3"] = "Hz"
        self.write_fits("fits_cube_f32.fits", [fits.PrimaryHDU(cube, header=hdr)])
        self.fits_case("fits_cube_f32", "fits_cube_f32.fits", 0,
                       keys=("OBJECT", "NAXIS", "NAXIS3", "CTYPE3") + tuple(WCS_CHECK))


    def fits_mef(self):
        rng = self.rng
        name = "fits_mef.fits"
        sci = rng.normal(100.0, 10.0, size=(H, W)).astype(np.float32)
        err = rng.integers(0, 500, size=(H, W)).astype(np.int16)
        sci2 = rng.normal(0.0, 1.0, size=(3, 10, 14)).astype(np.float32)
        sci2 += np.array([1.0, 2.0, 3.0], dtype=np.float32)[:, None, None] * 100.0
        primary = fits.PrimaryHDU(header=self.header("MEF primary", None, wcs=False))
        h_sci = fits.ImageHDU(sci, header=self.header("MEF science", "electron/s"), name="SCI")
        h_err = fits.ImageHDU(err, header=self.header("MEF error", "electron/s"), name="ERR")
        table = fits.BinTableHDU.from_columns(
            [fits.Column(name="ID", format="J", array=np.arange(5, dtype=np.int32)),
             fits.Column(name="FLUX", format="E", array=np.linspace(0, 1, 5, dtype=np.float32))],
            name="CATALOG")
        h_sci2 = fits.ImageHDU(sci2, header=self.header("MEF cube", "Jy"), name="SCI2")
        self.write_fits(name, [primary, h_sci, h_err, table, h_sci2])
        keys = ("OBJECT", "EXTNAME") + tuple(WCS_CHECK)
        self.fits_case("fits_mef_default", name, 1, select=None, keys=keys)
        self.fits_case("fits_mef_index1", name, 1, select={"hdu": 1}, keys=keys)
        self.fits_case("fits_mef_name_sci", name, "SCI", select={"hdu": "SCI"}, keys=keys)
        self.fits_case("fits_mef_name_sci_lower", name, "sci", select={"hdu": "sci"}, keys=keys)
        self.fits_case("fits_mef_name_err", name, "ERR", select={"hdu": "ERR"}, keys=keys)
        self.fits_case("fits_mef_index4_cube", name, 4, select={"hdu": 4}, keys=keys)
        self.fits_case("fits_mef_name_sci2_cube", name, "SCI2", select={"hdu": "SCI2"}, keys=keys)
        self.add("fits_mef_bad_name", name, "fits", select={"hdu": "NOPE"}, error="unknown_hdu")
        self.add("fits_mef_bad_index", name, "fits", select={"hdu": 9}, error="unknown_hdu")
        self.add("fits_mef_table", name, "fits", select={"hdu": 3}, error="table_hdu")
        self.add("fits_mef_table_by_name", name, "fits", select={"hdu": "CATALOG"},
                 error="table_hdu")

    def fits_compressed(self):
        rng = self.rng
        i32 = rng.integers(-(2**20), 2**20, size=(H, W)).astype(np.int32)
        f32 = (rng.normal(50.0, 5.0, size=(H, W))).astype(np.float32)
        f32b = (rng.normal(-3.0, 2.0, size=(H, W))).astype(np.float32)
        f32d = (rng.normal(7.0, 3.0, size=(H, W))).astype(np.float32)
        i32h = rng.integers(-50000, 50000, size=(H, W)).astype(np.int32)
        specs = [
            # case, data, kwargs
            ("fits_comp_rice_i32", i32, dict(compression_type="RICE_1")),
            # lossy: quantized to ints with ZSCALE/ZZERO per tile, no dithering
            ("fits_comp_rice_f32", f32, dict(compression_type="RICE_1", quantize_level=16.0,
                                             quantize_method=-1)),
            # lossy with SUBTRACTIVE_DITHER_1 (the fpack / cfitsio default),
            # fixed seed so the file is reproducible
            ("fits_comp_rice_f32_dither1", f32d,
             dict(compression_type="RICE_1", quantize_level=16.0, quantize_method=1,
                  dither_seed=1234)),
            # lossless: quantize_level=0 stores the float bytes gzipped
            ("fits_comp_gzip_f32", f32b, dict(compression_type="GZIP_1", quantize_level=0.0)),
            # HCOMPRESS on integers with scale 0 is lossless; tile = whole image
            ("fits_comp_hcompress_i32", i32h,
             dict(compression_type="HCOMPRESS_1", hcomp_scale=0, tile_shape=(H, W))),
        ]
        for case, data, kw in specs:
            name = case + ".fits"
            # only the first one carries the WCS (keeps the others to one
            # header block: the Z* cards already fill most of it)
            wcs = case == "fits_comp_rice_i32"
            hdr = self.header(case, "adu" if data.dtype.kind == "i" else "Jy/beam", wcs=wcs)
            hdu = fits.CompImageHDU(data, header=hdr, name="SCI", **kw)
            self.write_fits(name, [fits.PrimaryHDU(), hdu])
            keys = ("OBJECT", "EXTNAME") + (tuple(WCS_CHECK) if wcs else ())
            self.fits_case(case, name, 1, keys=keys)
        # one compressed file selected by EXTNAME (EXTNAME lives in the
        # BINTABLE header of the compressed HDU)
        self.fits_case("fits_comp_rice_i32_by_name", "fits_comp_rice_i32.fits", "SCI",
                       select={"hdu": "SCI"}, keys=("OBJECT", "EXTNAME"))

    def fits_bad(self):
        rng = self.rng
        f = rng.normal(0.0, 1.0, size=(H, W)).astype(np.float32)
        self.write_fits("tmp_trunc_src.fits",
                        [fits.PrimaryHDU(f, header=self.header("to be truncated", "Jy"))])
        with open(self.path("tmp_trunc_src.fits"), "rb") as fh:
            full = fh.read()
        os.remove(self.path("tmp_trunc_src.fits"))
        assert len(full) == 2 * 2880, len(full)
        data_len = H * W * 4
        with open(self.path("bad_truncated_data.fits"), "wb") as fh:
            fh.write(full[: 2880 + data_len // 2])
        self.add("fits_bad_truncated_data", "bad_truncated_data.fits", "fits", error="truncated")
        with open(self.path("bad_truncated_header.fits"), "wb") as fh:
            fh.write(full[:1000])
        self.add("fits_bad_truncated_header", "bad_truncated_header.fits", "fits",
                 error="truncated")

        one_d = rng.normal(0.0, 1.0, size=(20,)).astype(np.float32)
        self.write_fits("bad_one_d.fits", [fits.PrimaryHDU(one_d)])
        self.add("fits_bad_one_d", "bad_one_d.fits", "fits", error="one_d")

        with open(self.path("bad_not_fits.fits"), "wb") as fh:
            fh.write(b"This is a plain text file, not a FITS file.\n"
                     b"SIMPLE is not at the start, and there are no 2880-byte blocks.\n")
        self.add("fits_bad_not_fits", "bad_not_fits.fits", "fits", error="not_fits")

        nan = np.full((H, W), np.nan, dtype=np.float32)
        self.write_fits("bad_all_nan.fits",
                        [fits.PrimaryHDU(nan, header=self.header("all NaN", "Jy"))])
        self.fits_case("fits_bad_all_nan", "bad_all_nan.fits", 0, keys=("OBJECT",),
                       error="all_nan")

        const = np.full((H, W), 3.0, dtype=np.float32)
        self.write_fits("bad_constant.fits",
                        [fits.PrimaryHDU(const, header=self.header("constant", "Jy"))])
        self.fits_case("fits_bad_constant", "bad_constant.fits", 0, keys=("OBJECT",),
                       error="constant")

    # ----------------------------------------------------------------- HDF5
    def hdf5(self):
        rng = self.rng
        H, W = H5_H, H5_W
        name = "hdf5_sim.h5"
        dkw = dict(track_times=False)
        with h5py.File(self.path(name), "w") as f:
            f.attrs["title"] = "expanse HDF5 reader fixture"
            f.attrs["version"] = np.int64(3)
            f.attrs["box_size"] = np.float64(25.0)
            f.attrs["grid"] = np.array([H, W], dtype=np.int32)

            snap = f.create_group("sim").create_group("snap_010")
            snap.attrs["redshift"] = np.float64(2.5)
            dens = np.exp(rng.normal(0.0, 1.0, size=(H, W))) * 1.0e-24
            d = snap.create_dataset("density", data=dens.astype(np.float64), **dkw)
            d.attrs["units"] = "g cm-3"
            d.attrs["long_name"] = "gas density"
            d.attrs["time"] = np.float64(1.25)
            d.attrs["step"] = np.int64(10)
            d.attrs["origin"] = np.array([0.5, -1.0, 2.0], dtype=np.float64)
            d.attrs["dims"] = np.array([H, W], dtype=np.int32)
            temp = rng.normal(1.0e4, 1.0e3, size=(H, W)).astype(np.float32)
            t = snap.create_dataset("temperature", data=temp, **dkw)
            t.attrs["units"] = "K"
            withnan = rng.normal(0.0, 1.0, size=(H, W)).astype(np.float32)
            withnan[[0, 3, 5], [0, 4, 8]] = np.nan
            t = snap.create_dataset("velocity_x", data=withnan, **dkw)
            t.attrs["units"] = "km s-1"
            cube = rng.normal(0.0, 1.0, size=(3, H, W)).astype(np.float32)
            cube += np.arange(3, dtype=np.float32)[:, None, None]
            c = snap.create_dataset("metals", data=cube, **dkw)
            c.attrs["units"] = "Zsun"

            ints = f.create_group("ints")
            int_specs = [
                ("int8", np.int8, -128, 128),
                ("int16", np.int16, -32768, 32768),
                ("int32", np.int32, -(2**23), 2**23),
                ("int64", np.int64, None, None),
                ("uint8", np.uint8, 0, 256),
                ("uint16", np.uint16, 0, 65536),
                ("uint32", np.uint32, None, None),
            ]
            for dname, dt, lo, hi in int_specs:
                if dname == "int64":
                    a = rng.integers(-1000, 1000, size=(H, W))
                    b = rng.integers(0, 4096, size=(H, W))
                    v = (a * 2**33 + b * 2**20).astype(np.int64)
                elif dname == "uint32":
                    # up to ~2^32 but f32-exact (24 significant bits)
                    v = (rng.integers(0, 2**24, size=(H, W)) * 256).astype(np.uint32)
                    v[0, 0] = 4294967040  # 0xFFFFFF00
                else:
                    v = rng.integers(lo, hi, size=(H, W)).astype(dt)
                    v[0, 0], v[0, 1] = lo, hi - 1
                ints.create_dataset(dname, data=v, **dkw).attrs["units"] = "count"

            comp = f.create_group("compressed")
            base = rng.normal(0.0, 1.0, size=(H, W)).astype(np.float32)
            comp.create_dataset("gzip", data=base, chunks=(4, 8), compression="gzip",
                                compression_opts=6, **dkw)
            comp.create_dataset("shuffle_gzip", data=base * 2.0, chunks=(4, 8),
                                compression="gzip", shuffle=True, **dkw)
            comp.create_dataset("lzf", data=base * 3.0, chunks=(4, 8), compression="lzf",
                                **dkw)
            # chunked, not compressed, with partial edge chunks (6x9 in 5x7 chunks)
            comp.create_dataset("chunked_f64", data=(base * 4.0).astype(np.float64),
                                chunks=(5, 7), **dkw)
            comp.create_dataset("gzip_i16_cube",
                                data=rng.integers(-30000, 30000, size=(3, H, W)).astype(np.int16),
                                chunks=(1, 3, 9), compression="gzip", shuffle=True, **dkw)

            bad = f.create_group("bad")
            bad.create_dataset("line", data=rng.normal(size=(20,)).astype(np.float32), **dkw)
            bad.create_dataset("all_nan", data=np.full((H, W), np.nan, dtype=np.float32), **dkw)
            bad.create_dataset("constant", data=np.full((H, W), 3.0, dtype=np.float32), **dkw)
            f.create_group("empty_group")

        def attrs_json(ds):
            out = {}
            for k in sorted(ds.attrs.keys()):
                v = ds.attrs[k]
                if isinstance(v, bytes):
                    v = v.decode()
                elif isinstance(v, np.ndarray):
                    v = v.tolist()
                elif isinstance(v, np.integer):
                    v = int(v)
                elif isinstance(v, np.floating):
                    v = float(v)
                out[k] = v
            return out

        def case(cname, path, select_path=None, error=None):
            sel = {"dataset": select_path if select_path is not None else path}
            with h5py.File(self.path(name), "r") as f:
                ds = f[path]
                data = np.array(ds[()], dtype="f8")
                units = ds.attrs.get("units")
                attrs = attrs_json(ds)
            self.add(cname, name, "hdf5", select=sel, expected=data, units=units,
                     attrs=attrs, error=error)

        case("hdf5_density_f64", "/sim/snap_010/density")
        case("hdf5_density_no_slash", "/sim/snap_010/density",
             select_path="sim/snap_010/density")
        case("hdf5_temperature_f32", "/sim/snap_010/temperature")
        case("hdf5_nan_f32", "/sim/snap_010/velocity_x")
        case("hdf5_cube_f32", "/sim/snap_010/metals")
        for dname in ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"]:
            case(f"hdf5_{dname}", f"/ints/{dname}")
        case("hdf5_gzip_f32", "/compressed/gzip")
        case("hdf5_shuffle_gzip_f32", "/compressed/shuffle_gzip")
        case("hdf5_lzf_f32", "/compressed/lzf")
        case("hdf5_chunked_f64", "/compressed/chunked_f64")
        case("hdf5_gzip_i16_cube", "/compressed/gzip_i16_cube")
        case("hdf5_bad_all_nan", "/bad/all_nan", error="all_nan")
        case("hdf5_bad_constant", "/bad/constant", error="constant")
        self.add("hdf5_bad_one_d", name, "hdf5", select={"dataset": "/bad/line"},
                 error="one_d")
        self.add("hdf5_bad_missing", name, "hdf5", select={"dataset": "/sim/snap_999/density"},
                 error="unknown_dataset")
        self.add("hdf5_bad_empty_group", name, "hdf5", select={"dataset": "/empty_group"},
                 error="unknown_dataset")
        self.add("hdf5_bad_group_path", name, "hdf5", select={"dataset": "/sim/snap_010"},
                 error="unknown_dataset")

        # not HDF5: random bytes (drawn from the fixed-seed RNG)
        with open(self.path("bad_not_hdf5.h5"), "wb") as fh:
            fh.write(rng.integers(0, 256, size=600, dtype=np.uint8).tobytes())
        self.add("hdf5_bad_not_hdf5", "bad_not_hdf5.h5", "hdf5",
                 select={"dataset": "/sim/snap_010/density"}, error="not_hdf5")

    # ------------------------------------------------------------------ NPY
    def npy(self):
        rng = self.rng
        H, W = NPY_H, NPY_W
        a = rng.normal(0.0, 1.0, size=(H, W)).astype(np.float32)
        b = rng.normal(10.0, 2.0, size=(3, H, W)).astype(np.float64)
        c = rng.integers(-32768, 32768, size=(H, W)).astype(np.int16)
        d = rng.normal(size=(20,)).astype(np.float32)
        for case, arr in [("npy_f32_2d", a), ("npy_f64_3d", b), ("npy_i16_2d", c)]:
            fname = case + ".npy"
            np.save(self.path(fname), arr)
            self.add(case, fname, "npy", expected=np.load(self.path(fname)).astype("f8"))
        np.save(self.path("bad_one_d.npy"), d)
        self.add("npy_bad_one_d", "bad_one_d.npy", "npy", error="one_d")

    def manifest(self):
        # one case per line: easy to diff and grep, and compact
        lines = [json.dumps(c, allow_nan=False) for c in self.cases]
        with open(self.path("manifest.json"), "w", newline="\n") as fh:
            fh.write("[\n" + ",\n".join(lines) + "\n]\n")


def build(out):
    if os.path.isdir(out):
        for fn in os.listdir(out):
            p = os.path.join(out, fn)
            if os.path.isfile(p):
                os.remove(p)
    os.makedirs(out, exist_ok=True)
    b = Builder(out)
    b.fits_plain()
    b.fits_mef()
    b.fits_compressed()
    b.fits_bad()
    b.hdf5()
    b.npy()
    b.manifest()
    # Several fixtures look like text to git (no NUL in the first 8 KB: the
    # truncated and not-FITS files, the ASCII FITS headers) but must stay
    # byte-exact, so turn off end-of-line conversion for the whole folder.
    with open(b.path(".gitattributes"), "w", newline="\n") as fh:
        fh.write("# written by tools/make_io_fixtures.py: keep every fixture byte-exact\n"
                 "* -text\n")
    return b.cases


def digests(folder):
    out = {}
    for fn in sorted(os.listdir(folder)):
        with open(os.path.join(folder, fn), "rb") as fh:
            out[fn] = hashlib.sha256(fh.read()).hexdigest()
    return out


def verify(folder):
    """Independent read-back of every manifest case with the reference
    libraries. Returns a list of problems (empty when all is well)."""
    problems = []
    with open(os.path.join(folder, "manifest.json")) as fh:
        cases = json.load(fh)

    def same(a, b):
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)

    def fits_pick(f, sel):
        if sel is None:
            for hdu in f:
                if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) \
                        and hdu.header.get("NAXIS", 0) > 0:
                    return hdu
            raise LookupError("no image HDU")
        return f[sel["hdu"]]  # raises KeyError / IndexError

    for c in cases:
        path = os.path.join(folder, c["file"])
        name, err = c["case"], c["error"]
        if not os.path.isfile(path):
            problems.append(f"{name}: missing {c['file']}")
            continue
        exp = None
        if c["expected"] is not None:
            exp = np.load(os.path.join(folder, c["expected"]))
            if exp.dtype != np.dtype("<f8") or exp.ndim != 3 \
                    or list(exp.shape) != [c["n_maps"]] + c["shape"]:
                problems.append(f"{name}: bad expected array {exp.dtype} {exp.shape}")
        try:
            if c["format"] == "fits":
                with fits.open(path) as f:
                    hdu = fits_pick(f, c["select"])
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                        got_err = "table_hdu"
                        data = None
                    else:
                        got_err = None
                        hdr = hdu.header.copy()  # before astropy rescales it
                        data = np.array(hdu.data, dtype="f8")
                        if hdr["BITPIX"] > 0 and "BLANK" in hdr and \
                                not isinstance(hdu, fits.CompImageHDU):
                            raw = fits.getdata(path, ext=f.index(hdu),
                                               do_not_scale_image_data=True)
                            data[raw == hdr["BLANK"]] = np.nan
                        if c["units"] != hdr.get("BUNIT"):
                            problems.append(f"{name}: units {c['units']!r}")
                        for k, v in c["cards"].items():
                            if hdr[k] != v:
                                problems.append(f"{name}: card {k} {hdr[k]!r} != {v!r}")
            elif c["format"] == "hdf5":
                with h5py.File(path, "r") as f:
                    obj = f[c["select"]["dataset"]]
                    if not isinstance(obj, h5py.Dataset):
                        raise KeyError("not a dataset")
                    data = np.array(obj[()], dtype="f8")
                    got_err = None
                    if c["units"] != obj.attrs.get("units"):
                        problems.append(f"{name}: units {c['units']!r}")
                    if sorted(obj.attrs.keys()) != sorted(c["attrs"].keys()):
                        problems.append(f"{name}: attribute names differ")
            else:
                data = np.load(path).astype("f8")
                got_err = None
            if data is not None:
                if data.ndim == 1:
                    got_err = "one_d"
                elif np.isnan(data).all():
                    got_err = "all_nan"
                elif np.nanmin(data) == np.nanmax(data):
                    got_err = "constant"
        except (KeyError, IndexError, LookupError) as e:
            got_err = "unknown_hdu" if c["format"] == "fits" else "unknown_dataset"
            data = None
        except OSError as e:
            if c["format"] == "hdf5":
                got_err = "not_hdf5"
            else:
                # astropy says "Empty or corrupt FITS file" for a header cut
                # short; a file that starts like FITS but fails is truncated
                with open(path, "rb") as fh:
                    starts_fits = fh.read(9) == b"SIMPLE  ="
                got_err = "truncated" if starts_fits else "not_fits"
            data = None
        except (TypeError, ValueError) as e:
            # astropy: "buffer is too small for requested array" on short data
            got_err = "truncated" if c["format"] == "fits" else f"?{type(e).__name__}: {e}"
            data = None
        if got_err != err:
            problems.append(f"{name}: reference library gives {got_err!r}, manifest {err!r}")
        if exp is not None and data is not None:
            d3 = data if data.ndim == 3 else data[np.newaxis]
            if not same(d3, exp):
                problems.append(f"{name}: values differ from expected")
    return problems


def main(argv):
    warnings.simplefilter("error")  # any astropy/h5py warning is a bug here
    if argv[1:2] == ["--check"]:
        import time
        with tempfile.TemporaryDirectory() as tmp:
            d1, d2 = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            build(d1)
            time.sleep(1.5)  # so any embedded timestamp would differ
            build(d2)
            h1, h2 = digests(d1), digests(d2)
            bad = [k for k in sorted(set(h1) | set(h2)) if h1.get(k) != h2.get(k)]
            print(f"two fresh builds: {len(h1)} files; differing: {bad or 'none'}")
            if os.path.isdir(DEFAULT_OUT):
                h0 = digests(DEFAULT_OUT)
                stale = [k for k in sorted(set(h0) | set(h1)) if h0.get(k) != h1.get(k)]
                print(f"{os.path.normpath(DEFAULT_OUT)} vs fresh build: "
                      f"differing: {stale or 'none'}")
                bad += stale
            return 1 if bad else 0
    if argv[1:2] == ["--verify"]:
        folder = os.path.abspath(argv[2] if len(argv) > 2 else DEFAULT_OUT)
        warnings.simplefilter("ignore")  # truncated files warn before failing
        problems = verify(folder)
        for p in problems:
            print("PROBLEM", p)
        print(f"verify {folder}: {len(problems)} problem(s)")
        return 1 if problems else 0
    out = os.path.abspath(argv[1] if len(argv) > 1 else DEFAULT_OUT)
    cases = build(out)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"wrote {len(cases)} cases, {len(os.listdir(out))} files, {total} bytes to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
