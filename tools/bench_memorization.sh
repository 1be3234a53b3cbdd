#!/usr/bin/env bash
# The memorization check (nearest real map of every synthetic and every real map) before and after
# it moved to matrix products: `expanse validate --statistics none` (spectra, PDFs and the
# memorization check, no battery) of one simulated set against another, run by two binaries on
# the same files, and their reports compared.
#
#   EXPANSE_BEFORE=/path/to/old/expanse bash tools/bench_memorization.sh OUT_DIR [MAPS:SIZE...]
#       (default cases: 1024:64 256:256 2048:128)
#
# Prints one Markdown table row per case: wall seconds and peak MiB (/usr/bin/time -v) of each
# binary, and whether the two reports are equal (report.json without the paths it wrote).
# EXPANSE: the binary after (default target/release/expanse); THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ -n "${EXPANSE_BEFORE:-}" ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=$(realpath -m "$1")
if [ $# -ge 2 ]; then cases=("${@:2}"); else cases=(1024:64 256:256 2048:128); fi
after=$(realpath "${EXPANSE:-target/release/expanse}")
before=$(realpath "$EXPANSE_BEFORE")
threads=${THREADS:-2}
mkdir -p "$out"

# shellcheck source=tools/gnu_time.sh
source tools/gnu_time.sh

echo "| maps | size | before | after | same report |"
echo "| --- | --- | --- | --- | --- |"
for case in "${cases[@]}"; do
    n=${case%%:*}
    size=${case##*:}
    dir="$out/n${n}_s${size}"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$after" simulate --count "$n" --size "$size" --seed 7 --out "$dir/real.fits" >/dev/null
    "$after" simulate --count "$n" --size "$size" --seed 8 --out "$dir/synthetic.fits" >/dev/null
    for which in before after; do
        exe=$before
        [ "$which" = after ] && exe=$after
        /usr/bin/time -v -o "$dir/$which.time" "$exe" --threads "$threads" validate --real "$dir/real.fits" \
            --synthetic "$dir/synthetic.fits" --out "$dir/$which" --statistics none >"$dir/$which.out" 2>&1
    done
    same=$(python3 - "$dir/before/report.json" "$dir/after/report.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for r in (a, b):
    r.pop("written", None)
print("yes" if a == b else "NO")
EOF
)
    echo "| $n | ${size}² | $(wall "$dir/before.time") s, $(peak "$dir/before.time") MiB |" \
        "$(wall "$dir/after.time") s, $(peak "$dir/after.time") MiB | $same |"
done
