"""rs.summary: parameters and forward FLOPs against the official figures."""
import json
import os
import subprocess
import sys

import pytest

from rs import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rs50_at_160_cli_json():
  out = subprocess.run([sys.executable, '-m', 'rs.summary', '--model=resnetrs50',
                        '--image_size=160', '--json'], cwd=ROOT, capture_output=True, text=True,
                       check=True)
  s = json.loads(out.stdout.strip().splitlines()[-1])
  assert s['params'] == 35_691_912
  assert s['gflops'] == pytest.approx(4.6, rel=0.03)  # the paper's figure


def test_flops_conventions_match_analytic_counts():
  # Analytic 2 x MACs of RS-50@160 (facts sheet 3.3 method): 4.557 GFLOPs counting every
  # conv tap, 4.353 skipping taps that only see padding.
  s = summary.summarize('resnetrs50', 160)
  assert s['gflops'] == pytest.approx(4.557, rel=0.01)
  assert s['gflops_compiled'] == pytest.approx(4.353, rel=0.03)
