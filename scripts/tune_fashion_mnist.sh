#!/usr/bin/env bash
# How configs/fashion_mnist.py's weight decay and epochs were chosen: on a held-out minival
# (the last 6,000 training images), never on the test split. Each run trains on the first
# 54,000 training images and evaluates on the other 6,000; the test split is not read.
#   bash scripts/tune_fashion_mnist.sh [RUNS_DIR]     # ~2 hours on a 2-core CPU (6 runs)
# Prints one line per run: weight decay, epochs, final minival top-1 (EMA and raw).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=${1:-runs/tune_fashion_mnist}
for epochs in 20 28; do
  for wd in 1e-4 2.5e-4 5e-4; do
    workdir="$runs/wd${wd}_e${epochs}"
    $PY -m rs.main --config=configs/fashion_mnist.py --workdir="$workdir" \
        --config.data.train_split='train[:54000]' --config.data.eval_split='train[54000:]' \
        --config.optimizer.weight_decay=$wd --config.train_epochs=$epochs \
        --config.model.conv_lowering=auto
  done
done
$PY - "$runs" <<'PY'
import json, pathlib, sys
for run in sorted(pathlib.Path(sys.argv[1]).iterdir()):
  evals = json.loads((run / 'eval.json').read_text())
  last = evals[-1]
  print(f"{run.name:<16} epoch {last['epoch']:5.1f}  minival EMA {100 * last['ema_top1']:.2f}%"
        f"  raw {100 * last['top1']:.2f}%")
PY
