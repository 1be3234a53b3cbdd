#!/usr/bin/env bash
# Few-shot baseline of the fidelity benchmark: WPH microcanonical synthesis (pywph 1.1.3, see
# tools/wph_synthesis.py) of one domain of an `expanse fidelity` run, then `expanse validate` of
# the syntheses against the same real maps, for a side-by-side with expanse's own report.
#
#   bash tools/wph_baseline.sh RUN_DIR DOMAIN TRANSFORM COUNT SEED OUT_DIR [-- EXTRA...]
#
#   RUN_DIR    one run of `expanse fidelity`: <bench_out>/runs/<variant>/seed<k>
#              (the real maps are read from RUN_DIR/stacks/DOMAIN.real.fits)
#   DOMAIN     domain name, e.g. mhd_I
#   TRANSFORM  log10, linear or asinh: the domain's transform (the maps are synthesized there)
#   COUNT      number of synthetic maps
#   SEED       seed of the initial white noises
#   OUT_DIR    receives DOMAIN.wph.fits, DOMAIN.wph.log and report/ (expanse validate)
#   EXTRA      passed on to tools/wph_synthesis.py (--iterations K, --threads T, --softening X, ...)
#
# e.g. bash tools/wph_baseline.sh out/fidelity/runs/default/seed0 mhd_I log10 64 0 out/wph/mhd_I
#
# Python: $WPH_PY (default .venv-wph/bin/python). Make that venv, from the repository root:
#   python3 -m venv .venv-wph && .venv-wph/bin/pip install -r tools/requirements-wph.txt
# The expanse binary: $EXPANSE (default target/release/expanse; `cargo build --release`).
# Runs on the CPU; WPH_THREADS (default 2) sets the torch threads unless EXTRA has --threads.
# VALIDATE_ARGS (default "--apodize tukey:0.3", as the benchmark configs' [validation]) go to
# expanse validate, so that the report compares like the benchmark's own.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 6 ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
run_dir=$1 domain=$2 transform=$3 count=$4 seed=$5 out_dir=$6
shift 6
[ "${1:-}" = "--" ] && shift
py=${WPH_PY:-.venv-wph/bin/python}
expanse=${EXPANSE:-target/release/expanse}

real="$run_dir/stacks/$domain.real.fits"
[ -f "$real" ] || { echo "no real maps at $real" >&2; exit 1; }
[ -x "$expanse" ] || { echo "no expanse binary at $expanse (cargo build --release, or EXPANSE=...)" >&2; exit 1; }
command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || { echo "no python at $py (see the header: WPH_PY)" >&2; exit 1; }

threads=()
case " $* " in *" --threads"*) ;; *) threads=(--threads "${WPH_THREADS:-2}") ;; esac

mkdir -p "$out_dir"
syn="$out_dir/$domain.wph.fits"
"$py" tools/wph_synthesis.py "$real" --out "$syn" --count "$count" --seed "$seed" \
    --transform "$transform" "${threads[@]}" "$@" 2>&1 | tee "$out_dir/$domain.wph.log"

read -r -a validate_args <<< "${VALIDATE_ARGS:---apodize tukey:0.3}"
"$expanse" validate --real "$real" --synthetic "$syn" --out "$out_dir/report" "${validate_args[@]}"
echo "WPH baseline of $domain: syntheses $syn, report $out_dir/report (report.md, report.json)"
