#!/usr/bin/env bash
# Issue 20's proof on real data: does the 3D ResNet-RS learn from time? Moving Fashion-MNIST
# (rs.tools.moving_dataset: the class is the direction of motion, chance 12.5%), written as
# video files and read back through the video pipeline by rs.main: the 3D network
# (configs/moving_fashion_mnist.py:3d, 8 frames) against the same network without time on one
# frame (:2d), same recipe and steps, test top-1 over 3 seeds.
#   bash scripts/moving_fashion_mnist.sh [RUNS_DIR]   # ~40 min on one core of the 2-core CPU
# 1. The data: TRAIN training clips (default 4000), 1000 minival clips of held-out training
#    images, 2000 test clips of the test images; 16 frames each on a 40 px canvas.
# 2. CHECK=1 (default): one 3D run (seed 0) scored on minival, the held-out split, to see that
#    the config (chosen before any run) learns; nothing is tuned on the test split.
# 3. NETS ("3d 2d") x SEEDS ("0 1 2"), scored once on test. Runs that have their evaluation are
#    skipped, so instances with different NETS/SEEDS can share RUNS_DIR on different cores.
# Prints the table for docs/video.md (markdown).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=${1:-runs/moving_fashion_mnist}
TRAIN=${TRAIN:-4000}
SEEDS=${SEEDS:-0 1 2}
NETS=${NETS:-3d 2d}
EPOCHS=${EPOCHS:-6}
data="$runs/data"
mkdir -p "$runs"
if [ ! -d "$data/test" ]; then
  $PY -m rs.tools.moving_dataset --out="$data" --train="$TRAIN" --minival=1000 --test=2000
fi

# train NAME NET SPLIT SEED: one run in $runs/NAME, timed (wall.txt).
train() {
  local workdir="$runs/$1" start=$SECONDS
  [ -f "$workdir/eval.json" ] && return 0
  $PY -m rs.main --config=configs/moving_fashion_mnist.py:"$2" --workdir="$workdir" \
      --config.data.data_dir="$data" --config.data.eval_split="$3" --config.seed="$4" \
      --config.train_epochs="$EPOCHS" --config.eval_every_epochs="$EPOCHS"
  echo $((SECONDS - start)) > "$workdir/wall.txt"
}
if [ "${CHECK:-1}" = 1 ]; then train check_3d_minival 3d minival 0; fi
for seed in $SEEDS; do
  for net in $NETS; do train "${net}_test_seed$seed" "$net" test "$seed"; done
done

$PY - "$runs" <<'PY'
import json, pathlib, statistics, sys
runs = pathlib.Path(sys.argv[1])
def final(run):
  return json.loads((run / 'eval.json').read_text())[-1]
check = runs / 'check_3d_minival'
if (check / 'eval.json').exists():
  print(f"minival check (3D, seed 0): EMA top-1 {100 * final(check)['ema_top1']:.2f}%")
print('| network | frames per clip | test top-1, EMA (mean, range over seeds) | raw | '
      'wall time per run |')
print('|---|---|---|---|---|')
for net, frames in (('3d', 8), ('2d', 1)):
  seeds = sorted(r for r in runs.glob(f'{net}_test_seed*') if (r / 'eval.json').exists())
  if not seeds:  # another instance still training them
    continue
  ema = [100 * final(r)['ema_top1'] for r in seeds]
  raw = [100 * final(r)['top1'] for r in seeds]
  wall = [int((r / 'wall.txt').read_text()) for r in seeds if (r / 'wall.txt').exists()]
  print(f'| {net} | {frames} | {statistics.mean(ema):.2f}% ({min(ema):.2f}-{max(ema):.2f}, '
        f'n={len(ema)}) | {statistics.mean(raw):.2f}% | {statistics.mean(wall):.0f} s |')
PY
