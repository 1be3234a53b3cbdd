#!/usr/bin/env bash
# The three commands of a run that hold every map, measured alone at the map size of the target
# (256² by default), against the number of maps: `expanse ingest` of simulated lognormal clouds
# into a three-channel model-space stack (the shape of the shipped model's latents), `expanse fit`
# (an empirical prior and its diagnostics) on that stack, and `expanse validate` (the whole battery)
# of one simulated set against another. No model runs: at 256² inverting and decoding take seconds
# a map, and neither changes what these three hold.
#
#   bash tools/memory_parts.sh OUT_DIR [SIZE] [COUNTS...]     (defaults: 256, 128 512)
#
# Prints one Markdown table row per count: the latent values (N × 3 × SIZE²) and the peak MiB
# (/usr/bin/time -v) and seconds of each command. Needs the release binary (`cargo build --release`;
# EXPANSE=... to use another), GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(realpath -m "$1")
size=${2:-256}
if [ $# -ge 3 ]; then counts=("${@:3}"); else counts=(128 512); fi
expanse=$(realpath "${EXPANSE:-target/release/expanse}")
threads=${THREADS:-2}
mkdir -p "$out"

# shellcheck source=tools/gnu_time.sh
source tools/gnu_time.sh

echo "| maps | size | latent values | expanse ingest | expanse fit | expanse validate |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in "${counts[@]}"; do
    dir="$out/n${n}_s${size}"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$expanse" simulate --count "$n" --size "$size" --seed 7 --out "$dir/real.fits" >/dev/null
    "$expanse" simulate --count "$n" --size "$size" --seed 8 --out "$dir/synthetic.fits" >/dev/null
    /usr/bin/time -v -o "$dir/ingest.time" "$expanse" --threads "$threads" ingest "$dir/real.fits" \
        --transform log10 --channels 3 --out "$dir/stack.h5" >"$dir/ingest.out" 2>&1
    /usr/bin/time -v -o "$dir/fit.time" "$expanse" --threads "$threads" fit --latents "$dir/stack.h5" \
        --out "$dir/fit/prior.h5" >"$dir/fit.out" 2>&1
    /usr/bin/time -v -o "$dir/validate.time" "$expanse" --threads "$threads" validate --real "$dir/real.fits" \
        --synthetic "$dir/synthetic.fits" --out "$dir/validate" --apodize tukey:0.3 >"$dir/validate.out" 2>&1
    row="| $n | ${size}² | $((n * 3 * size * size)) |"
    for part in ingest fit validate; do
        row="$row $(peak "$dir/$part.time") MiB, $(wall "$dir/$part.time") s |"
    done
    echo "$row"
done
