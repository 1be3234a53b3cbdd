"""expanse from Python: the Rust library the ``expanse`` command line runs, numpy in and out.

Grow a handful of astrophysical maps into many synthetic maps with a frozen diffusion model
(Zhu et al. 2023, arXiv 2310.09213). Every function here calls the same library code as the
command line, so results are byte for byte those of ``expanse run`` / ``expanse invert``.

Arrays are float32, (N, H, W) or (N, C, H, W). Long calls release the GIL; Ctrl-C stops
``Model.invert``/``generate``/``reconstruct`` after the current batch (KeyboardInterrupt, nothing
returned). Errors are ValueError (bad values, unreadable content, unknown keys), TypeError (a
wrong dtype), FileNotFoundError (a missing file) or OSError, with the library's message naming
the file and the key.
"""

import os as _os
import tempfile as _tempfile

import numpy as _np

from . import _expanse
from ._expanse import Model, Normalizer, Prior, derive_seed, fit_prior, refine, set_threads, statistic_curves

__all__ = ["Model", "Normalizer", "Prior", "read_maps", "prepare", "fit_prior", "refine", "run", "validate",
           "statistic_curves", "derive_seed", "set_threads", "__version__"]
__version__ = _expanse.__version__

def read_maps(path, hdu=None, dataset=None):
    """Reads the maps of a FITS, HDF5 or NPY file.

    hdu: a FITS HDU index or EXTNAME (default: the first image HDU); dataset: an HDF5 dataset
    path (default: ``maps`` or the only 2-D/3-D dataset).
    Returns (maps, info): maps is float32 (N, H, W) in the file's physical units, NaN where blank;
    info is a dict with ``units`` (e.g. "cm-2", or None) and ``maps``, one record per map (file,
    HDU or dataset, plane of a cube, units).
    """
    return _expanse.read_maps(_os.fspath(path), None if hdu is None else str(hdu), dataset)


def prepare(inputs, hdu=None, dataset=None, max_maps=None, transform="linear", range="minmax", offset=None,
            softening=None, crop=None, tile=None, size=None, channels=1, band_map=None, max_blank=None):
    """``expanse ingest`` in memory: map files (paths, folders or glob patterns) to the model-space
    stack the model takes.

    The options are a run config's ``[[domain]]`` keys (transform "linear", "log10" or "asinh";
    range "minmax" or "percentile:LOW,HIGH"; crop "X0,Y0,WIDTH,HEIGHT" or "center:SIZE"; tile
    "SIZE" or "SIZE:STRIDE"; size in pixels; channels: the model's in_channels for an RGB model).
    Returns (stack, mask, normalizer): float32 (N, C, H, W) in [-1, 1], uint8 (N, H, W) with 1 where
    a pixel was blank, and the fitted Normalizer (``normalizer.inverse(images)`` gives physical
    maps).
    """
    paths = [inputs] if isinstance(inputs, (str, _os.PathLike)) else list(inputs)
    return _expanse.prepare([_os.fspath(p) for p in paths], None if hdu is None else str(hdu), dataset, max_maps,
                            transform, range, offset, softening, crop, tile, size, channels,
                            None if band_map is None else list(band_map), max_blank)


def run(config, out=None, resume=False, latent_cache=None):
    """Runs a run config as ``expanse run CONFIG --out OUT`` does, in the run folder ``out``
    (default runs/<run name>; it must be new or empty unless resume=True).

    Returns the run's summary: a dict with ``dir``, ``domains`` (per domain: maps, synthetic
    files, the sampling record and the validation record report.json holds), ``ran``, ``kept``,
    ``seconds`` and ``text`` (what the command line prints).
    """
    fs = lambda p: None if p is None else _os.fspath(p)
    return _expanse.run(_os.fspath(config), fs(out), bool(resume), fs(latent_cache))


def validate(real, synthetic, out, statistics=None):
    """Compares real and synthetic maps as ``expanse validate`` does and writes its report and
    figures into the folder ``out``.

    real, synthetic: map files, or float32 arrays (N, H, W) in physical units.
    statistics: names of the battery's statistics (power_spectrum, pdf, minkowski, peaks,
    bispectrum, scattering); default all but bispectrum.
    Returns report.json's record as a dict (power-spectrum slopes, PDF distances, every
    statistic's chi2/dof, the classifier two-sample test, memorization).
    """
    with _tempfile.TemporaryDirectory(prefix="expanse-") as tmp:
        def as_file(x, name):
            if isinstance(x, _np.ndarray):
                if x.dtype != _np.float32:
                    raise TypeError(f"{name}: expected float32, got {x.dtype} (convert with .astype(numpy.float32))")
                if x.ndim != 3:
                    raise ValueError(f"{name}: expected (N, H, W), got shape {x.shape}")
                path = _os.path.join(tmp, name + ".npy")
                _np.save(path, x)
                return path
            return _os.fspath(x)

        return _expanse.validate(as_file(real, "real"), as_file(synthetic, "synthetic"), _os.fspath(out),
                                 None if statistics is None else list(statistics))
