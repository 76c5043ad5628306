#!/usr/bin/env bash
# The scaling study of docs/scaling.md on Fashion-MNIST, on a CPU (not CI): 3 widths x 3 depths x
# 2 resolutions at two training lengths, each run trained, evaluated and benchmarked, then the
# Pareto plots and table. Resumable: run it again after an interruption.
#   bash scripts/scaling_study.sh [OUT]     # default runs/scaling; several hours on 2 cores
# Runs train on the first 20% of the training split (12,000 images) so that the grid fits a
# CPU; "epochs" below are passes over that subset, and all runs use the full 10,000-image test split.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/scaling}
$PY -m rs.sweep --config=configs/fashion_mnist.py --out="$OUT" \
    --widths=0.125,0.25,0.5 --depths=26,50,101 --resolutions=24,32 --epochs=2,8 \
    --regularize=false --benchmark --num_classes=10 \
    --config.data.train_split='train[:12000]' --config.eval_every_epochs=2 \
    --config.checkpoint_every_steps=100000
$PY -m rs.pareto --runs="$OUT" --out=docs/scaling
