#!/usr/bin/env bash
# The GPU check, in one go on a machine with an NVIDIA GPU (a few minutes): build with
# `--features cuda`, run the parity fixtures on the device (tests/device_parity.rs: f32, f16,
# bf16, DDIM), time UNet forwards against PyTorch on the same GPU, and run the quickstart on the
# GPU and on the CPU. Everything it prints also goes to one results file.
#
#   bash tools/gpu_check.sh [OUT_DIR]      # default: $OUT when set (the device tool), else out/gpu_check
#
# CUDA: nvcc on PATH, or /usr/local/cuda*, or else tools/cuda_toolchain.sh (needs PyPI). The
# PyTorch side needs a python3 with torch (CUDA) and diffusers (PYTHON=...); it is skipped, saying
# so, when there is none. The random-weight benchmark models are written by
# tools/make_ddpm256_like.py with that python.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-out/gpu_check}}
mkdir -p "$out"
results=$out/gpu_check.txt
: > "$results"
exec > >(tee -a "$results") 2>&1
step() { echo; echo "## $*"; }

step "machine"
date -u +%FT%TZ
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv || { echo "no nvidia-smi: not a GPU machine"; exit 1; }
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
echo "$(nproc) cores; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"

step "CUDA toolkit"
if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        if [ -x "$d/nvcc" ]; then export PATH=$d:$PATH CUDA_HOME=${d%/bin}; break; fi
    done
fi
if ! command -v nvcc >/dev/null 2>&1; then
    # shellcheck source=/dev/null
    source tools/cuda_toolchain.sh || { echo "no CUDA toolkit here and none from PyPI"; exit 1; }
fi
nvcc --version | tail -n 2

step "build: cargo build --release --features cuda"
start=$(date +%s)
cargo build --release --features cuda 2>&1 | tail -n 3
[ "${PIPESTATUS[0]}" = 0 ] || { echo "the CUDA build failed"; exit 1; }
echo "build time: $(( $(date +%s) - start )) s"

step "parity on the device: EXPANSE_TEST_DEVICE=cuda cargo test --release --features cuda --test device_parity -- --ignored"
EXPANSE_TEST_DEVICE=cuda cargo test --release --features cuda --test device_parity -- --ignored --nocapture 2>&1 | grep -E "max \||relative|DDIM|test result|panicked|error" || true

py=${PYTHON:-python3}
torch_ok=0
if $py -c "import torch, diffusers; assert torch.cuda.is_available()" 2>/dev/null; then
    torch_ok=1
    [ -d out/unet64-attn ] || $py tools/make_ddpm256_like.py --arch unet64 --out out/unet64-attn >/dev/null
    [ -d out/ddpm256-like ] || $py tools/make_ddpm256_like.py --out out/ddpm256-like >/dev/null
else
    echo "(no python3 with CUDA torch and diffusers: the PyTorch side and the two larger models are skipped)"
fi

step "UNet forward on the GPU: expanse bench --device cuda [--dtype] against diffusers on the same GPU"
for spec in "data/models/expanse-natural-32 8" "data/models/expanse-natural-32 64" "out/unet64-attn 4" "out/unet64-attn 32" "out/ddpm256-like 1" "out/ddpm256-like 8"; do
    set -- $spec
    [ -d "$1" ] || continue
    echo "### $1 batch $2"
    for dtype in f32 f16 bf16; do
        target/release/expanse bench --model "$1" --batch "$2" --device cuda --dtype "$dtype" --repeats 20 2>&1 | grep -E "UNet forward|error" | sed "s/^/expanse $dtype: /"
    done
    if [ $torch_ok = 1 ]; then
        $py tools/bench_diffusers.py --model "$1" --batch "$2" --device cuda --repeats 20 2>/dev/null | grep -E "UNet forward|device memory" | sed 's/^/diffusers f32: /'
    fi
done

step "quickstart: configs/quickstart.toml on the GPU and on the CPU"
sed 's/^device = "cpu"/device = "cuda"/' configs/quickstart.toml > configs/.quickstart_gpu.toml
for run in "configs/.quickstart_gpu.toml gpu" "configs/quickstart.toml cpu"; do
    set -- $run
    rm -rf "$out/quickstart_$2"
    start=$(date +%s%N)
    target/release/expanse run "$1" --out "$out/quickstart_$2" >/dev/null 2>&1 || echo "quickstart on $2 failed"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "quickstart on $2: $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s wall clock"
done
rm -f configs/.quickstart_gpu.toml
grep -h "battery\|^| clouds" "$out"/quickstart_*/summary.md 2>/dev/null | head -n 4

echo
echo "results in $results"
