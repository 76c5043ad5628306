#!/usr/bin/env bash
# The scaling study of docs/scaling.md on Fashion-MNIST, on a CPU (not CI): 3 widths x 3 depths x
# 2 resolutions at two training lengths, plus a longer one for 3 widths x 2 depths, each run
# trained, evaluated and benchmarked, then the Pareto plots and table. Resumable: run it again
# after an interruption, on any machine.
#   bash scripts/scaling_study.sh [OUT]     # default runs/scaling; about 1.5 hours on 2 cores
# Runs train on the first 10% of the training split (6,000 images) so that the grid fits a
# CPU; "epochs" below are passes over that subset (1, 4, 16: 6,000 to 96,000 images seen), and
# all runs use the full 10,000-image test split.
# Finished runs' results (config.json, eval.json) are kept in docs/scaling/runs (and seedN)
# and copied back into OUT first, so a new machine skips them; benchmarks are not carried over
# (latencies only compare when measured on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/scaling}
KEEP=docs/scaling
# Seed 0 is the grid; seeds 1 and 2 repeat the width-0.125 4-epoch runs at 24px, to tell the
# depth effect from run-to-run noise.
SEEDED="1 2"
mkdir -p "$OUT" "$KEEP/runs"
cp -rn "$KEEP/runs"/. "$OUT"/
for seed in $SEEDED; do
  mkdir -p "${OUT}_seed$seed" "$KEEP/seed$seed"
  cp -rn "$KEEP/seed$seed"/. "${OUT}_seed$seed"/
done
keep_results() {
  for dir in "$OUT:runs" $(for s in $SEEDED; do echo "${OUT}_seed$s:seed$s"; done); do
    for run in "${dir%%:*}"/*/; do
      if [ -f "$run/eval.json" ]; then
        mkdir -p "$KEEP/${dir##*:}/$(basename "$run")"
        cp "$run/config.json" "$run/eval.json" "$KEEP/${dir##*:}/$(basename "$run")/"
      fi
    done
  done
}
trap keep_results EXIT
BENCH=${BENCH---benchmark}  # BENCH= (set, empty) trains only (benchmark later, on a quiet machine)
sweep() {
  $PY -m rs.tools.sweep --config=configs/fashion_mnist.py --regularize=false --num_classes=10 \
      --config.data.train_split='train[:6000]' --config.warmup_epochs=0.25 \
      --config.eval_every_epochs=2 --config.checkpoint_every_steps=100000 "$@"
}
sweep --out="$OUT" --widths=0.125,0.25,0.5 --depths=26,50,101 --resolutions=24,32 \
    --epochs=1,4 ${BENCH:+"$BENCH"}
# A longer regime for the widths at the shallowest and deepest depth, at 24px only.
sweep --out="$OUT" --widths=0.125,0.25,0.5 --depths=26,101 --resolutions=24 --epochs=16 ${BENCH:+"$BENCH"}
for seed in $SEEDED; do
  sweep --out="${OUT}_seed$seed" --widths=0.125 --depths=26,50,101 --resolutions=24 \
      --epochs=4 --config.seed="$seed"
done
$PY -m rs.tools.pareto --runs="$OUT" --out=docs/scaling
