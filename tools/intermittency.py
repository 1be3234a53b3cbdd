"""How intermittent is the finest structure of real and synthetic maps? (FIDELITY.md, "A lever
measured: the increments".)

    python tools/intermittency.py draw REAL --transform log10 --tile 64 --seed 0 --out PREFIX
    python tools/intermittency.py measure [--transform log10] REAL SYN [SYN2 ...]

`draw` cuts REAL (a FITS image or cube, as the benchmark configs do: non-overlapping tiles) into
tiles, applies the domain's transform (log10, linear, or asinh of x over the MAD about the
median) and writes PREFIX.real.npy and PREFIX.gauss.npy: as many Gaussian draws with the tiles'
empirical mean and covariance (mean + Σ_i w_i (x_i − mean)/√(n − 1), w ~ N(0, 1)), the model-free
start of `expanse refine`.

`measure` prints, for each stack (N, H, W; FITS or .npy, taken through --transform, default
linear, with the MAD of the first for asinh) against the first: local maxima per map (8-neighbour,
interior pixels), the kurtosis of the five-point Laplacian and of the gradient's modulus (central
differences; 3 for a Gaussian field), and the ratio of the synthetic to the real periodic power
spectrum in |k| bins of 0.05 px⁻¹ (the last three bins, beyond 0.55, are the Fourier grid's
corners). numpy and astropy only.
"""

import argparse
import sys

import numpy as np
from astropy.io import fits


def load(path):
    if path.endswith(".npy"):
        return np.load(path).astype(np.float64)
    d = fits.getdata(path).astype(np.float64)
    return d[None] if d.ndim == 2 else d


def tiles(cube, size):
    return np.array([m[y:y + size, x:x + size] for m in cube
                     for y in range(0, m.shape[0] - size + 1, size)
                     for x in range(0, m.shape[1] - size + 1, size)])


def softening(x):
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def transform(x, kind, soft=None):
    if kind == "log10":
        return np.log10(x)
    if kind == "asinh":
        return np.arcsinh(x / (soft or softening(x)))
    return x


def maxima(m):
    c = m[:, 1:-1, 1:-1]
    is_max = np.ones_like(c, bool)
    ny, nx = m.shape[1:]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_max &= c > m[:, 1 + dy:ny - 1 + dy, 1 + dx:nx - 1 + dx]
    return is_max.sum((1, 2)).mean()


def kurtosis(a):
    a = a - a.mean(axis=(1, 2), keepdims=True)
    return ((a**4).mean((1, 2)) / (a**2).mean((1, 2)) ** 2).mean()


def laplacian(m):
    return m[:, 1:-1, 2:] + m[:, 1:-1, :-2] + m[:, 2:, 1:-1] + m[:, :-2, 1:-1] - 4 * m[:, 1:-1, 1:-1]


def gradient(m):
    return np.hypot(m[:, 1:-1, 2:] - m[:, 1:-1, :-2], m[:, 2:, 1:-1] - m[:, :-2, 1:-1])


def spectrum(m):
    n = m.shape[-1]
    p = np.abs(np.fft.fft2(m - m.mean(axis=(1, 2), keepdims=True))) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(m.shape[-2])))
    b = np.digitize(k, np.arange(0, 0.75, 0.05))
    return np.array([p[:, b == i].mean() for i in range(1, 15)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("draw")
    d.add_argument("real")
    d.add_argument("--transform", choices=["log10", "linear", "asinh"], required=True)
    d.add_argument("--tile", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True)
    m = sub.add_parser("measure")
    m.add_argument("stacks", nargs="+")
    m.add_argument("--transform", choices=["log10", "linear", "asinh"], default="linear")
    a = ap.parse_args()
    if a.cmd == "draw":
        x = transform(tiles(load(a.real), a.tile), a.transform)
        n = len(x)
        flat = x.reshape(n, -1)
        mu = flat.mean(0)
        w = np.random.default_rng(a.seed).standard_normal((n, n)) / np.sqrt(n - 1)
        np.save(a.out + ".real.npy", x)
        np.save(a.out + ".gauss.npy", (mu + w @ (flat - mu)).reshape(x.shape))
        print(f"{n} tiles of {a.tile}²: {a.out}.real.npy, {a.out}.gauss.npy")
        return 0
    first = load(a.stacks[0])
    soft = softening(first)
    real = transform(first, a.transform, soft)
    p_real = spectrum(real)
    np.set_printoptions(linewidth=200)
    for path in a.stacks:
        s = transform(load(path), a.transform, soft)
        print(f"{path}: maxima per map {maxima(s):.1f}, Laplacian kurtosis {kurtosis(laplacian(s)):.1f}, "
              f"|gradient| kurtosis {kurtosis(gradient(s)):.1f}, P/P_real by |k| bin {np.round(spectrum(s) / p_real, 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
