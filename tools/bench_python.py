"""Calling expanse through Python against the command line: the quickstart's inversion (16 maps of
32x32, 3 channels, 30-point grid up to t0 = 300, the shipped model), each whole process timed
(start, model load, inversion, writing or returning the latents), alternating, same threads.

    python tools/bench_python.py --exe target/release/expanse [--repeats 7] [--threads 2]

Run it with the Python of a venv where `pip install ./python` (release build) was done. Prints
the median seconds of each and the ratio; BENCHMARKS.md quotes it."""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data/models/expanse-natural-32"

PY = """
import sys, time, numpy, expanse
expanse.set_threads(int(sys.argv[3]))
model, maps = expanse.Model(sys.argv[1]), numpy.load(sys.argv[2])
t = time.perf_counter()
z = model.invert(maps, steps=30, t0=300)
print(f"invert {time.perf_counter() - t:.4f} s")
numpy.save(sys.argv[4], z)
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--exe", default=str(ROOT / "target/release/expanse"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="expanse-bench-python-"))
    stack = tmp / "stack.npy"
    subprocess.run([a.exe, "ingest", ROOT / "data/samples/clouds_64.fits", "--transform", "log10", "--size", "32",
                    "--max-maps", "16", "--channels", "3", "--out", stack], check=True, capture_output=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    cli = [a.exe, "--threads", str(a.threads), "invert", "--model", MODEL, "--input", stack, "--steps", "30",
           "--t0", "300", "--out", tmp / "z_cli.npy"]
    py = [sys.executable, "-c", PY, MODEL, stack, str(a.threads), tmp / "z_py.npy"]
    times = {"cli": [], "python": []}
    inner = {"cli": [], "python": []}
    for _ in range(a.repeats + 1):
        for name, cmd in [("cli", cli), ("python", py)]:
            t = time.perf_counter()
            out = subprocess.run(cmd, check=True, capture_output=True, env=env, text=True).stdout
            times[name].append(time.perf_counter() - t)
            # The inversion alone: the CLI prints "(... UNet evaluations per map, 1.7 s)".
            seconds = re.search(r"([0-9.]+) s\)" if name == "cli" else r"invert ([0-9.]+) s", out).group(1)
            inner[name].append(float(seconds))
    import numpy

    same = numpy.load(tmp / "z_cli.npy").tobytes() == numpy.load(tmp / "z_py.npy").tobytes()
    cli_s, py_s = (statistics.median(times[k][1:]) for k in ("cli", "python"))
    print(f"quickstart inversion, {a.threads} thread(s), median of {a.repeats} after one warm-up:")
    print(f"  expanse invert (CLI process)   {cli_s:.3f} s")
    print(f"  expanse.Model.invert (Python)  {py_s:.3f} s")
    print(f"  Python / CLI = {py_s / cli_s:.3f}; latents byte-equal: {same}")
    cli_i, py_i = (statistics.median(inner[k][1:]) for k in ("cli", "python"))
    print(f"the inversion alone: CLI {cli_i:.3f} s (as it prints it), Python {py_i:.3f} s (the call), "
          f"Python / CLI = {py_i / cli_i:.3f}")


if __name__ == "__main__":
    main()
