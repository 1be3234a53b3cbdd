"""Few-shot baseline for the fidelity benchmark: microcanonical synthesis from wavelet phase
harmonic (WPH) statistics with pywph 1.1.3 (github.com/bregaldo/pywph).

Each synthetic map starts from Gaussian white noise and is deformed by L-BFGS until its WPH
coefficients match a target, as in pywph's examples/synthesis.py and examples/tutorial.ipynb
(section 2). The target here is the MEAN of the WPH coefficients of all the real maps (the
examples match a single map). The loss is the squared Euclidean distance between the
coefficients, both normalized with norm="auto" (the reference statistics of the "auto"
normalization are pooled over all the real maps, see `set_pooled_normalization`).

The maps are synthesized in the domain's transformed space, the transform of expanse's data
preparation (src/prep/transform.rs) without its affine rescaling to [-1, 1] (the maps are
standardized here instead, as the examples do):

  log10:  y = log10(x + offset)   offset: 0 for positive data, else -min + 1e-3 (max - min)
  linear: y = x
  asinh:  y = asinh(x / softening) softening: 1.4826 x MAD of all real pixels about their median
                                   (their standard deviation if the MAD is 0)

and mapped back to physical units with the exact inverse.

WPH settings (defaults; override with --J/--L/--dn): J = floor(log2(min(H, W))) - 1 (the
examples' choice: J = 8 for 512 x 512 in synthesis.py, J = 7 for 256 x 256 in the tutorial),
L = 4, dn = 2 (synthesis.py), the default model (S11, S00, S01, C01, Cphase, L), periodic
boundary conditions (pbc=True), single precision; L-BFGS-B with maxiter 50, gtol = ftol = 1e-14,
maxcor 20 (synthesis.py).

Run from the repository (a venv with tools/requirements-wph.txt):

    python tools/wph_synthesis.py REAL.fits --out SYN.fits --count N --seed S \
        [--transform log10|linear|asinh] [--softening X] [--iterations K] [--threads T]

REAL.fits holds a cube (N_real, H, W) of real maps in its primary HDU. SYN.fits gets a float32
cube (N, H, W) in physical units, BUNIT copied, and cards recording the method and its cost
(WPHSECPM: wall-clock seconds per synthetic map; WPHTHRD: torch threads).
"""

import argparse
import math
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="WPH microcanonical synthesis (pywph) of maps like the real ones, for the fidelity benchmark."
    )
    p.add_argument("real", help="FITS cube (N_real, H, W) of real maps in physical units (primary HDU)")
    p.add_argument("--out", required=True, help="output FITS cube (N, H, W) float32, physical units")
    p.add_argument("--count", type=int, required=True, help="number of synthetic maps")
    p.add_argument("--seed", type=int, required=True, help="seed of the initial white noises")
    p.add_argument("--transform", choices=["log10", "linear", "asinh"], default="log10",
                   help="space the maps are synthesized in (default log10)")
    p.add_argument("--softening", type=float, default=None,
                   help="asinh softening in physical units (default 1.4826 x MAD of the real pixels)")
    p.add_argument("--offset", type=float, default=None,
                   help="log10 offset (default: 0 for positive data, else -min + 1e-3 (max - min), as expanse)")
    p.add_argument("--init", default=None,
                   help="FITS cube (>= COUNT, H, W) in physical units to start from instead of white noise "
                        "(e.g. expanse's decoded maps: the issue's 'WPH moments from the decoded map')")
    p.add_argument("--iterations", type=int, default=50,
                   help="L-BFGS maxiter per map (default 50, as pywph's examples/synthesis.py)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--J", type=int, default=None, help="WPH scales (default floor(log2(min(H, W))) - 1)")
    p.add_argument("--L", type=int, default=4, help="WPH angles in [0, pi) (default 4)")
    p.add_argument("--dn", type=int, default=2, help="WPH radial steps of the shift tau (default 2)")
    a = p.parse_args(argv)
    if a.count < 1:
        p.error("--count must be at least 1")
    if a.iterations < 1:
        p.error("--iterations must be at least 1")
    if a.threads < 1:
        p.error("--threads must be at least 1")
    if a.softening is not None and not (a.softening > 0 and math.isfinite(a.softening)):
        p.error("--softening must be a positive number")
    if a.offset is not None and not math.isfinite(a.offset):
        p.error("--offset must be a finite number")
    return a


# Thread caps must be in the environment before numpy/torch load their thread pools.
ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import scipy.optimize as opt  # noqa: E402
import torch  # noqa: E402
from astropy.io import fits  # noqa: E402

import pywph as pw  # noqa: E402


class Transform:
    """Invertible pointwise map physical -> synthesis space, fitted on all real pixels."""

    def __init__(self, kind, values, softening=None, offset=None):
        self.kind = kind
        self.softening = None
        self.offset = None
        v = values[np.isfinite(values)].astype(np.float64)
        vmin, vmax = float(v.min()), float(v.max())
        if kind == "log10":
            if offset is None:
                offset = 0.0 if vmin > 0 else -vmin + 1e-3 * (vmax - vmin)
            if vmin + offset <= 0:
                sys.exit(f"log10 with offset {offset}: the smallest value {vmin} is not lifted above 0; "
                         f"raise --offset above {-vmin} or use asinh")
            self.offset = float(offset)
        elif kind == "asinh":
            if softening is None:
                med = np.median(v)
                softening = 1.4826 * float(np.median(np.abs(v - med)))
                if not softening > 0:
                    softening = float(v.std())
            self.softening = float(softening)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "log10":
            return np.log10(x + self.offset)
        if self.kind == "asinh":
            return np.arcsinh(x / self.softening)
        return x.copy()

    def inverse(self, y):
        y = np.asarray(y, dtype=np.float64)
        if self.kind == "log10":
            return 10.0 ** y - self.offset
        if self.kind == "asinh":
            return np.sinh(y) * self.softening
        return y.copy()

    def describe(self):
        if self.kind == "log10":
            return f"log10: y = log10(x + offset), offset = {self.offset:.9g}"
        if self.kind == "asinh":
            return f"asinh: y = asinh(x / softening), softening = {self.softening:.9g}"
        return "linear: y = x"


def set_pooled_normalization(wph_op, maps):
    """norm="auto" statistics pooled over a stack of maps.

    pywph's "auto" normalization stores, for every filtered map entering a coefficient, its
    spatial mean and its RMS about that mean, taken from the first map it sees (here, each real
    map: shape (N_real, P, 1, 1, 2)). We pool them over the real maps -- the mean of the means,
    and the RMS about that pooled mean over all maps and pixels -- so that one normalization,
    shared by the target and the syntheses, describes the whole set.
    """
    wph_op.clear_normalization()
    wph_op.apply(maps, norm="auto", pbc=True)  # fills the per-map statistics
    pooled = []
    for means, stds in [wph_op.get_normalization()[0:2], wph_op.get_normalization()[2:4]]:
        m = means.mean(dim=0)
        var = (torch.abs(stds) ** 2).mean(dim=0) + (torch.abs(means - m) ** 2).mean(dim=0)
        s = torch.sqrt(var).to(stds.dtype)
        s[s == 0] = 1.0
        pooled += [m, s]
    wph_op.set_normalization(*pooled)


def synthesize_one(wph_op, target, shape, x0, maxiter):
    """L-BFGS from x0 (flat float64) to the target coefficients; returns (map, info)."""
    h, w = shape
    evals = [0]
    first_loss = [None]

    def objective(x):
        x_t, nb_chunks = wph_op.preconfigure(x.reshape(h, w), requires_grad=True, pbc=True)
        loss_tot = 0.0
        for i in range(nb_chunks):
            coeffs, idx = wph_op.apply(x_t, i, norm="auto", ret_indices=True, pbc=True)
            loss = torch.sum(torch.abs(coeffs - target[idx]) ** 2)
            loss.backward(retain_graph=True)
            loss_tot += float(loss.detach())
            del coeffs, idx, loss
        grad = x_t.grad.cpu().numpy().astype(np.float64).ravel()
        evals[0] += 1
        if first_loss[0] is None:
            first_loss[0] = loss_tot
        return loss_tot, grad

    res = opt.minimize(objective, x0, method="L-BFGS-B", jac=True, tol=None,
                       options={"maxiter": maxiter, "gtol": 1e-14, "ftol": 1e-14, "maxcor": 20})
    info = {"loss0": first_loss[0], "loss": float(res.fun), "nit": int(res.nit), "nfev": evals[0],
            "message": str(res.message)}
    return res.x.reshape(h, w), info


def main(a):
    torch.set_num_threads(a.threads)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)

    with fits.open(a.real) as hdul:
        data = hdul[0].data
        bunit = hdul[0].header.get("BUNIT")
        if data is None:
            sys.exit(f"{a.real}: the primary HDU holds no data")
        data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        sys.exit(f"{a.real}: expected a cube (N_real, H, W), got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        sys.exit(f"{a.real}: {int(np.sum(~np.isfinite(data)))} non-finite pixels; WPH needs complete maps")
    n_real, h, w = data.shape

    tr = Transform(a.transform, data, softening=a.softening, offset=a.offset)
    y = tr.forward(data)
    mu, sigma = float(y.mean()), float(y.std())
    if not sigma > 0:
        sys.exit("the real maps are constant in the transformed space")
    z = (y - mu) / sigma  # standardized, as pywph's examples do before synthesis

    J = a.J if a.J is not None else int(math.floor(math.log2(min(h, w)))) - 1
    print(f"{n_real} real maps of {h}x{w}; transform {tr.describe()}; pywph {pw.__version__}, "
          f"J={J} L={a.L} dn={a.dn}, maxiter {a.iterations}, {a.threads} threads", flush=True)

    t0 = time.perf_counter()
    wph_op = pw.WPHOp(h, w, J, L=a.L, dn=a.dn, device="cpu")
    set_pooled_normalization(wph_op, z)
    target = wph_op.apply(z, norm="auto", pbc=True).mean(dim=0).detach()
    setup_s = time.perf_counter() - t0
    print(f"operator + target ({target.shape[-1]} coefficients, mean of {n_real} maps): {setup_s:.2f}s", flush=True)

    starts = None
    if a.init is not None:
        with fits.open(a.init) as hdul:
            starts = np.asarray(hdul[0].data, dtype=np.float64)
        if starts.ndim != 3 or starts.shape[0] < a.count or starts.shape[1:] != (h, w):
            sys.exit(f"{a.init}: expected a cube ({a.count} or more, {h}, {w}), got {starts.shape}")
        starts = (tr.forward(starts[: a.count]) - mu) / sigma
        if not np.all(np.isfinite(starts)):
            sys.exit(f"{a.init}: maps outside the transform's domain")
    out = np.empty((a.count, h, w), dtype=np.float32)
    infos, secs = [], []
    for k in range(a.count):
        t = time.perf_counter()
        rng = np.random.default_rng([a.seed, k])
        x0 = rng.normal(z.mean(), z.std(), (h, w)).ravel() if starts is None else starts[k].ravel().copy()
        zk, info = synthesize_one(wph_op, target, (h, w), x0, a.iterations)
        phys = tr.inverse(zk * sigma + mu)
        if not np.all(np.isfinite(phys.astype(np.float32))):
            print(f"warning: map {k} has non-finite values after the inverse transform", flush=True)
        out[k] = phys.astype(np.float32)
        dt = time.perf_counter() - t
        secs.append(dt)
        infos.append(info)
        print(f"map {k + 1}/{a.count}: {info['nit']} iterations, {info['nfev']} evaluations, "
              f"loss {info['loss0']:.4g} -> {info['loss']:.4g}, {dt:.2f}s/map", flush=True)

    sec_per_map = float(np.mean(secs))
    hdu = fits.PrimaryHDU(out)
    hd = hdu.header
    if bunit is not None:
        hd["BUNIT"] = bunit
    hd["WPHMETH"] = ("pywph microcanonical L-BFGS", "few-shot WPH synthesis")
    hd["WPHVER"] = (pw.__version__, "pywph version")
    hd["WPHJ"] = (J, "WPH scales")
    hd["WPHL"] = (a.L, "WPH angles")
    hd["WPHDN"] = (a.dn, "WPH radial shift steps")
    hd["WPHITER"] = (a.iterations, "L-BFGS maxiter per map")
    hd["WPHSEED"] = (a.seed, "seed of the initial noises")
    if a.init is not None:
        hd["WPHINIT"] = (os.path.basename(a.init)[:60], "maps the syntheses started from")
    hd["WPHTRANS"] = (a.transform, "synthesis space")
    if tr.softening is not None:
        hd["WPHSOFT"] = (tr.softening, "asinh softening (physical units)")
    if tr.offset is not None:
        hd["WPHOFFS"] = (tr.offset, "log10 offset (physical units)")
    hd["WPHNREAL"] = (n_real, "real maps averaged into the target")
    hd["WPHSECPM"] = (round(sec_per_map, 4), "wall-clock seconds per synthetic map")
    hd["WPHSETUP"] = (round(setup_s, 4), "seconds: operator and target (once)")
    hd["WPHTHRD"] = (a.threads, "torch threads")
    hd["WPHLOSS"] = (float(np.mean([i["loss"] for i in infos])), "mean final loss")
    hd["HISTORY"] = f"tools/wph_synthesis.py: pywph {pw.__version__} WPH microcanonical synthesis"
    hd["HISTORY"] = (f"target: mean WPH coefficients (norm=auto pooled, pbc) of {n_real} maps of "
                     f"{os.path.basename(a.real)}")
    hd["HISTORY"] = f"J={J} L={a.L} dn={a.dn} default model; L-BFGS-B maxiter={a.iterations}"
    hd["HISTORY"] = f"gtol=ftol=1e-14 maxcor=20; seed={a.seed}; transform {tr.describe()}"
    hd["HISTORY"] = f"{sec_per_map:.3f} s per map with {a.threads} torch threads"

    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".{os.path.basename(a.out)}.tmp{os.getpid()}")
    try:
        hdu.writeto(tmp, overwrite=True)
        os.replace(tmp, a.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {a.out}: {a.count} maps, {sec_per_map:.2f}s per map ({a.threads} threads)", flush=True)


if __name__ == "__main__":
    main(ARGS)
