"""Fixtures for expanse's wavelet moments and refinement loss (src/stats/wavelet_moments.rs,
tests/refine_parity.rs).

The moments are written here a second time, from their definition in the Rust module's docs, in
PyTorch (float64; the reflection padding is torch's own `pad(mode="reflect")`), and PyTorch's
autograd gives the loss's gradient: an independent check of the hand-derived gradient in Rust. For a few maps (random, a smooth field, thin lines; square and
not; with and without the increments family) it writes the map, the moments, a target and weights, the loss and its gradient.

Run from the repository (a venv with tools/requirements-refine.txt):

    python tools/make_refine_fixtures.py [--out tests/fixtures/refine] [--check]
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixturelib import check_reproducible, save_npy, write_json  # noqa: E402

torch.set_default_dtype(torch.float64)
EPS = 1e-8  # MODULUS_EPSILON


def freqs(n):
    """Signed frequency index of each FFT bin (numpy's fftfreq times n)."""
    return np.fft.fftfreq(n) * n


def filters(ny, nx, J, L):
    ky = 2 * np.pi * freqs(ny)[:, None] / ny
    kx = 2 * np.pi * freqs(nx)[None, :] / nx
    slant = 4.0 / L
    out = []
    for j in range(J):
        sig, xi = 0.8 * 2**j, 0.75 * np.pi / 2**j
        for t in range(L):
            th = t * np.pi / L
            g = np.zeros((ny, nx))
            for my in (-1, 0, 1):
                for mx in (-1, 0, 1):
                    KX, KY = kx + 2 * np.pi * mx, ky + 2 * np.pi * my
                    u = KX * np.cos(th) + KY * np.sin(th)
                    v = -KX * np.sin(th) + KY * np.cos(th)
                    across = v**2 / slant**2
                    g = g + np.exp(-(sig**2) * ((u - xi) ** 2 + across) / 2) - np.exp(
                        -(sig**2) * xi**2 / 2
                    ) * np.exp(-(sig**2) * (u**2 + across) / 2)
            out.append(g)
    return torch.tensor(np.array(out))


def rings(ny, nx):
    fy, fx = freqs(ny)[:, None], freqs(nx)[None, :]
    r = np.floor(np.sqrt(fy**2 + fx**2) + 0.5).astype(int)
    count = int(np.floor(np.sqrt((ny // 2) ** 2 + (nx // 2) ** 2) + 0.5))
    return torch.tensor(np.array([(r == i).astype(float) for i in range(1, count + 1)]))


def pairs(J, L):
    idx = lambda j, t: j * L + t % L  # noqa: E731
    scale, angle, phase = [], [], []
    for j in range(J):
        for t in range(L):
            if j + 1 < J:
                scale.append((idx(j, t), idx(j + 1, t)))
            if L > 1:
                angle.append((idx(j, t), idx(j, t + 1)))
            for d in (1, 2):
                if j + d < J:
                    phase.append((idx(j, t), idx(j + d, t)))
    return scale, angle, phase


def pads(ny, nx, J):
    return min(2**J, ny - 1), min(2**J, nx - 1)


def increment_fields(x):
    """The pixel-scale operators of the increments family: differences along x and y, Laplacian."""
    dx = x[:, 1:] - x[:, :-1]
    dy = x[1:, :] - x[:-1, :]
    lap = x[1:-1, 2:] + x[1:-1, :-2] + x[2:, 1:-1] + x[:-2, 1:-1] - 4 * x[1:-1, 1:-1]
    return [dx, dy, lap]


def moments(x, F, R, J, L, increments=False):
    ny, nx = x.shape
    n_pad = F.shape[1] * F.shape[2]
    py, px = pads(ny, nx, J)
    mean = x.mean()
    d = x - mean
    out = [mean, (d**2).mean(), (d**3).mean(), (d**4).mean()]
    xp = torch.nn.functional.pad(x[None, None], (px, px, py, py), mode="reflect")[0, 0]
    X = torch.fft.fft2(xp)
    P = (X.real**2 + X.imag**2) / n_pad
    out.extend(torch.log((R * P[None]).sum((1, 2)) / R.sum((1, 2))))
    W = torch.fft.ifft2(X[None] * F)[:, py:py + ny, px:px + nx]
    M = torch.sqrt(W.real**2 + W.imag**2 + EPS)
    S1 = M.mean((1, 2))
    out.extend(S1)
    out.extend((M**2).mean((1, 2)))
    scale, angle, phase = pairs(J, L)
    for a, b in scale + angle:
        out.append(((M[a] - S1[a]) * (M[b] - S1[b])).mean())
    for a, b in phase:
        z = (M[a] * W[b]).mean()
        out.extend([z.real, z.imag])
    if increments:
        for d in increment_fields(x):
            out.extend([torch.sqrt(d**2 + EPS).mean(), (d**2).mean(), (d**4).mean()])
    return torch.stack(out)


def case(name, x, J, L, out, increments=False):
    ny, nx = x.shape
    py, px = pads(ny, nx, J)
    F, R = filters(ny + 2 * py, nx + 2 * px, J, L), rings(ny + 2 * py, nx + 2 * px)
    xt = torch.tensor(x, requires_grad=True)
    phi = moments(xt, F, R, J, L, increments)
    k = phi.numel()
    p = phi.detach().numpy()
    target = p * (1.0 + 0.1 * ((np.arange(k) % 7) - 3) / 3.0) + 0.01
    weights = 1.0 + (np.arange(k) % 3)
    loss = (torch.tensor(weights) * (phi - torch.tensor(target)) ** 2).sum()
    loss.backward()
    save_npy(os.path.join(out, f"{name}_map.npy"), x)
    save_npy(os.path.join(out, f"{name}_gradient.npy"), xt.grad.numpy())
    record = {"J": J, "L": L, "moments": p.tolist(), "target": target.tolist(), "weights": weights.tolist(),
              "loss": float(loss.detach())}
    if increments:
        record["increments"] = True
    write_json(os.path.join(out, f"{name}.json"), record)


def build(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261206)
    case("noise_20x24", rng.standard_normal((20, 24)), 2, 4, out)
    k = np.fft.fftfreq(32)
    amp = 1.0 / np.maximum(np.hypot(k[:, None], k[None, :]), 1 / 32) ** 1.5
    smooth = np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((32, 32)))).real
    case("smooth_32", smooth / smooth.std(), 3, 8, out)
    y, x = np.mgrid[0:32, 0:32]
    lines = np.exp(-(((x - 0.5 * y - 4) % 16 - 8) ** 2) / 2.0) + 0.1 * rng.standard_normal((32, 32))
    case("lines_32", lines, 3, 6, out)
    # The same maps with the increments family (moments of the pixel-scale differences).
    case("noise_20x24_increments", rng.standard_normal((20, 24)), 2, 4, out, increments=True)
    case("lines_32_increments", lines, 3, 6, out, increments=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/refine")
    ap.add_argument("--check", action="store_true", help="build twice and compare every file")
    a = ap.parse_args()
    if a.check:
        return check_reproducible(build)
    build(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
