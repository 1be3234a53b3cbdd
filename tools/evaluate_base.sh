#!/usr/bin/env bash
# Evidence that the shipped base model is a working DDPM (figures/base_model.png and the numbers
# in its MODEL_CARD.md): DDIM samples from N(0, I), and the reconstruction error of unseen maps
# (Hubble cut-outs, simulated clouds) by invert → generate at 50 and 100 steps.
#
#   bash tools/evaluate_base.sh [MODEL_DIR] [OUT_DIR]
#
# Needs a release build of expanse, numpy, and for the figure torch + diffusers + matplotlib + h5py
# (the training environment: PYTHON=..., default python3; a venv made from tools/requirements.txt,
# e.g. PYTHON=.venv-ref/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:-data/models/expanse-natural-32}
OUT=${2:-out/base-eval}
PY=${PYTHON:-python3}
E=target/release/expanse
cargo build --release --quiet
mkdir -p "$OUT"

# 16 samples from the model's own prior: x_T ~ N(0, I) at level 999, 100-point grid.
"$PY" -c "import numpy as np; np.save('$OUT/noise.npy', np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype('float32'))"
"$E" generate --model "$M" --latents "$OUT/noise.npy" --steps 100 --t0 999 --batch 16 --out "$OUT/samples.npy"
# The same, with x̂₀ clipped to [-1, 1] at every step (diffusers' clip_sample=True).
"$E" generate --model "$M" --latents "$OUT/noise.npy" --steps 100 --t0 999 --batch 16 --clip 1 --out "$OUT/samples_clip1.npy"

# Unseen domains at the model's 32×32, 3 channels (each map copied into R, G and B).
"$E" ingest data/samples/hubble_xdf_64.fits --transform asinh --size 32 --channels 3 --out "$OUT/hubble.h5"
"$E" ingest data/samples/clouds_64.fits --transform log10 --size 32 --channels 3 --out "$OUT/clouds.h5"
for domain in hubble clouds; do
  for steps in 50 100; do
    "$E" reconstruct --model "$M" --input "$OUT/$domain.h5" --steps "$steps" --t0 900 --batch 32 \
      --out "$OUT/rec_${domain}_${steps}.npy" --report "$OUT/rec_${domain}_${steps}.json" | tail -2
  done
done

"$PY" tools/make_base_figure.py --model "$M" --eval "$OUT" --out figures/base_model.png
