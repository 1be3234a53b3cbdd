"""What the classifier two-sample test sees: its accuracy on all statistics and on each statistic
alone, per domain and variant of an `expanse fidelity` benchmark (FIDELITY.md, "What tells them
apart"), averaged over the seeds that finished; optionally the WPH baseline's reports.

    python tools/c2st_by_statistic.py runs/fidelity_real_64 --wph runs/wph_64

Reads <bench>/runs/<variant>/seed<k>/report/<domain>/report.json (battery.c2st, written by every
run's validation) and <wph>/<domain>/report/report.json (tools/wph_baseline.sh). Standard library
only.
"""

import argparse
import json
import os
import statistics

NAMES = {
    "power_spectrum": "power spectrum",
    "pdf": "PDF",
    "minkowski": "Minkowski",
    "peaks": "peaks",
    "bispectrum": "bispectrum",
    "scattering": "scattering",
}


def c2st_of(report_path):
    """(overall, {statistic: accuracy}) of one report, or None when the C2ST was not run."""
    c = json.load(open(report_path)).get("battery", {}).get("c2st")
    if not c or not c.get("accuracy"):
        return None
    per = {
        s["statistic"]: s["accuracy"]["mean"]
        for s in c.get("per_statistic", [])
        if s.get("accuracy")
    }
    return c["accuracy"]["mean"], per, c["real_halves"]["mean"] if c.get("real_halves") else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", help="benchmark folder (expanse fidelity --out)")
    ap.add_argument("--wph", help="folder of tools/wph_baseline.sh outputs, one subfolder per domain")
    a = ap.parse_args()

    rows = {}  # (domain, variant) -> list of (overall, per, halves)
    runs = os.path.join(a.bench, "runs")
    for variant in sorted(os.listdir(runs)):
        for seed in sorted(os.listdir(os.path.join(runs, variant))):
            rep_root = os.path.join(runs, variant, seed, "report")
            if not os.path.isdir(rep_root):
                continue
            for domain in sorted(os.listdir(rep_root)):
                path = os.path.join(rep_root, domain, "report.json")
                if os.path.exists(path) and (got := c2st_of(path)):
                    rows.setdefault((domain, variant), []).append(got)
    if a.wph:
        for domain in sorted(os.listdir(a.wph)):
            path = os.path.join(a.wph, domain, "report", "report.json")
            if os.path.exists(path) and (got := c2st_of(path)):
                rows.setdefault((domain, "WPH (pywph)"), []).append(got)

    stats = [s for s in NAMES if any(s in p for runs_ in rows.values() for _, p, _ in runs_)]
    head = ["domain", "variant", "seeds", "all statistics (real halves)"] + [NAMES[s] for s in stats]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (domain, variant), got in sorted(rows.items()):
        overall = statistics.mean(g[0] for g in got)
        halves = [g[2] for g in got if g[2] is not None]
        cells = [domain, variant, str(len(got))]
        cells.append(f"{overall:.2f}" + (f" ({statistics.mean(halves):.2f})" if halves else ""))
        for s in stats:
            vals = [g[1][s] for g in got if s in g[1]]
            cells.append(f"{statistics.mean(vals):.2f}" if vals else "–")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
