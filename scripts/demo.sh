#!/usr/bin/env bash
# `make demo`: the main job on the built-in synthetic data. Idempotent: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
MTKD=.venv/bin/mtkd
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"
if [ ! -f "$OUT/synth.csv" ]; then
  $MTKD data synth --rows 200000 --seed 0 --out "$OUT/synth.csv"
fi
$MTKD data prepare --schema configs/datasets/synthetic.yaml --train "$OUT/synth.csv" --out "$OUT/synth"
$MTKD data info "$OUT/synth"
