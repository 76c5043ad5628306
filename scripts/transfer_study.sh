#!/usr/bin/env bash
# The paper's transfer study (section 7.4) in small, on real data that ships offline: a vanilla
# ResNet pretrained on Fashion-MNIST with the standard recipe or the RS transfer subset
# (configs/transfer_fashion_mnist.py:standard|rs, equal epochs), then a linear probe and full
# fine-tuning on scikit-learn's digits and scikit-image's LFW faces, 3 seeds.
#   bash scripts/transfer_study.sh [RUNS_DIR]   # ~1.5 h on the 2-core CPU
# STAGE selects a part (default all, in order):
#   upstream  RECIPES ("standard rs"; scratch, the third, has no upstream) x SEEDS ("0 1 2"):
#             train, export to RUN/weights;
#   tune      the learning-rate grids (PROBE_LRS, FINETUNE_LRS) on each recipe's seed-0
#             network, trained on a minival slice's complement and scored on the slice: the
#             choice (best mean over both recipes) goes into the config's LEARNING_RATES;
#   final     every upstream network x dataset x mode with the config's rates, scored once on
#             the test splits (downstream seed = upstream seed); recipe scratch: for
#             reference, the fine-tuning runs from random weights;
#   report    the tables of docs/transfer.md (markdown).
# Finished runs are skipped (an interrupted one resumes), so instances with different
# RECIPES/SEEDS can share RUNS_DIR on different cores (e.g. `taskset -c 0` and `taskset -c 1`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=${1:-runs/transfer}
STAGE=${STAGE:-all}
RECIPES=${RECIPES:-standard rs scratch}
SEEDS=${SEEDS:-0 1 2}
DATASETS=${DATASETS:-digits lfw_faces}
PROBE_LRS=${PROBE_LRS:-0.1 0.4 1.6 6.4 25.6}
FINETUNE_LRS=${FINETUNE_LRS:-0.0125 0.05 0.2 0.8 3.2}
CONFIG=configs/transfer_fashion_mnist.py
case $STAGE in
  all | upstream | tune | final | report) ;;
  *) echo "error: STAGE=$STAGE: use all, upstream, tune, final or report" >&2; exit 1 ;;
esac
mkdir -p "$runs"

# run NAME ROW [FLAGS...]: one rs.main run in $runs/NAME, timed (wall.txt).
run() {
  local workdir="$runs/$1" row=$2 start=$SECONDS
  shift 2
  [ -f "$workdir/wall.txt" ] && return 0
  $PY -m rs.main --config="$CONFIG:$row" --workdir="$workdir" "$@"
  echo $((SECONDS - start)) > "$workdir/wall.txt"  # also the mark of a finished run
}

# minival DATASET: sets $splits to the flags that train on the minival slice's complement and
# score on the slice (configs/transfer_fashion_mnist.py's MINIVAL).
minival() {
  read -r -a splits <<< "$($PY -c "from configs.transfer_fashion_mnist import MINIVAL as M; \
t, e = M['$1']; print(f'--config.data.train_split={t} --config.data.eval_split={e}')")"
}

stage() { [ "$STAGE" = all ] || [ "$STAGE" = "$1" ]; }

if stage upstream; then
  for seed in $SEEDS; do
    for recipe in ${RECIPES/scratch/}; do
      run "up_${recipe}_seed$seed" "$recipe" --config.seed="$seed"
      [ -d "$runs/up_${recipe}_seed$seed/weights" ] || $PY -m rs.export \
          --workdir="$runs/up_${recipe}_seed$seed" --out="$runs/up_${recipe}_seed$seed/weights"
    done
  done
fi

if stage tune; then
  for recipe in ${RECIPES/scratch/}; do
    for dataset in $DATASETS; do
      minival "$dataset"
      for mode in probe finetune; do
        lrs=$PROBE_LRS
        [ "$mode" = probe ] || lrs=$FINETUNE_LRS
        for lr in $lrs; do
          run "tune_${recipe}_${dataset}_${mode}_lr$lr" "${dataset}_$mode" "${splits[@]}" \
              --config.init_from="$runs/up_${recipe}_seed0/weights" \
              --config.optimizer.base_learning_rate="$lr"
        done
      done
    done
  done
fi

if stage final; then
  for seed in $SEEDS; do
    for recipe in $RECIPES; do
      for dataset in $DATASETS; do
        if [ "$recipe" = scratch ]; then
          run "scratch_${dataset}_finetune_seed$seed" "${dataset}_finetune" \
              --config.init_from=None --config.seed="$seed"
          continue
        fi
        for mode in probe finetune; do
          run "${recipe}_${dataset}_${mode}_seed$seed" "${dataset}_$mode" \
              --config.init_from="$runs/up_${recipe}_seed$seed/weights" --config.seed="$seed"
        done
      done
    done
  done
fi

if stage report; then
  $PY -m rs.tools.transfer_report --runs="$runs"
fi
