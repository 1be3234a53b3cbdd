"""Rows of the WPH baseline in the format of `expanse fidelity`'s real-field table (fidelity.md,
"Classifier two-sample test and battery"), from the reports `tools/wph_baseline.sh` wrote.

    python tools/wph_table.py runs/wph_64     # one row per domain folder runs/wph_64/<domain>/

Reads <domain>/report/report.json (expanse validate) and the seconds per map and per-run setup
recorded in <domain>/<domain>.wph.fits (cards WPHSECPM, WPHSETUP, WPHTHRD). Needs only the
standard library and astropy.
"""

import json
import os
import sys

from astropy.io import fits

TARGET_C2ST, FACTOR, MEMO = 0.65, 3.0, 0.5


def tick(ok):
    return "✓" if ok else "✗"


def main():
    root = sys.argv[1]
    for domain in sorted(os.listdir(root)):
        rep = os.path.join(root, domain, "report", "report.json")
        if not os.path.exists(rep):
            continue
        r = json.load(open(rep))
        b = r["battery"]
        c = b["c2st"]
        acc, floor = c["accuracy"], c["real_halves"]
        h = fits.getheader(os.path.join(root, domain, f"{domain}.wph.fits"))
        cells = []
        chi_ok = True
        for s in b["statistics"]:
            v, f = s["chi2"]["value"], s["chi2_real_halves"] or float("nan")
            ok = v <= FACTOR * max(1.0, f)
            chi_ok &= ok
            cells.append(f"{tick(ok)} {v:.2f} ({f:.2f})")
        mem = r["memorization"]["ratio"]
        met = sum([acc["mean"] <= TARGET_C2ST, chi_ok, mem > MEMO])
        print(
            f"| {domain}: WPH (pywph), {r['n_synthetic']} maps, seed {h['WPHSEED']} | {tick(acc['mean'] <= TARGET_C2ST)} "
            f"{acc['mean']:.2f} ± {acc['std']:.2f} ({floor['mean']:.2f}) | " + " | ".join(cells)
            + f" | {tick(mem > MEMO)} {mem:.2f} | {h['WPHSECPM']:.2f} × {h['WPHTHRD']} thread(s) + {h['WPHSETUP']:.0f} s setup"
            f" | {met}/3 |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
