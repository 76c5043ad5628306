#!/usr/bin/env bash
# The semi-supervised study of docs/semi_supervised.md on Fashion-MNIST with 10% of the labels:
# for each seed, the teacher (train[:6000]), two Noisy Student rounds over the next 48,000
# images (their labels hidden), and the ceiling (the same network on all 60,000 labels,
# configs/fashion_mnist.py). The minival (train[54000:]) is held out of everything the
# students train on, labeled or not: runs evaluate on it while they train, and it alone
# chooses hyperparameters; the test split is read once at the end, by rs.evaluate on each
# run's exported EMA weights.
#   bash scripts/semi_supervised_study.sh [RUNS_DIR] [SEEDS...]   # hours on a 2-core CPU
# Everything resumes: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=${1:-runs/semi_supervised}
shift || true
seeds=${*:-0 1 2}
for seed in $seeds; do
  $PY -m rs.tools.noisy_student --config=configs/fashion_mnist_semi.py --config.seed="$seed" \
      --out="$runs/seed$seed" --data=fashion_mnist --split='train[6000:54000]' --rounds=2
  $PY -m rs.tools.pseudo_calibration --pseudo="$runs/seed$seed/pseudo1" \
      --out="$runs/seed$seed/calibration1.png" --json > "$runs/seed$seed/calibration1.json"
  $PY -m rs.main --config=configs/fashion_mnist.py --config.seed="$seed" \
      --workdir="$runs/seed$seed/ceiling" --config.data.eval_split='train[54000:]'
  for run in round0 round1 round2 ceiling; do
    $PY -m rs.export --workdir="$runs/seed$seed/$run" --out="$runs/seed$seed/$run/export"
    $PY -m rs.evaluate --weights="$runs/seed$seed/$run/export" --split=test --json \
        > "$runs/seed$seed/$run/test.json"
  done
done
$PY - "$runs" <<'PY'
import json, pathlib, sys
import numpy as np
runs = pathlib.Path(sys.argv[1])
for run in ('round0', 'round1', 'round2', 'ceiling'):
  top1 = [json.loads(p.read_text())['top1'] for p in sorted(runs.glob(f'seed*/{run}/test.json'))]
  if top1:
    print(f'{run:<8} test top-1 {100 * np.mean(top1):.2f}% (range {100 * min(top1):.2f}-'
          f'{100 * max(top1):.2f}%, {len(top1)} seeds)')
PY
