#!/usr/bin/env bash
# The figures of docs/performance.md, and the slow tests (not CI). Run from the repository
# root after `bash setup.sh test`; prints JSON lines to benchmarks/*.jsonl and the console.
#   bash scripts/benchmark.sh            # everything (an hour or more on a 2-core CPU)
#   bash scripts/benchmark.sh train      # only the RS-50@160 train/inference vs timm runs
#   bash scripts/benchmark.sh gpu        # RS-50@160 and RS-350@256 bf16 vs timm on a GPU
#   bash scripts/benchmark.sh slow       # only the slow tests
#   bash scripts/benchmark.sh input DIR  # only the input pipeline, on DIR/train/CLASS/*.jpg
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
what=${1:-all}
mkdir -p benchmarks
host="$(nproc) cores, $(uname -m), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
echo "# $(date -u +%F) on $host" | tee -a benchmarks/README.txt

if [ "$what" = all ] || [ "$what" = train ]; then
  for dtype in float32 bfloat16; do
    $PY -m rs.benchmark --model=resnetrs50 --image_size=160 --batch_size=32 --dtype=$dtype \
        --compare=timm --json | tee "benchmarks/rs50_i160_b32_$dtype.jsonl"
  done
fi

if [ "$what" = gpu ]; then
  # On a GPU machine (issue 5): bf16 training and inference against timm with AMP and
  # torch.compile on the same GPU, with model FLOP utilisation (fraction_of_matmul_peak).
  for spec in "resnetrs50 160 256" "resnetrs350 256 64"; do
    set -- $spec
    $PY -m rs.benchmark --model=$1 --image_size=$2 --batch_size=$3 --dtype=bfloat16 \
        --compare=timm --steps=10 --rounds=3 --json | tee "benchmarks/gpu_$1_i$2_bf16.jsonl"
  done
fi

if [ "$what" = all ] || [ "$what" = input ]; then
  data=${2:-/tmp/bench_photos}
  if [ ! -d "$data/train" ]; then
    $PY -m rs.tools.photo_dataset --format=folder --out="$data" --num_classes=16 --per_class=32
  fi
  for config in rs50_i160 rs350_i256; do
    $PY -m rs.bench_input --config=configs/$config.py --data="$data" --json \
        | tee "benchmarks/input_$config.jsonl"
  done
fi

if [ "$what" = all ] || [ "$what" = slow ]; then
  $PY -m pytest -q -m slow tests
fi
