#!/usr/bin/env bash
# Time each statistic of the validation battery on 256² maps, expanse against the reference
# implementation it is tested against, one thread each, in one go (BENCHMARKS.md).
#
#   bash tools/bench_battery.sh            # from the repo root, after `cargo build --release`
#
# Python environments, one venv each (they need different numpy versions), by default in the
# repository root; each requirements file's header says how to make it:
#   MORPH_PY   quantimpy 0.2.6 + lenstools 1.2   default .venv-morphology/bin/python  (tools/requirements-morphology.txt)
#   SCAT_PY    kymatio 0.3.0                     default .venv-scattering/bin/python  (tools/requirements-scattering.txt)
#   TURB_PY    turbustat 1.3                     default .venv-turbustat/bin/python   (tools/requirements-turbustat.txt)
# Run it on a quiet machine: contention skews single-threaded Python and Rust alike.
set -euo pipefail
cd "$(dirname "$0")/.."
MORPH_PY=${MORPH_PY:-.venv-morphology/bin/python}
SCAT_PY=${SCAT_PY:-.venv-scattering/bin/python}
TURB_PY=${TURB_PY:-.venv-turbustat/bin/python}
for py in "$MORPH_PY" "$SCAT_PY" "$TURB_PY"; do
    command -v "$py" >/dev/null 2>&1 || { echo "bench_battery.sh: no python at $py: make the venvs as tools/requirements-{morphology,scattering,turbustat}.txt say, or set MORPH_PY, SCAT_PY and TURB_PY" >&2; exit 1; }
done
N=${N:-8}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# N lognormal 256² fields (power-law spectrum, slope -3), one stack.
"$SCAT_PY" - "$dir/maps.npy" "$N" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
n, count = 256, int(sys.argv[2])
k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
k[0, 0] = 1.0
maps = []
for _ in range(count):
    f = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * k ** -1.5).real
    maps.append(np.exp(f / f.std()))
np.save(sys.argv[1], np.array(maps))
PY

echo "statistic | expanse ms/map | reference ms/map | reference"
expanse_ms() {
    local start end
    start=$(date +%s%N)
    ./target/release/expanse --threads 1 "$@" "$dir/maps.npy" --out "$dir/out.csv" >/dev/null
    end=$(date +%s%N)
    echo "scale=1; ($end - $start) / 1000000 / $N" | bc
}

ref=$("$MORPH_PY" - "$dir/maps.npy" <<'PY'
import sys, time, numpy as np
sys.path.insert(0, "tools")
import make_morphology_fixtures as m
maps = np.load(sys.argv[1])
t = time.perf_counter()
for z in maps:
    m.minkowski_reference(z, np.linspace(-3, 3, 25))
mf = (time.perf_counter() - t) / len(maps) * 1e3
t = time.perf_counter()
for z in maps:
    m.peaks_lenstools(*m.standardize(z), np.linspace(-5, 5, 41))
print(f"{mf:.1f} {(time.perf_counter() - t) / len(maps) * 1e3:.1f}")
PY
)
echo "minkowski (25 thresholds) | $(expanse_ms minkowski) | ${ref% *} | quantimpy 0.2.6"
echo "peaks (40 bins) | $(expanse_ms peaks) | ${ref#* } | lenstools 1.2 peakCount"

j=$(( $(echo "l(256)/l(2)" | bc -l | cut -d. -f1) - 3 ))
ref=$("$SCAT_PY" - "$dir/maps.npy" "$j" <<'PY'
import sys, time, numpy as np
from kymatio.numpy import Scattering2D
maps = np.load(sys.argv[1])
s = Scattering2D(int(sys.argv[2]), maps.shape[1:], L=8, max_order=2)
t = time.perf_counter()
for z in maps:
    s(z)
print(f"{(time.perf_counter() - t) / len(maps) * 1e3:.1f}")
PY
)
echo "scattering (J=$j, L=8) | $(expanse_ms scattering) | $ref | kymatio 0.3.0 (filters built beforehand)"

ref=$("$TURB_PY" - "$dir/maps.npy" <<'PY' 2>/dev/null
import sys, time, warnings, numpy as np
warnings.filterwarnings("ignore")
from astropy.io import fits
from turbustat.statistics import Bispectrum
maps = np.load(sys.argv[1])[:2]
t = time.perf_counter()
for z in maps:
    Bispectrum(fits.PrimaryHDU(z)).compute_bispectrum(nsamples=100, seed=1000)
print(f"{(time.perf_counter() - t) / len(maps) * 1e3:.1f}")
PY
)
echo "bispectrum (100 samples) | $(expanse_ms bispectrum) | $ref | turbustat 1.3 (2 maps)"
