#!/usr/bin/env python3
"""Seconds per synthetic map against the map size: expanse's whole run with the shipped model
(every stage of `tools/cost_curve.sh` runs, read from their manifests) beside the WPH syntheses of
`tools/wph_synthesis.py` (their FITS headers), both as core-seconds (wall-clock seconds times the
threads used), so that runs on different thread counts compare. BENCHMARKS.md, "Cost curve".

    python tools/make_cost_figure.py --runs runs/cost_curve_f32 --runs-bf16 runs/cost_curve_bf16 \
        --wph runs/wph_64 --out figures/cost_per_map.png

Needs numpy, matplotlib and astropy (tools/requirements-figures.txt).
"""

import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from astropy.io import fits  # noqa: E402


def expanse_points(folder):
    """(side, core-seconds per synthetic map, maps, threads) of every run below `folder`."""
    points = []
    for manifest in sorted(pathlib.Path(folder).glob("*/run/manifest.json")):
        m = json.loads(manifest.read_text())
        seconds = sum(stage["seconds"] for stage in m["stages"].values())
        decode = [s for name, s in m["stages"].items() if name.startswith("decode/")]
        maps = sum(s["counts"]["maps"] for s in decode)
        stack = fits.getdata(manifest.parent / "samples" / "clouds.fits")
        side = stack.shape[-1]
        points.append((side, seconds * m["threads"] / maps, maps, m["threads"]))
    if not points:
        sys.exit(f"{folder}: no */run/manifest.json (run tools/cost_curve.sh first)")
    return sorted(points)


def wph_points(folder):
    """(side, core-seconds per map without the one-off setup, domain) of every WPH synthesis."""
    points = []
    for path in sorted(pathlib.Path(folder).glob("*/*.wph.fits")):
        header = fits.getheader(path)
        side = header["NAXIS1"]
        points.append((side, header["WPHSECPM"] * header["WPHTHRD"], path.parent.name))
    return points


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="a tools/cost_curve.sh output folder (f32)")
    p.add_argument("--runs-bf16", help="the same in bf16 (DTYPE=bf16 tools/cost_curve.sh)")
    p.add_argument("--wph", help="a folder of tools/wph_synthesis.py outputs (<domain>/<domain>.wph.fits)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    ours = expanse_points(a.runs)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    sides = [s for s, *_ in ours]
    ax.plot(sides, [c for _, c, *_ in ours], "o-", label="expanse defaults, whole run (f32)")
    for side, cost, maps, threads in ours:
        ax.annotate(f"{cost:.2g}", (side, cost), textcoords="offset points", xytext=(4, -12), fontsize=8)
    bf16 = expanse_points(a.runs_bf16) if a.runs_bf16 else []
    if bf16:
        ax.plot([s for s, *_ in bf16], [c for _, c, *_ in bf16], "^--", color="C2",
                label="expanse defaults, whole run (bf16 UNet)")
        for side, cost, maps, threads in bf16:
            ax.annotate(f"{cost:.2g}", (side, cost), textcoords="offset points", xytext=(-22, 6), fontsize=8,
                        color="C2")
    if a.wph:
        wph = wph_points(a.wph)
        if wph:
            domains = ", ".join(sorted({d for *_, d in wph}))
            ax.plot([s for s, *_ in wph], [c for _, c, _ in wph], "s", color="C3",
                    label=f"WPH synthesis (pywph; {domains}), setup not counted")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sides)
    ax.set_xticklabels([f"{s}²" for s in sides])
    ax.set_xlabel("map side")
    ax.set_ylabel("core-seconds per synthetic map")
    ax.set_title(f"Cost per synthetic map (expanse: {ours[0][2]} maps a run, {ours[0][3]} threads)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = pathlib.Path(a.out)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=150)
    tmp.replace(out)
    for side, cost, maps, threads in ours:
        print(f"expanse {side}²: {cost:.3f} core-s per map ({maps} maps, {threads} threads)")
    for side, cost, maps, threads in bf16:
        print(f"expanse bf16 {side}²: {cost:.3f} core-s per map ({maps} maps, {threads} threads)")
    for side, cost, domain in wph_points(a.wph) if a.wph else []:
        print(f"WPH {domain} {side}²: {cost:.3f} core-s per map")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
