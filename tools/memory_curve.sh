#!/usr/bin/env bash
# The memory curve of BENCHMARKS.md: peak resident memory of each part of a run, run as the jobs of
# `expanse slurm` run it (ingest; one inversion shard; fit, which assembles the inversion and
# samples; one decoding shard; validate, which assembles the decoding, refines and validates),
# against the number of maps, on simulated lognormal clouds (`expanse simulate`) with the shipped
# model. The grid is cut to 2 points and the refinement to 1 iteration: neither changes what is
# held in memory, only how long it takes.
#
#   bash tools/memory_curve.sh OUT_DIR [SIZE] [COUNTS...]     (defaults: 64, 512 2048)
#
# Prints one Markdown table row per count: peak MiB of each part (/usr/bin/time -v) and seconds.
# Needs the release binary (`cargo build --release`; EXPANSE=... to use another), GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(realpath -m "$1")
size=${2:-64}
if [ $# -ge 3 ]; then counts=("${@:3}"); else counts=(512 2048); fi
expanse=$(realpath "${EXPANSE:-target/release/expanse}")
model=$(realpath data/models/expanse-natural-32)
threads=${THREADS:-2}
mkdir -p "$out"

# shellcheck source=tools/gnu_time.sh
source tools/gnu_time.sh

echo "| maps | size | ingest | invert shard | fit | decode shard | validate | MiB per map in model space |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for n in "${counts[@]}"; do
    dir="$out/n${n}_s${size}"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$expanse" simulate --count "$n" --size "$size" --seed 7 --out "$dir/maps.fits" >/dev/null
    cat > "$dir/config.toml" <<TOML
[run]
name = "memory_n${n}_s${size}"
[model]
path = "$model"
[inversion]
steps = 2
[sampling]
count = $n
budget = $((n * 100))
[refinement]
iterations = 1
[[domain]]
name = "clouds"
inputs = ["maps.fits"]
transform = "log10"
TOML
    row="| $n | ${size}² |"
    for part in "ingest" "invert --shard 0/1" "fit --shards 1" "decode --shard 0/1" "validate --shards 1"; do
        name=${part%% *}
        # shellcheck disable=SC2086
        /usr/bin/time -v -o "$dir/$name.time" "$expanse" --threads "$threads" run "$dir/config.toml" \
            --out "$dir/run" --resume --stage $part >"$dir/$name.out" 2>&1
        row="$row $(peak "$dir/$name.time") MiB, $(wall "$dir/$name.time") s |"
    done
    echo "$row $(awk -v s="$size" 'BEGIN {printf "%.3f", 3 * s * s * 4 / 1048576}') |"
done
