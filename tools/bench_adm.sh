#!/usr/bin/env bash
# CPU benchmark of the paper's model architectures (README "Use the paper's models", BENCHMARKS.md):
# expanse against guided-diffusion/PyTorch on the same random weights, batch 1, 256×256, both sides
# in one run. Run it on a quiet machine (no build or other work).
#
#   bash tools/bench_adm.sh [RESULTS_FILE]     (default out/bench_adm.txt)
#
# Needs target/release/expanse, a python3 with torch (PYTHON=..., default python3: a venv made from
# tools/requirements.txt, e.g. PYTHON=.venv-ref/bin/python), and guided-diffusion-sdk 1.0.0 in
# .venv-gdsdk (`.venv-ref/bin/pip install --no-deps --target .venv-gdsdk -r tools/requirements-adm.txt`;
# GUIDED_DIFFUSION=DIR to use another folder). Paths are relative to the repository root.
# The random-weight models (AFHQ-dog P2 flags, 0.37 GB; ImageNet 256² unconditional flags, 2.2 GB)
# are written into out/adm/ by tools/make_adm_fixtures.py --bench-model when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/bench_adm.txt}
py=${PYTHON:-python3}
export PYTHONPATH=${GUIDED_DIFFUSION:-.venv-gdsdk}
[ -d "$PYTHONPATH/guided_diffusion" ] || { echo "bench_adm.sh: no guided_diffusion in $PYTHONPATH: see tools/requirements-adm.txt, or set GUIDED_DIFFUSION" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
for m in afhqdog256_p2 imagenet256_uncond; do
    [ -f out/adm/$m/model.pt ] || $py tools/make_adm_fixtures.py --bench-model $m out/adm/$m
done
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    for spec in "afhqdog256_p2 1 3" "afhqdog256_p2 2 3" "imagenet256_uncond 2 2"; do
        set -- $spec
        echo "## $1 batch 1 256x256 threads $2"
        target/release/expanse --threads "$2" bench --model out/adm/$1 --batch 1 --repeats "$3" | grep -E "^model|UNet forward|peak"
        OMP_NUM_THREADS=$2 $py tools/bench_adm.py --model out/adm/$1 --batch 1 --threads "$2" --repeats "$3" 2>/dev/null | grep -E "UNet forward|peak" | sed 's/^/guided-diffusion: /'
    done
    echo "## profile afhqdog256_p2 batch 1 threads 2"
    target/release/expanse --threads 2 bench --model out/adm/afhqdog256_p2 --batch 1 --repeats 2 --profile | tail -n +3
} | tee "$out"
