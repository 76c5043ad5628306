#!/usr/bin/env bash
# The figures of docs/performance.md, and the slow tests (not CI). Run from the repository
# root after `bash setup.sh test`; prints JSON lines to benchmarks/*.jsonl (or $OUTDIR) and the console.
#   bash scripts/benchmark.sh            # everything (an hour or more on a 2-core CPU)
#   bash scripts/benchmark.sh train      # only the RS-50@160 train/inference vs timm runs
#   bash scripts/benchmark.sh precision  # does the faster CPU setting still train the same?
#   bash scripts/benchmark.sh pairs      # ResNet-RS vs EfficientNet at matched accuracy (hours)
#   bash scripts/benchmark.sh gpu        # RS-50@160 and RS-350@256 bf16 vs timm, and the
#                                        # ResNet-RS/EfficientNet pairs, on a GPU
#   bash scripts/benchmark.sh remat      # RS-350@256 and RS-420@320 with and without remat
#   bash scripts/benchmark.sh slow       # only the slow tests
#   bash scripts/benchmark.sh input DIR  # only the input pipeline, on DIR/train/CLASS/*.jpg
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
what=${1:-all}
out=${OUTDIR:-benchmarks}  # where the JSON lines go
mkdir -p benchmarks "$out"
host="$(nproc) cores, $(uname -m), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
echo "# $(date -u +%F) on $host" | tee -a "$out/README.txt"

if [ "$what" = all ] || [ "$what" = train ]; then
  for dtype in float32 bfloat16; do
    # One rs contender on one CPU device and one on a device per core, side by side.
    $PY -m rs.tools.benchmark --model=resnetrs50 --image_size=160 --batch_size=32 --dtype="$dtype" \
        --devices="1,$(nproc)" --compare=timm --json | tee "$out/rs50_i160_b32_$dtype.jsonl"
  done
fi

if [ "$what" = all ] || [ "$what" = pairs ]; then
  # docs/performance.md's Table-3-style comparison: the two smaller pairs at 2 timed steps per
  # round, the three larger (seconds to a minute per image on a CPU) at 1.
  $PY -m rs.tools.compare_models --pairs=resnetrs101@192/efficientnet_b3@300,resnetrs152@256/efficientnet_b4@380 \
      --batch_size=2 --json | tee "$out/pairs_small.jsonl"
  $PY -m rs.tools.compare_models --pairs=resnetrs270@256/efficientnet_b5@456,resnetrs350@256/efficientnet_b6@528,resnetrs420@320/efficientnet_b7@600 \
      --batch_size=2 --steps=1 --json | tee "$out/pairs_large.jsonl"
fi

if [ "$what" = all ] || [ "$what" = precision ]; then
  # The embedded default for 2 epochs in float32 on one CPU device (the baseline), the same
  # with seed 1 (chance: its distance from the baseline is the tolerance), and the faster
  # settings: bfloat16 compute, one device per core, both. Same seed, same data order.
  runs=benchmarks/precision
  rm -rf "$runs"
  for setting in "float32 1 0" "float32 1 1" "bfloat16 1 0" "float32 $(nproc) 0" \
                 "bfloat16 $(nproc) 0"; do
    read -r dtype devices seed <<<"$setting"
    $PY -m rs.main --config=configs/fashion_mnist.py --workdir="$runs/${dtype}_x${devices}_seed$seed" \
        --cpu_devices="$devices" --config.dtype="$dtype" --config.seed="$seed" --config.train_epochs=2 \
        --config.eval_every_epochs=2 --config.log_every_steps=10 \
        --config.checkpoint_every_steps=100000
  done
  $PY -m rs.tools.compare_runs --baseline="$runs/float32_x1_seed0" \
      --reference="$runs/float32_x1_seed1" \
      --runs="$runs/bfloat16_x1_seed0,$runs/float32_x$(nproc)_seed0,$runs/bfloat16_x$(nproc)_seed0" \
      | tee "$out/precision.md" || true
fi

if [ "$what" = all ] || [ "$what" = remat ]; then
  # Remat's trade-off on this machine (docs/performance.md): the released configs' train step
  # with no remat, per block and per stage side by side at a per-device batch all three fit,
  # then per block alone at one that does not fit without it (on a CPU, in the host's memory;
  # rs.tools.summary --memory_table says which).
  for cfg in rs350_i256 rs420_i320; do
    $PY -m rs.tools.benchmark --config="configs/$cfg.py" --config.batch_size="${REMAT_BATCH:-4}" \
        --remat=none,block,stage --kinds=train --steps=1 --rounds=2 --json \
        | tee "$out/remat_${cfg}_b${REMAT_BATCH:-4}.jsonl"
  done
  $PY -m rs.tools.benchmark --config=configs/rs420_i320.py --config.batch_size="${REMAT_BIG_BATCH:-16}" \
      --remat=block --kinds=train --steps=1 --rounds=1 --json \
      | tee "$out/remat_rs420_i320_b${REMAT_BIG_BATCH:-16}.jsonl"
fi

if [ "$what" = gpu ]; then
  # On a GPU machine: bf16 numerics against float32, then bf16 training and inference against
  # timm with AMP (eager, and torch.compile) on the same GPU, with model FLOP utilisation
  # (fraction_of_matmul_peak), and a linear probe's step beside full training. JAX allocates
  # as it goes (no preallocation), so PyTorch in the same process has room and the peak
  # memory figures are the programs' own.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  $PY -m rs.tools.precision --model=resnetrs50 --image_size=160 --batch_size=32 --steps=10 \
      | tee "$out/gpu_precision_rs50_i160.jsonl"
  $PY -m rs.tools.benchmark --model=resnetrs50 --image_size=160 --batch_size=256 --dtype=bfloat16 \
      --compare=timm --linear_probe --steps=10 --rounds=3 --json \
      | tee "$out/gpu_resnetrs50_i160_bf16.jsonl"
  $PY -m rs.tools.benchmark --model=resnetrs350 --image_size=256 --batch_size=64 --dtype=bfloat16 \
      --compare=timm --timm_modes="${RS350_TIMM_MODES:-eager,compiled}" --steps=10 --rounds=3 \
      --json | tee "$out/gpu_resnetrs350_i256_bf16.jsonl"
  # The five ResNet-RS/EfficientNet pairs of docs/performance.md in bf16; memory is XLA's
  # analysis of each step (the host's resident memory says nothing about a GPU's: --norss).
  $PY -m rs.tools.compare_models --batch_size="${PAIRS_BATCH:-32}" --dtype=bfloat16 --steps=5 \
      --rounds=3 --norss --json | tee "$out/gpu_pairs_bf16.jsonl"
  # Remat on the GPU: no remat, per block and per stage side by side at 32 per device, then
  # RS-420@320 at 96 per device, which needs ~220 GiB without remat (XLA's analysis on a CPU).
  REMAT_BATCH=32 REMAT_BIG_BATCH=96 OUTDIR="$out" bash scripts/benchmark.sh remat
fi

if [ "$what" = all ] || [ "$what" = input ]; then
  data=${2:-/tmp/bench_photos}
  if [ ! -d "$data/train" ]; then
    $PY -m rs.tools.photo_dataset --format=folder --out="$data" --num_classes=16 --per_class=32
  fi
  for config in rs50_i160 rs350_i256; do
    $PY -m rs.tools.bench_input --config=configs/$config.py --data="$data" --json \
        | tee "$out/input_$config.jsonl"
  done
fi

if [ "$what" = all ] || [ "$what" = slow ]; then
  $PY -m pytest -q -m slow tests
fi
