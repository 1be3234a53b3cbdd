#!/usr/bin/env bash
# The cost curve of BENCHMARKS.md: wall-clock seconds of every stage of `expanse run` and the
# run's peak resident memory, against the number of maps (16, 256, 1,024, 4,096 maps of 32²) and
# against the map size (16 maps of 32², 64², 128², 256²), on simulated lognormal clouds
# (`expanse simulate`), with the shipped model and the run defaults (5-point grid to t0 = 50
# since 2026-12-07, 30 points to t0 = 300 before; empirical prior, refinement on, the validation
# battery): as many synthetic maps as real ones.
#
#   bash tools/cost_curve.sh OUT_DIR [THREADS]        (CASES="16 32,16 64" runs only those;
#                                                      DTYPE=bf16 sets model.dtype)
#
# Writes OUT_DIR/<case>/ (the runs) and prints one Markdown table row per run. Needs the release
# binary (`cargo build --release`; EXPANSE=... to use another) and python3 (standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(realpath -m "$1")
threads=${2:-2}
expanse=$(realpath "${EXPANSE:-target/release/expanse}")
model=$(realpath data/models/expanse-natural-32)
dtype=${DTYPE:-f32}
mkdir -p "$out"

cases=()
if [ -n "${CASES:-}" ]; then
    # e.g. CASES="16 32,16 64": maps and size of each run, comma-separated.
    IFS=, read -r -a cases <<< "$CASES"
else
    for n in 16 256 1024 4096; do cases+=("$n 32"); done
    for s in 64 128 256; do cases+=("16 $s"); done
fi

echo "| maps | size | ingest | invert | fit | sample | decode | validate | whole run | UNet evaluations | peak MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for c in "${cases[@]}"; do
    set -- $c
    n=$1 size=$2 dir="$out/n${1}_s${2}"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$expanse" simulate --count "$n" --size "$size" --seed 7 --out "$dir/maps.fits" >/dev/null
    cat > "$dir/config.toml" <<TOML
[run]
name = "cost_n${n}_s${size}"
[model]
path = "$model"
dtype = "$dtype"
[sampling]
count = $n
budget = $((n * 100))
[[domain]]
name = "clouds"
inputs = ["maps.fits"]
transform = "log10"
TOML
    start=$(date +%s.%N)
    "$expanse" --threads "$threads" run "$dir/config.toml" --out "$dir/run" >"$dir/run.out" 2>&1
    end=$(date +%s.%N)
    python3 - "$dir/run/manifest.json" "$n" "$size" "$start" "$end" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
n, size, start, end = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
st = m["stages"]
sec = lambda k: f"{st[k]['seconds']:.1f}"
evals = sum(int(v["counts"].get("unet_evaluations", 0)) for v in st.values())
print(f"| {n} | {size}² | {sec('ingest/clouds')} | {sec('invert/clouds')} | {sec('fit')} | {sec('sample/clouds')} "
      f"| {sec('decode/clouds')} | {sec('validate/clouds')} | {end - start:.1f} | {evals} | {m['peak_memory_mib']:.0f} |")
PY
done
