#!/usr/bin/env bash
# Kill/resume soak (not CI): SIGKILL the tiny trainer at random moments - compiling, between
# steps, evaluating, mid-save - resume it each time, and check its final state is bit-identical
# to an uninterrupted run. Prints the cycles, kills mid-save, resumes, steps recomputed and
# whether the states are equal (docs/reliability.md has a 30-minute result).
#   bash scripts/soak.sh [MINUTES] [OUT]      # default 30 minutes, a new temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${1:-30}
OUT=${2:-$(mktemp -d /tmp/rs_soak.XXXXXX)}
$PY -m rs.tools.soak --minutes="$MINUTES" --out="$OUT"
