#!/usr/bin/env bash
# Kill/resume soak (not CI): SIGKILL the tiny trainer at random moments - compiling, between
# steps, evaluating, mid-save - resume it each time, and check its final state is bit-identical
# to an uninterrupted run. Prints the cycles, kills mid-save, resumes, steps recomputed and
# whether the states are equal (docs/reliability.md has a 30-minute result). Before it, the
# multi-host test of launch/local.py: SIGTERM, kill -9 of a host, resume (docs/launch.md).
#   bash scripts/soak.sh [MINUTES] [OUT]      # default 30 minutes, a new temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${1:-30}
OUT=${2:-$(mktemp -d /tmp/rs_soak.XXXXXX)}
# First the multi-host stops and losses through launch/local.py (a slow test, not in CI).
$PY -m pytest -q -m slow tests/test_launch_local.py
$PY -m rs.tools.soak --minutes="$MINUTES" --out="$OUT"
