#!/usr/bin/env bash
# Sets up rs on a fresh Debian/Ubuntu machine: the offline Fashion-MNIST files (when root and
# apt-get exist), a virtual environment in .venv, and rs installed into it.
#   bash setup.sh        # to train
#   bash setup.sh test   # also the test dependencies
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "setup.sh: dataset-fashion-mnist not installed; tfds will download Fashion-MNIST"
  else
    echo "setup.sh: run 'sudo apt-get install dataset-fashion-mnist' for offline Fashion-MNIST"
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
if [ "${1:-}" = test ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi
