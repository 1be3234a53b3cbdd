"""Levers on the refinement, measured before any is written in Rust: expanse's refinement
(src/refine.rs: the wavelet moments of tools/make_refine_fixtures.py, per-map targets, equal weight
per family, L-BFGS, then the quantile match) re-implemented in PyTorch with autograd, with optional
extra families of moments and other rules for the targets. FIDELITY.md ("A lever measured: more
moments, other targets") quotes its runs.

    python tools/refine_levers.py REAL.fits SYN.fits OUT.fits --transform log10 \
        [--extra cphase,c01x,shift] [--target shift|permutation|random|nearest] [--iterations 100]

REAL.fits and SYN.fits are cubes (N, H, W) in physical units (a run's stacks/<d>.real.fits and the
`diffusion` variant's samples/<d>.fits); OUT.fits gets the refined maps, to be judged with
`expanse validate --real REAL.fits --synthetic OUT.fits --apodize tukey:0.3`.

Extra families (each weighs as much as any other family):
  cphase  WPH's phase harmonics between scales: mean of W_(j,t) · conj([W_(j+d,t)]^(2^d)), d = 1, 2,
          with [z]^k = |z| e^(ik arg z) (Allys et al. 2020);
  c01x    the C01 moments across neighbouring angles: mean of M_(j,t) · W_(j+1,t±1);
  shift   covariances of each modulus field with itself shifted by 1, 2 and 4 × 2^j pixels along and
          across the wavelet's orientation (how far structures extend, and in which direction).
Targets: `shift` is expanse's rule (each map's moments moved and rescaled onto the real set's);
`permutation` / `random` give each map the moments of one real map (without / with repeats);
`nearest` those of the real map nearest in moment space.

Maps are refined four at a time (one L-BFGS over the four, float64; `--chunk`), so losses differ a
little from the Rust refinement's one map at a time. Needs torch, numpy and astropy
(tools/requirements-refine.txt and astropy).
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from astropy.io import fits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_refine_fixtures import filters, rings, pairs, pads  # noqa: E402

EPS = 1e-8


def fwd(y, tr, off):
    if tr == "log10":
        return np.log10(y + off)
    return y


def inv(z, tr, off):
    if tr == "log10":
        return 10 ** z - off
    return z


def harmonic(W, M, k):
    """[z]^k = |z| e^{ik arg z} = z^k / |z|^(k-1)."""
    return W ** k / M ** (k - 1)


def moments(x, F, R, J, L, extra):
    """x: (N, ny, nx). Returns (N, K) moments and family index list."""
    N, ny, nx = x.shape
    n_pad = F.shape[1] * F.shape[2]
    py, px = pads(ny, nx, J)
    fam = []
    out = []
    mean = x.mean((1, 2))
    d = x - mean[:, None, None]
    for v in [mean, (d ** 2).mean((1, 2)), (d ** 3).mean((1, 2)), (d ** 4).mean((1, 2))]:
        out.append(v[:, None]); fam.append(0)
    xp = torch.nn.functional.pad(x[:, None], (px, px, py, py), mode="reflect")[:, 0]
    X = torch.fft.fft2(xp)
    P = (X.real ** 2 + X.imag ** 2) / n_pad
    ps = torch.log((R[None] * P[:, None]).sum((2, 3)) / R.sum((1, 2))[None])
    out.append(ps); fam += [1] * ps.shape[1]
    W = torch.fft.ifft2(X[:, None] * F[None])[:, :, py:py + ny, px:px + nx]
    M = torch.sqrt(W.real ** 2 + W.imag ** 2 + EPS)
    S1 = M.mean((2, 3))
    out.append(S1); fam += [2] * S1.shape[1]
    S2 = (M ** 2).mean((2, 3))
    out.append(S2); fam += [3] * S2.shape[1]
    scale, angle, phase = pairs(J, L)
    Mc = M - S1[:, :, None, None]
    c00 = torch.stack([(Mc[:, a] * Mc[:, b]).mean((1, 2)) for a, b in scale + angle], 1)
    out.append(c00); fam += [4] * c00.shape[1]
    c01 = []
    for a, b in phase:
        z = (M[:, a] * W[:, b]).mean((1, 2))
        c01 += [z.real, z.imag]
    c01 = torch.stack(c01, 1)
    out.append(c01); fam += [5] * c01.shape[1]
    f = 6
    if "cphase" in extra:
        # cov(W_j1, [W_j2]^(2^dj)): phase alignment of fine and coarse scales (WPH's Cphase).
        cp = []
        for j in range(J):
            for t in range(L):
                for dj in (1, 2):
                    if j + dj < J:
                        a, b = j * L + t, (j + dj) * L + t
                        h = harmonic(W[:, b], M[:, b], 2 ** dj)
                        z = (W[:, a] * h.conj()).mean((1, 2))
                        cp += [z.real, z.imag]
        out.append(torch.stack(cp, 1)); fam += [f] * len(cp); f += 1
    if "c01x" in extra:
        cx = []
        for j in range(J):
            for t in range(L):
                for dt in (-1, 1):
                    for dj in (1,):
                        if j + dj < J:
                            a, b = j * L + t, (j + dj) * L + (t + dt) % L
                            z = (M[:, a] * W[:, b]).mean((1, 2))
                            cx += [z.real, z.imag]
        out.append(torch.stack(cx, 1)); fam += [f] * len(cx); f += 1
    if "shift" in extra:
        # cov(M_l(u), M_l(u + tau)) at shifts along and across the wavelet's orientation.
        sh = []
        for j in range(J):
            for t in range(L):
                lam = j * L + t
                th = t * math.pi / L
                for s in (1, 2, 4):
                    for phi in (0.0, math.pi / 2):
                        r = s * 2 ** j
                        dy = int(round(r * math.sin(th + phi)))
                        dx = int(round(r * math.cos(th + phi)))
                        if abs(dy) >= ny // 2 or abs(dx) >= nx // 2:
                            continue
                        A = Mc[:, lam, max(0, dy):ny + min(0, dy), max(0, dx):nx + min(0, dx)]
                        B = Mc[:, lam, max(0, -dy):ny + min(0, -dy), max(0, -dx):nx + min(0, -dx)]
                        sh.append((A * B).mean((1, 2)))
        out.append(torch.stack(sh, 1)); fam += [f] * len(sh); f += 1
    return torch.cat(out, 1), fam


def match_quantiles(maps, real):
    qr = np.sort(real.reshape(len(real), -1), 1)
    qs = np.sort(maps.reshape(len(maps), -1), 1)
    mr, sr = qr.mean(0), qr.std(0, ddof=1)
    ms, ss = qs.mean(0), qs.std(0, ddof=1)
    out = np.empty_like(maps)
    for i in range(len(maps)):
        t = np.where(ss > 0, mr + (qs[i] - ms) * sr / np.where(ss > 0, ss, 1), mr)
        t = np.sort(t)
        flat = maps[i].reshape(-1)
        order = np.argsort(flat, kind="stable")
        o = np.empty_like(flat)
        o[order] = t
        out[i] = o.reshape(maps[i].shape)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("real"); ap.add_argument("syn"); ap.add_argument("out")
    ap.add_argument("--transform", default="log10")
    ap.add_argument("--extra", default="")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--target", default="shift")
    ap.add_argument("--noise", action="store_true", help="start from white noise (std of real)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_default_dtype(torch.float64)
    extra = [e for e in a.extra.split(",") if e]
    real_phys = fits.getdata(a.real).astype(np.float64)
    syn_phys = fits.getdata(a.syn).astype(np.float64)
    off = 0.0
    if a.transform == "log10" and real_phys.min() <= 0:
        off = -real_phys.min() + 1e-3 * (real_phys.max() - real_phys.min())
    real = fwd(real_phys, a.transform, off)
    syn = fwd(np.maximum(syn_phys, -off + 1e-12) if a.transform == "log10" else syn_phys, a.transform, off)
    c, s = real.mean(), real.std()
    real, syn = (real - c) / s, (syn - c) / s
    if a.noise:
        syn = np.random.default_rng(0).standard_normal(syn.shape)
    N, ny, nx = real.shape
    J = int(math.floor(math.log2(min(ny, nx)))) - 2
    py, px = pads(ny, nx, J)
    F, R = filters(ny + 2 * py, nx + 2 * px, J, a.L), rings(ny + 2 * py, nx + 2 * px)
    with torch.no_grad():
        pr, fam = moments(torch.tensor(real), F, R, J, a.L, extra)
        ps, _ = moments(torch.tensor(syn), F, R, J, a.L, extra)
    mr, sr = pr.mean(0), pr.std(0)
    ms, ss = ps.mean(0), ps.std(0)
    ok = (sr > 0) & torch.isfinite(sr)
    w = torch.where(ok, 1 / sr ** 2, torch.zeros_like(sr))
    fam = torch.tensor(fam)
    nf = int(fam.max()) + 1
    per = torch.stack([((fam == f) & ok).sum() for f in range(nf)])
    present = (per > 0).sum()
    w = w / (present * per[fam].clamp(min=1))
    target = torch.where(ss > 0, mr + (ps - ms) * sr / torch.where(ss > 0, ss, torch.ones_like(ss)), mr)
    if a.target == "nearest":
        d2 = ((w[None, None] * (ps[:, None] - pr[None]) ** 2)).sum(-1)
        target = pr[d2.argmin(1)]
        print("distinct real targets", len(set(d2.argmin(1).tolist())))
    elif a.target == "random":
        idx = torch.tensor(np.random.default_rng(0).integers(0, len(pr), len(ps)))
        target = pr[idx]
    elif a.target == "permutation":
        idx = torch.tensor(np.random.default_rng(0).permutation(len(pr))[:len(ps)])
        target = pr[idx]
    t0 = time.time()
    res, befores, afters = [], [], []
    for c0 in range(0, len(syn), a.chunk):
        x = torch.tensor(syn[c0:c0 + a.chunk].copy(), requires_grad=True)
        tg = target[c0:c0 + a.chunk]
        opt = torch.optim.LBFGS([x], max_iter=a.iterations, history_size=10, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            p, _ = moments(x, F, R, J, a.L, extra)
            loss = (w * (p - tg) ** 2).sum()
            loss.backward()
            return loss

        with torch.no_grad():
            p, _ = moments(x, F, R, J, a.L, extra)
            befores.append((w * (p - tg) ** 2).sum(1))
        opt.step(closure)
        with torch.no_grad():
            p, _ = moments(x, F, R, J, a.L, extra)
            afters.append((w * (p - tg) ** 2).sum(1))
        res.append(x.detach().numpy())
    before, after = torch.cat(befores), torch.cat(afters)
    dt = time.time() - t0
    print(f"extra={extra} moments={int(ok.sum())} loss before {before.mean():.4f} after {after.mean():.4f} "
          f"{dt:.1f}s", flush=True)
    out = match_quantiles(np.concatenate(res), real)
    out = inv(out * s + c, a.transform, off).astype(np.float32)
    fits.PrimaryHDU(out).writeto(a.out, overwrite=True)


if __name__ == "__main__":
    main()
