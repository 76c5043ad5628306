#!/usr/bin/env bash
# Sets up rs on a fresh Debian/Ubuntu machine: the offline Fashion-MNIST files and, for the
# tests, shellcheck (when root and apt-get exist), a virtual environment in .venv, and rs in it.
#   bash setup.sh        # to train
#   bash setup.sh test   # also the test dependencies
set -euo pipefail
cd "$(dirname "$0")"
# System packages: the offline Fashion-MNIST files, and for the tests shellcheck.
packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
if [ "${1:-}" = test ] && ! command -v shellcheck >/dev/null; then packages+=(shellcheck); fi
if [ ${#packages[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${packages[@]}" >/dev/null \
      || echo "setup.sh: ${packages[*]} not installed (tfds downloads Fashion-MNIST instead)"
  else
    echo "setup.sh: run 'sudo apt-get install ${packages[*]}' (offline Fashion-MNIST, tests)"
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
if [ "${1:-}" = test ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi
