#!/usr/bin/env bash
# The scaling study of docs/scaling.md on Fashion-MNIST, on a CPU (not CI): 3 widths x 3 depths x
# 2 resolutions at two training lengths, each run trained, evaluated and benchmarked, then the
# Pareto plots and table. Resumable: run it again after an interruption, on any machine.
#   bash scripts/scaling_study.sh [OUT]     # default runs/scaling; several hours on 2 cores
# Runs train on the first 10% of the training split (6,000 images) so that the grid fits a
# CPU; "epochs" below are passes over that subset (1 and 4: 6,000 and 24,000 images seen), and
# all runs use the full 10,000-image test split.
# Finished runs' results (config.json, eval.json) are kept in docs/scaling/runs and copied back
# into OUT first, so a new machine skips them; benchmarks are not carried over (latencies only
# compare when measured on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/scaling}
KEEP=docs/scaling/runs
mkdir -p "$OUT" "$KEEP"
cp -rn "$KEEP"/. "$OUT"/
keep_results() {
  for run in "$OUT"/*/; do
    name=$(basename "$run")
    if [ -f "$run/eval.json" ]; then
      mkdir -p "$KEEP/$name" && cp "$run/config.json" "$run/eval.json" "$KEEP/$name/"
    fi
  done
}
trap keep_results EXIT
BENCH=${BENCH---benchmark}  # BENCH= (set, empty) trains only (benchmark later, on a quiet machine)
$PY -m rs.sweep --config=configs/fashion_mnist.py --out="$OUT" \
    --widths=0.125,0.25,0.5 --depths=26,50,101 --resolutions=24,32 --epochs=1,4 \
    --regularize=false $BENCH --num_classes=10 \
    --config.data.train_split='train[:6000]' --config.warmup_epochs=0.25 \
    --config.eval_every_epochs=2 --config.checkpoint_every_steps=100000
$PY -m rs.pareto --runs="$OUT" --out=docs/scaling
