"""How much a set of maps holds straight horizontal or vertical edges (FIDELITY.md, "WPH moments
from the decoded maps"): for each map, the mean |difference of log10 values between neighbouring
columns| along every column boundary, and the same for rows; the largest over boundaries divided
by their median, per map; printed as the median over maps, for columns and for rows. Axis-aligned
seams make a few boundaries stand out (large ratios); isotropic fields give small ones.

    python tools/edge_profile.py MAPS.fits [MORE.fits ...]     (numpy and astropy)
"""

import sys

import numpy as np
from astropy.io import fits


def profile(path):
    d = np.log10(fits.getdata(path).astype(np.float64))
    if d.ndim == 2:
        d = d[None]
    cols = np.abs(np.diff(d, axis=2)).mean(axis=1)  # (maps, W - 1)
    rows = np.abs(np.diff(d, axis=1)).mean(axis=2)  # (maps, H - 1)
    ratio = lambda p: float(np.median(p.max(axis=1) / np.median(p, axis=1)))  # noqa: E731
    return ratio(cols), ratio(rows)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        c, r = profile(path)
        print(f"{path}: column-boundary peak/median {c:.2f}, row-boundary peak/median {r:.2f}")
