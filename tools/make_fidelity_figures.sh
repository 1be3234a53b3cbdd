#!/usr/bin/env bash
# Runs (or resumes) the fidelity benchmark and its held-out check, then copies the real-vs-synthetic
# map grids of the paper's variant and of the defaults (seed 0) into figures/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
./target/release/expanse fidelity configs/fidelity.toml --out runs/fidelity
./target/release/expanse fidelity configs/fidelity_heldout.toml --out runs/fidelity_heldout
for d in clouds hubble powerbox aniso; do
    cp runs/fidelity/runs/paper/seed0/report/$d/maps.png figures/fidelity_${d}_paper.png
    cp runs/fidelity/runs/empirical-t300/seed0/report/$d/maps.png figures/fidelity_${d}_default.png
done
for d in gauss_flat exp_contrast; do
    cp runs/fidelity_heldout/runs/paper/seed0/report/$d/maps.png figures/fidelity_heldout_${d}_paper.png
    cp runs/fidelity_heldout/runs/default/seed0/report/$d/maps.png figures/fidelity_heldout_${d}_default.png
done
