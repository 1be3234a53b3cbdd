#!/usr/bin/env bash
# CPU benchmark of BENCHMARKS.md: expanse (its kernels, and candle's own operations) against
# diffusers/PyTorch on the same weights, batch, map size and thread count, both sides in one run.
# Run it on a quiet machine (no build or other work: contention skews PyTorch far more).
#
#   bash tools/bench_cpu.sh [RESULTS_FILE]     (default out/bench_cpu.txt)
#
# Needs target/release/expanse, a python3 with torch and diffusers (PYTHON=..., default python3: a
# venv made from tools/requirements.txt, e.g. PYTHON=.venv-ref/bin/python), and the random-weight
# models from tools/make_ddpm256_like.py (written here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/bench_cpu.txt}
py=${PYTHON:-python3}
mkdir -p "$(dirname "$out")"
[ -d out/unet64-attn ] || $py tools/make_ddpm256_like.py --arch unet64 --out out/unet64-attn
[ -d out/ddpm256-like ] || $py tools/make_ddpm256_like.py --out out/ddpm256-like
# model, batch, repeats[, map side: the shipped 32² model also at the sizes users run it at];
# SPECS="model batch repeats [side];..." times only those; BF16=1 adds bf16 rows (expanse's
# `--dtype bf16`, diffusers in bfloat16), CANDLE= (empty) drops the rows of candle's own operations.
specs=("data/models/expanse-natural-32 8 10" "out/unet64-attn 4 10" "out/ddpm256-like 1 3"
    "data/models/expanse-natural-32 4 5 128" "data/models/expanse-natural-32 1 3 256")
[ -n "${SPECS:-}" ] && IFS=';' read -r -a specs <<< "$SPECS"
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    for spec in "${specs[@]}"; do
        set -- $spec
        size=()
        [ -n "${4:-}" ] && size=(--size "$4")
        for t in 1 2; do
            echo "## $1 batch $2 ${4:+size $4 }threads $t"
            target/release/expanse --threads "$t" bench --model "$1" --batch "$2" --repeats "$3" "${size[@]}" | grep -E "UNet forward|peak"
            [ -n "${CANDLE-1}" ] && target/release/expanse --threads "$t" bench --model "$1" --batch "$2" --repeats "$3" "${size[@]}" --kernels candle | grep -E "UNet forward|peak" | sed 's/^/candle ops: /'
            OMP_NUM_THREADS=$t $py tools/bench_diffusers.py --model "$1" --batch "$2" --threads "$t" --repeats "$3" "${size[@]}" 2>/dev/null | grep -E "UNet forward|peak" | sed 's/^/diffusers: /'
            if [ -n "${BF16:-}" ]; then
                target/release/expanse --threads "$t" bench --model "$1" --batch "$2" --repeats "$3" "${size[@]}" --dtype bf16 | grep -E "UNet forward|peak" | sed 's/^/bf16: /'
                OMP_NUM_THREADS=$t $py tools/bench_diffusers.py --model "$1" --batch "$2" --threads "$t" --repeats "$3" "${size[@]}" --dtype bf16 2>/dev/null | grep -E "UNet forward|peak" | sed 's/^/diffusers bf16: /'
            fi
        done
    done
    for spec in "data/models/expanse-natural-32 8" "out/unet64-attn 4" "out/ddpm256-like 1"; do
        set -- $spec
        for dtype in f32 ${BF16:+bf16}; do
            echo "## profile $1 batch $2 threads 2 $dtype"
            target/release/expanse --threads 2 bench --model "$1" --batch "$2" --repeats 3 --profile --dtype "$dtype" | tail -n +3
        done
    done
} | tee "$out"
