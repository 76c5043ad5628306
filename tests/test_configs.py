"""Every config loads, the released variants carry the official values, overrides work."""
import glob
import importlib.util
import os

import pytest

from conftest import ROOT, run_command
from rs.models import create_model
from rs.programs import build_model

# Facts sheet 2.1: (model, resolution, dropout, stochastic depth, RandAugment M).
OFFICIAL = {
    'rs50_i160': ('resnetrs50', 160, 0.25, 0.0, 10),
    'rs101_i160': ('resnetrs101', 160, 0.25, 0.0, 10),
    'rs101_i192': ('resnetrs101', 192, 0.25, 0.0, 15),
    'rs152_i192': ('resnetrs152', 192, 0.25, 0.0, 15),
    'rs152_i224': ('resnetrs152', 224, 0.25, 0.0, 15),
    'rs152_i256': ('resnetrs152', 256, 0.25, 0.0, 15),
    'rs200_i256': ('resnetrs200', 256, 0.25, 0.1, 15),
    'rs270_i256': ('resnetrs270', 256, 0.25, 0.1, 15),
    'rs350_i256': ('resnetrs350', 256, 0.25, 0.1, 15),
    'rs350_i320': ('resnetrs350', 320, 0.4, 0.1, 15),
    'rs420_i320': ('resnetrs420', 320, 0.4, 0.1, 15),
}


def module(name):
  """The config file loaded by path, as --config=configs/NAME.py loads it."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load(name):
  return module(name).get_config()


def test_every_released_variant_has_a_config():
  files = {os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, 'configs', 'rs*.py'))}
  assert files == set(OFFICIAL)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_values(name):
  c = load(name)
  model, res, dropout, sd, m = OFFICIAL[name]
  assert (c.model.name, c.data.image_size, c.model.dropout_rate) == (model, res, dropout)
  assert (c.model.stochastic_depth_rate, c.data.randaugment_magnitude) == (sd, m)
  # Common to all: facts sheet 2.1/2.3.
  assert (c.batch_size, c.optimizer.weight_decay, c.label_smoothing, c.ema_decay) == (
      4096, 4e-5, 0.1, 0.9999)
  assert (c.model.bn_momentum, c.optimizer.momentum, c.data.randaugment_layers) == (0.0, 0.9, 2)
  assert c.train_epochs * 1_281_167 / c.batch_size == pytest.approx(109_475, abs=1)
  assert c.dtype == 'bfloat16'
  doc = module(name).__doc__  # gives the run command and the official top-1
  assert f'--config=configs/{name}.py' in doc and 'top-1' in doc


def test_config_builds_the_registered_model():
  c = load('rs350_i256')
  assert build_model(c, 1000).stage_sizes == create_model('resnetrs350').stage_sizes
  c = load('fashion_mnist')
  model = build_model(c, 10)
  assert model.stage_sizes == (1, 1, 1, 1) and model.width_multiplier == 0.25


def test_command_line_overrides(monkeypatch):
  # Flags parsed exactly as rs.main parses them (rs.cli), up to the trainer.
  from rs import train
  seen = {}
  monkeypatch.setattr(train, 'train_and_evaluate', lambda config, workdir: seen.update(c=config))
  result = run_command('rs.main', '--config=configs/fashion_mnist.py', '--workdir=/tmp/x',
                       '--config.batch_size=512', '--config.model.stage_sizes=(2,2,2,2)',
                       '--config.optimizer.schedule=step', '--config.train_steps=9')
  assert result.status == 0, result
  c = seen['c']
  assert (c.batch_size, c.model.stage_sizes, c.optimizer.schedule, c.train_steps) == (
      512, (2, 2, 2, 2), 'step', 9)


# Facts sheet 1.7-1.8 and Table 6: (network, epochs, weight decay, label smoothing, stochastic
# depth, EMA, BN momentum) per row of configs/kinetics400.py.
KINETICS = {
    'baseline': ('resnet3d50', 200, 1e-4, 0.0, 0.0, 0.0, 0.9),
    'recipe': ('resnet3d50', 350, 4e-5, 0.1, 0.1, 0.9999, 0.0),
    'rs50': ('resnet3d_rs50', 350, 4e-5, 0.1, 0.1, 0.9999, 0.0),
    'rs200': ('resnet3d_rs200', 350, 4e-5, 0.1, 0.1, 0.9999, 0.0),
}


@pytest.mark.parametrize('row', sorted(KINETICS))
def test_kinetics_rows_carry_the_reference_values(row):
  from rs import cli
  c = cli.load_config_file(f'{ROOT}/configs/kinetics400.py:{row}')
  name, epochs, wd, ls, sd, ema, bn = KINETICS[row]
  assert (c.model.name, c.train_epochs, c.optimizer.weight_decay, c.label_smoothing) == (
      name, epochs, wd, ls)
  assert (c.model.stochastic_depth_rate, c.ema_decay, c.model.bn_momentum) == (sd, ema, bn)
  d = c.data
  assert (d.frames, d.frame_stride, d.image_size, d.eval_image_size) == (32, 2, 224, 256)
  assert (d.eval_clips, d.eval_crops, d.mean, d.std) == (10, 3, (0.0,) * 3, (255.0,) * 3)
  assert c.optimizer.base_learning_rate * c.batch_size / 256 == 0.8 and c.optimizer.nesterov
  assert (c.model.dropout_rate, c.warmup_epochs, c.dtype) == (0.5, 5.0, 'bfloat16')
  steps = c.train_epochs * 215_570 / c.batch_size
  assert steps == pytest.approx({200: 42_104, 350: 73_682}[epochs], abs=1.5)  # the reference's
  model = build_model(c, 400)
  # Table 6's additive study: the baseline network has neither SE nor the ResNet-D stem.
  assert (model.se_ratio, model.stem) == ((0.0, 'classic') if name == 'resnet3d50' else
                                          (0.25, 'deep'))


def test_a_kinetics_row_that_does_not_exist_is_one_line():
  result = run_command('rs.main', '--config=configs/kinetics400.py:rs51', '--workdir=/tmp/x')
  assert result.status != 0
  assert "row 'rs51': give one of baseline, recipe, rs50" in result.stderr.strip().splitlines()[-1]
