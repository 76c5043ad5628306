"""rs.tools.summary: parameters and forward FLOPs against the official figures."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from rs.tools import summary


def test_rs50_at_160_cli_json():
  out = subprocess.run([sys.executable, '-m', 'rs.tools.summary', '--model=resnetrs50',
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


def test_models_doc_shows_every_released_variant_at_official_counts():
  """docs/models.md (written by `python -m rs.tools.summary --released`): every released variant,
  exactly the official parameter count and within 3% of the official GFLOPs."""
  from rs.models import official
  rows = [line.split('|')[1:-1] for line in open(os.path.join(ROOT, 'docs', 'models.md'))
          if line.startswith('| resnetrs')]
  seen = set()
  for name, size, params, _, gflops, *_ in (map(str.strip, r) for r in rows):
    seen.add((name, int(size)))
    assert int(params.replace(',', '')) == official.PARAMS[name]
    assert float(gflops) == pytest.approx(official.RELEASED[name, int(size)][0], rel=0.03)
  assert seen == set(official.RELEASED)


@pytest.mark.parametrize('name', ['efficientnet_b0', 'efficientnet_b3'])
def test_efficientnet_flops_are_the_official_macs_plus_elementwise_work(name):
  """XLA counts 2 x the official multiply-accumulates (convs, classifier) plus the elementwise
  work the official count leaves out (swish, BN, SE scaling): 3-8% more, never less."""
  from rs.models import efficientnet, official
  size = efficientnet.VARIANTS[name.removeprefix('efficientnet_')][2]
  s = summary.summarize(name, size, compiled=False)
  ratio = s['gflops'] / (2 * official.EFFICIENTNET[name][0])
  assert s['params'] == official.PARAMS[name] and 1.03 <= ratio <= 1.08, ratio


@pytest.mark.slow
@pytest.mark.parametrize('name,size', [('resnetrs152', 256), ('resnetrs420', 320)])
def test_deep_variants_flops_within_three_percent(name, size):
  from rs.models import official
  s = summary.summarize(name, size)
  assert s['params'] == official.PARAMS[name]
  assert s['gflops'] == pytest.approx(official.RELEASED[name, size][0], rel=0.03)


def test_memory_table_of_a_config():
  """XLA's analysis of the compiled step, with and without remat: more with the batch, less
  with remat, and remat's share of the whole falls as the activations grow."""
  out = subprocess.run([sys.executable, '-m', 'rs.tools.summary',
                        '--memory_table=configs/fashion_mnist.py', '--memory_batches=8,64'],
                       cwd=ROOT, capture_output=True, text=True, check=True)
  rows = [line.split('|')[1:-1] for line in out.stdout.splitlines()
          if line.startswith('| configs/fashion_mnist.py | float32 |')]
  assert [r[2].strip() for r in rows] == ['8', '64']
  assert all(r[4].strip() == '16, 32, 95' and r[6].strip() == '16, 32, 95' for r in rows)
  ratios = [float(r[7]) for r in rows]  # measured: 0.93 and 0.81
  assert ratios[1] < ratios[0] < 1
  for flags, says in ((['--memory_table=configs/x.py'], 'config file configs/x.py does not exist'),
                      (['--memory_table=released', '--memory_batches=0'], 'of 1 or more')):
    bad = subprocess.run([sys.executable, '-m', 'rs.tools.summary', *flags], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and says in bad.stderr.strip().splitlines()[-1]
