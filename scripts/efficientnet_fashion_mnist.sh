#!/usr/bin/env bash
# Issue 19's real-data check of EfficientNet's recipe: an EfficientNet-B0 variant (width 0.25,
# depth 0.5; configs/efficientnet_fashion_mnist.py, EfficientNet's recipe) against ResNet-RS-26
# at width 0.5 (configs/fashion_mnist.py's recipe), whose training step costs about the same on
# a CPU, on Fashion-MNIST with equal wall-time budgets, test top-1 over 3 seeds.
#   bash scripts/efficientnet_fashion_mnist.sh [RUNS_DIR]   # ~1 hour on a 2-core CPU
# 1. Equal wall time: both training steps are timed side by side in one process (alternating
#    rounds); ResNet-RS trains RS_STEPS steps (default 400, ~1.7 epochs of batch 256), the
#    EfficientNet RS_STEPS x (ResNet-RS step time / its step time). Steps, not seconds, so the
#    runs repeat exactly and a busy machine does not change a run.
# 2. Each network's peak learning rate, the recipe's or 4x, on a held-out minival (train[:54000]
#    for training, train[54000:] to choose; seed 0), by final EMA top-1. The test split is not read.
#    TUNE=0 skips this and keeps each recipe's own (0.2 and 0.016 per 256): no choice is made.
# 3. Three seeds of each (SEEDS), chosen learning rate, on the whole training split; test top-1
#    once. Runs that have their evaluation are skipped, so instances with different SEEDS (or
#    NETS="rs" / "en") can share RUNS_DIR on different cores (taskset -c N); then one more
#    prints the whole table.
# Prints the measured step times, the minival choices and the final table (markdown).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=${1:-runs/efficientnet_fashion_mnist}
RS_STEPS=${RS_STEPS:-400}
SEEDS=${SEEDS:-0 1 2}
mkdir -p "$runs"
RS_NET=(--config.model.name=resnetrs26 --config.model.width_multiplier=0.5)
# Short runs: 5% warmup, an EMA with a 100-step horizon, one evaluation at the end.
SHORT=(--config.ema_decay=0.99 --config.eval_every_epochs=1000 --config.log_every_steps=50
       --config.checkpoint_every_steps=100000)

if [ ! -f "$runs/steps.json" ]; then
  $PY - "$runs" "$RS_STEPS" <<'PY'
import json, sys
from rs import cli
cli.start_jax()
from configs import efficientnet_fashion_mnist, fashion_mnist
from rs.tools import benchmark
rs = fashion_mnist.get_config()
rs.model.name, rs.model.width_multiplier = 'resnetrs26', 0.5
contenders = {'resnetrs26_w0.5': benchmark.RsContender(rs, num_classes=10),
              'efficientnet_b0_w0.25_d0.5': benchmark.RsContender(
                  efficientnet_fashion_mnist.get_config(), num_classes=10)}
seconds = benchmark.median_step_times({k: c.train_step for k, c in contenders.items()}, 5, 3)
rs_steps = int(sys.argv[2])
steps = {'resnetrs26_w0.5': rs_steps, 'efficientnet_b0_w0.25_d0.5': round(
    rs_steps * seconds['resnetrs26_w0.5'] / seconds['efficientnet_b0_w0.25_d0.5'])}
record = {'ms_per_step': {k: 1e3 * v for k, v in seconds.items()}, 'steps': steps}
print(json.dumps(record))
open(f'{sys.argv[1]}/steps.json', 'w').write(json.dumps(record))
PY
fi
read -r rs_steps en_steps < <($PY -c "import json,sys; s=json.load(open('$runs/steps.json'))['steps']; print(s['resnetrs26_w0.5'], s['efficientnet_b0_w0.25_d0.5'])")
echo "steps: ResNet-RS-26 w0.5 $rs_steps, EfficientNet-B0 w0.25 d0.5 $en_steps"

# train NAME STEPS minival|test SEED LR: one run in $runs/NAME, timed (wall.txt).
train() {
  local name=$1 steps=$2 split=$3 seed=$4 lr=$5
  local workdir="$runs/$name" epochs config splits=() size=60000
  [ -f "$workdir/eval.json" ] && return 0
  if [ "$split" = minival ]; then
    splits=('--config.data.train_split=train[:54000]' '--config.data.eval_split=train[54000:]')
    size=54000
  fi
  epochs=$($PY -c "print($steps * 256 / $size)")
  if [[ $name == rs* ]]; then config=(--config=configs/fashion_mnist.py "${RS_NET[@]}")
  else config=(--config=configs/efficientnet_fashion_mnist.py:"$epochs"); fi
  local start=$SECONDS
  $PY -m rs.main "${config[@]}" --workdir="$workdir" "${SHORT[@]}" "${splits[@]}" \
      --config.train_steps="$steps" --config.warmup_steps=$((steps / 20)) \
      --config.seed="$seed" --config.optimizer.base_learning_rate="$lr"
  echo $((SECONDS - start)) > "$workdir/wall.txt"
}
best() {  # the prefix's minival run with the highest final EMA top-1 -> its learning rate
  $PY - "$runs" "$1" <<'PY'
import json, pathlib, sys
runs = sorted(pathlib.Path(sys.argv[1]).glob(f'{sys.argv[2]}_minival_lr*'))
score = {r.name: json.loads((r / 'eval.json').read_text())[-1]['ema_top1'] for r in runs}
for name, top1 in score.items():
  print(f'minival {name}: EMA top-1 {100 * top1:.2f}%', file=sys.stderr)
print(max(score, key=score.get).rsplit('_lr', 1)[1])
PY
}
if [ "${TUNE:-1}" = 1 ]; then
  for lr in 0.2 0.8; do train "rs_minival_lr$lr" "$rs_steps" minival 0 $lr; done
  for lr in 0.016 0.064; do train "en_minival_lr$lr" "$en_steps" minival 0 $lr; done
  rs_lr=$(best rs); en_lr=$(best en)
else
  rs_lr=0.2; en_lr=0.016  # configs/fashion_mnist.py's and EfficientNet's own
fi
echo "peak learning rates per 256: ResNet-RS $rs_lr, EfficientNet $en_lr"
NETS=${NETS:-rs en}  # which networks this instance trains (instances may split them too)
for seed in $SEEDS; do
  if [[ $NETS == *rs* ]]; then train "rs_test_seed$seed" "$rs_steps" test "$seed" "$rs_lr"; fi
  if [[ $NETS == *en* ]]; then train "en_test_seed$seed" "$en_steps" test "$seed" "$en_lr"; fi
done

$PY - "$runs" <<'PY'
import json, pathlib, statistics, sys
runs = pathlib.Path(sys.argv[1])
steps = json.loads((runs / 'steps.json').read_text())
print('| network | params | steps | ms per step (side by side) | wall time per run | '
      'test top-1, EMA (mean, range over seeds) | raw |')
print('|---|---|---|---|---|---|---|')
for prefix, key, params in (('rs', 'resnetrs26_w0.5', '4.92M'),
                            ('en', 'efficientnet_b0_w0.25_d0.5', '0.20M')):
  seeds = sorted(r for r in runs.glob(f'{prefix}_test_seed*') if (r / 'eval.json').exists())
  if not seeds:  # another instance still training them
    continue
  last = [json.loads((r / 'eval.json').read_text())[-1] for r in seeds]
  ema = [100 * e['ema_top1'] for e in last]
  raw = [100 * e['top1'] for e in last]
  wall = [int((r / 'wall.txt').read_text()) for r in seeds if (r / 'wall.txt').exists()]
  print(f"| {key} | {params} | {steps['steps'][key]} | {steps['ms_per_step'][key]:.0f} | "
        f"{statistics.mean(wall):.0f} s | {statistics.mean(ema):.2f}% "
        f"({min(ema):.2f}-{max(ema):.2f}, n={len(ema)}) | {statistics.mean(raw):.2f}% |")
PY
