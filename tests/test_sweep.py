"""rs.tools.sweep (the scaling grid and its launcher) and rs.tools.pareto (the plots of finished runs)."""
import importlib
import json
import os
import shutil
import subprocess
import sys

import jax
import pytest

from rs import rundir, sharding, train
from rs.errors import UserError
from rs.tools import pareto, sweep


def test_grid_expands_to_every_point_with_its_network(tiny):
  points = sweep.expand(tiny(), (0.25, 0.5), (26, 50, 101), (28, 32), (2, 8))
  assert len(points) == 2 * 3 * 2 * 2
  assert len({p.name for p, _ in points}) == len(points)
  for point, config in points:
    assert config.model.name == f'resnetrs{point.depth}'
    assert config.model.stage_sizes is None  # the depth's layout, not the base's (1,1,1,1)
    assert config.model.width_multiplier == point.width
    assert config.data.image_size == point.resolution
    assert config.train_epochs == point.epochs and config.train_steps is None
  # Cheapest first: all 2-epoch runs before any 8-epoch run.
  assert [p.epochs for p, _ in points] == sorted(p.epochs for p, _ in points)
  assert [p.name for p, _ in sweep.expand(tiny(), (0.25, 0.5), (26,), (32,), (2,),
                                          only='w0.5_*')] == ['w0.5_d26_r32_e2']


def test_paper_grid_is_the_papers():
  assert sweep.PAPER_GRID == {'widths': (0.25, 0.5, 1.0, 1.5, 2.0),
                              'depths': (26, 50, 101, 200, 300, 350, 400),
                              'resolutions': (128, 160, 224, 320, 448),
                              'epochs': (10, 100, 350)}


@pytest.mark.parametrize('name', ['rs50_i160', 'rs101_i160', 'rs101_i192', 'rs152_i192',
                                  'rs152_i224', 'rs152_i256', 'rs200_i256', 'rs270_i256',
                                  'rs350_i256', 'rs350_i320', 'rs420_i320'])
def test_regularization_rule_gives_every_released_config(name):
  """The rule reproduces the dropout, stochastic depth and RandAugment magnitude of each
  released config (which tests/test_configs.py checks against the facts sheet)."""
  released = importlib.import_module(f'configs.{name}').get_config()
  depth = int(released.model.name[len('resnetrs'):])
  assert sweep.regularization(depth, released.data.image_size) == {
      'dropout_rate': released.model.dropout_rate,
      'stochastic_depth_rate': released.model.stochastic_depth_rate,
      'randaugment_magnitude': released.data.randaugment_magnitude}


def test_unknown_depth_is_a_clear_error(tiny):
  with pytest.raises(UserError, match='51 is not registered'):
    sweep.expand(tiny(), (1.0,), (51,), (32,), (1,))
  with pytest.raises(UserError, match="--models: unknown model 'efficientnet_b9'"):
    sweep.expand(tiny(), (1.0,), (), (32,), (1,), models=('efficientnet_b9',))
  with pytest.raises(UserError, match='both empty'):
    sweep.expand(tiny(), (1.0,), (), (32,), (1,))


def test_efficientnets_join_the_grid_with_their_official_definition(tiny):
  """--models: EfficientNet points beside ResNet-RS ones; a width relative to the variant's own
  (B3 at width 1 is B3's 1.2), the variant's official dropout/drop connect/BN, and
  EfficientNet-RS's RandAugment rule as the paper states it (10 to 224px, 15 to 320, 20 above)."""
  base = tiny()
  base.data.randaugment_layers = 2
  points = sweep.expand(base, (0.5, 1.0), (26,), (224, 256, 352), (2,),
                        models=('efficientnet_b0', 'efficientnet_b3'))
  names = [p.name for p, _ in points]
  assert len(names) == len(set(names)) == 3 * 2 * 3
  assert 'w0.5_d26_r224_e2' in names and 'efficientnet_b3_w1_r256_e2' in names
  by_name = dict((p.name, c) for p, c in points)
  b3 = by_name['efficientnet_b3_w1_r352_e2']
  assert b3.model.name == 'efficientnet_b3' and b3.model.width_multiplier == 1.2
  assert (b3.model.dropout_rate, b3.model.stochastic_depth_rate) == (0.3, 0.2)
  assert (b3.model.bn_momentum, b3.model.bn_epsilon) == (0.99, 1e-3)
  assert b3.model.stage_sizes is None
  assert by_name['efficientnet_b0_w0.5_r224_e2'].model.width_multiplier == 0.5
  assert [by_name[f'efficientnet_b0_w1_r{r}_e2'].data.randaugment_magnitude
          for r in (224, 256, 352)] == [10, 15, 20]
  # The ResNet-RS points are unchanged by the EfficientNets beside them.
  assert by_name['w1_d26_r256_e2'].model.name == 'resnetrs26'
  assert by_name['w1_d26_r256_e2'].model.bn_epsilon == base.model.bn_epsilon
  # Every config builds its network (the registry refuses fields foreign to a family).
  from rs import validate
  mesh = sharding.create_mesh(jax.devices()[:1])
  for _, config in points:
    validate.check_config(config, mesh)


def _run(name, ms, top1, epochs=10.0):
  return pareto.Run(name, 'resnetrs50', 1.0, 160, epochs, top1, 1, 1.0, ms, None)


def test_frontier_keeps_the_runs_nothing_beats():
  runs = [_run('fast', 1.0, 0.80), _run('slow_better', 2.0, 0.85), _run('dominated', 2.5, 0.84),
          _run('tie_slower', 1.5, 0.80), _run('best', 3.0, 0.90),
          _run('other_regime', 9.0, 0.50, epochs=100.0)]
  pareto.mark_frontier(runs)
  assert {r.name for r in runs if r.frontier} == {'fast', 'slow_better', 'best', 'other_regime'}


def test_mini_sweep_trains_benchmarks_and_plots(tiny, tmp_path, monkeypatch):
  """One point of the grid, the tiny network on Fashion-MNIST (6 steps), trained, benchmarked
  (train step only, one timed step: this checks the plumbing, not the speed), run again (it is
  skipped), then rs.tools.pareto through its command line (the frontier itself: test_frontier_*)."""
  out = str(tmp_path / 'sweep')
  epochs = 6 * 32 / 3_200  # 6 steps of 32 images
  points = sweep.expand(tiny(), (0.125,), (26,), (24,), (epochs,), regularize=False)
  one_device = sharding.create_mesh(jax.devices()[:1])  # compiles faster than 8 fake devices
  sweep.run(points, out, benchmark=True, num_classes=10, mesh=one_device, steps=1, rounds=1,
            kinds=('train',))
  assert sorted(os.listdir(out)) == sorted(point.name for point, _ in points)
  for point, _ in points:
    assert rundir.read_evals(os.path.join(out, point.name))[-1]['step'] == 6
    with open(os.path.join(out, point.name, 'benchmark.jsonl')) as f:
      bench = {r['measurement']: r for r in map(json.loads, f)}
    assert bench['rs/train']['batch_size'] == 32
    assert bench['model']['width_multiplier'] == point.width

  # Finished runs are not trained again, even without their checkpoints (results carried to
  # another machine: config.json, eval.json, benchmark.jsonl).
  for point, _ in points:
    shutil.rmtree(os.path.join(out, point.name, 'checkpoints'))
    assert sweep.finished(os.path.join(out, point.name), point)
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('retrained'))
  sweep.run(points, out, benchmark=True, num_classes=10, mesh=one_device)

  # An EfficientNet's run beside them (its files as a sweep writes them; the training of an
  # EfficientNet is tests/test_efficientnet.py's): both families in one set of figures.
  effnet = os.path.join(out, 'efficientnet_b0_w0.125_r24_e0.06')
  shutil.copytree(os.path.join(out, points[0][0].name), effnet)
  config = json.load(open(os.path.join(effnet, 'config.json')))
  config['model'].update(name='efficientnet_b0', width_multiplier=0.125, stage_sizes=None)
  json.dump(config, open(os.path.join(effnet, 'config.json'), 'w'))
  run = pareto.load_run(effnet)
  assert (run.model, run.width) == ('efficientnet_b0', 0.125)
  assert pareto.label(run.model) == 'B0' and pareto.label('resnetrs26') == 'RS-26'

  figures = str(tmp_path / 'figures')
  proc = subprocess.run([sys.executable, '-m', 'rs.tools.pareto', f'--runs={out}', f'--out={figures}'],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ('accuracy_vs_latency.png', 'accuracy_vs_memory.png', 'error_vs_flops.png',
               'scaling_curves.png'):
    with open(os.path.join(figures, name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  table = open(os.path.join(figures, 'pareto.md')).read()
  assert all(point.name in table for point, _ in points)
  rows = [[c.strip(' *') for c in line.split('|')[1:-1]] for line in table.splitlines()[2:]
          if line.startswith('| ')]
  assert ['efficientnet_b0', '0.125'] in [row[1:3] for row in rows]
  assert table.count('\n| ') == len(points) + 1  # one row per run (the header is the first line)
