#!/usr/bin/env bash
# Runs the quickstart and two-domain configs and copies their figures into figures/, and redraws
# the sample-data previews.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
rm -rf out/quickstart out/two_domains
./target/release/expanse run configs/quickstart.toml --out out/quickstart
./target/release/expanse run configs/two_domains.toml --out out/two_domains
for f in maps power_spectra pdfs battery; do
    cp out/quickstart/report/clouds/$f.png figures/quickstart_$f.png
    cp out/quickstart/report/clouds/$f.svg figures/quickstart_$f.svg
done
cp out/two_domains/prior/prior.diagnostics.png figures/two_domains_latents.png
cp out/two_domains/prior/prior.diagnostics.svg figures/two_domains_latents.svg
cp out/two_domains/report/hubble/maps.png figures/two_domains_hubble_maps.png
cp out/two_domains/report/hubble/maps.svg figures/two_domains_hubble_maps.svg
# The sample-data previews of the README.
# Drawn in each domain's normalization, as the runs draw them (figures/README.md).
./target/release/expanse ingest data/samples/clouds_64.fits --transform log10 --out out/preview_clouds_64.h5 \
    --preview figures/samples_clouds_64
./target/release/expanse ingest data/samples/hubble_xdf_64.fits --transform asinh --out out/preview_hubble_xdf_64.h5 \
    --preview figures/samples_hubble_xdf_64
