"""Every command fails the same way on input the user must fix: one line `error: ...` naming
the fix, exit status 1, no traceback (rs.cli). Run in-process (conftest.run_command): the
mechanism is the same as in a process of its own, without ~5 s of imports per case."""
import json
import os

import numpy as np
import pytest

from conftest import run_command

TINY = 'configs/tiny.py'


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Bad inputs on disk: {name: path}."""
  tmp = tmp_path_factory.mktemp('bad_inputs')
  (tmp / 'syntax.py').write_text('def get_config(:\n')
  (tmp / 'no_get_config.py').write_text('x = 1\n')
  (tmp / 'notes.pth').write_text('not a checkpoint\n')
  (tmp / 'zero.safetensors').write_bytes(b'')
  (tmp / 'empty_dir').mkdir()
  (tmp / 'empty_folder' / 'train' / 'cat').mkdir(parents=True)
  bad = tmp / 'bad_folder' / 'train' / 'cat'
  bad.mkdir(parents=True)
  for i in range(3):
    (bad / f'{i}.jpg').write_bytes(b'not a jpeg')
  from safetensors.numpy import save_file
  save_file({}, str(tmp / 'empty.safetensors'))
  rng = np.random.default_rng(0)
  # A timm ResNet body without its classifier (timm's num_classes=0).
  save_file({'conv1.weight': rng.normal(size=(8, 3, 7, 7)).astype(np.float32),
             'layer1.0.conv1.weight': rng.normal(size=(8, 8, 1, 1)).astype(np.float32)},
            str(tmp / 'headless.safetensors'))
  save_file({'fc.weight': np.zeros((10, 8), np.float32)}, str(tmp / 'head_only.safetensors'))
  try:
    import torch
    torch.save([torch.zeros(2)], str(tmp / 'list.pth'))
  except ImportError:
    pass
  return {p.name: str(p) for p in tmp.iterdir()} | {'tmp': str(tmp)}


# (command, arguments, a fragment of the error line). {name} is a path from `files`.
CASES = [
    # Config files and fields (rs.main; every command with a --config parses it the same way).
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.model.name=resnet3d_rs50'],
     'a 3D network takes video clips: set --config.data.frames'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.data.frames=8'],
     'takes images: leave data.frames unset'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.model.name=resnet3d_rs50',
                 '--config.data.frames=8', '--config.data.name=folder'],
     'data.name=folder reads ROOT/SPLIT/CLASS/video files'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.batch_sise=8'],
     'the config has no field batch_sise; did you mean --config.batch_size?'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.model.nme=x'],
     'did you mean --config.model.name?'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.trian_steps=None'],
     'did you mean --config.train_steps?'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.batch_size=abc'],
     "--config.batch_size=abc: invalid literal for int() with base 10: 'abc'"),
    ('rs.main', ['--config=configs/tiny.pyy', '--workdir={tmp}/w'],
     'config file configs/tiny.pyy does not exist; did you mean configs/tiny.py?'),
    ('rs.main', ['--config={syntax.py}', '--workdir={tmp}/w'], 'line 1: invalid syntax'),
    ('rs.main', ['--config={no_get_config.py}', '--workdir={tmp}/w'], 'defines no get_config()'),
    ('rs.main', [f'--config={TINY}', '--workdr={tmp}/w'], 'workdir'),
    ('rs.main', [f'--config={TINY}', '--workdir={tmp}/w', '--config.model.name=resnetrs51'],
     'not a registered model; did you mean'),
    # Weights and runs.
    ('rs.evaluate', ['--weights={empty_dir}'], 'holds no rs weights (no model.json)'),
    ('rs.export', ['--workdir={empty_dir}', '--out={tmp}/out'], 'not a run directory'),
    ('rs.predict', ['--checkpoint={empty_dir}', 'x.png'], 'holds no rs weights'),
    # rs.convert: never torch's advice to load with weights_only=False (it would run code).
    ('rs.convert', ['--checkpoint={tmp}/missing.pth', '--out={tmp}/c'], 'does not exist'),
    ('rs.convert', ['--checkpoint={notes.pth}', '--out={tmp}/c'],
     'cannot read {notes.pth} as a PyTorch state dict of tensors'),
    ('rs.convert', ['--checkpoint={list.pth}', '--out={tmp}/c'],
     'holds a list, not a state dict of tensors'),
    ('rs.convert', ['--checkpoint={empty.safetensors}', '--out={tmp}/c'], 'holds no tensors'),
    ('rs.convert', ['--checkpoint={zero.safetensors}', '--out={tmp}/c'],
     'cannot read {zero.safetensors} as safetensors'),
    ('rs.convert', ['--checkpoint={headless.safetensors}', '--out={tmp}/c'],
     'a timm ResNet without its classifier'),
    ('rs.convert', ['--checkpoint={head_only.safetensors}', '--model=resnetrs5', '--out={tmp}/c'],
     "unknown model 'resnetrs5'; did you mean resnetrs50?"),
    # The tools.
    ('rs.tools.summary', ['--image_size=0'], '--image_size=0: too small for resnetrs50'),
    ('rs.tools.summary', ['--image_size=-5'], 'needs at least 17 px; raise --image_size'),
    ('rs.tools.summary', ['--model=resnetrs5'], 'did you mean resnetrs50?'),
    ('rs.tools.summary', ['--width_multiplier=-1'], '--width_multiplier=-1: give a channel'),
    ('rs.tools.benchmark', ['--image_size=0'], '--image_size=0: too small for resnetrs50'),
    ('rs.tools.benchmark', ['--batch_size=0'], '--batch_size=0: give 1 or more'),
    ('rs.tools.benchmark', ['--batch_size=3', '--devices=2'],
     '--batch_size=3 does not split over --devices=2'),
    ('rs.tools.benchmark', ['--devices=1,1'], 'distinct counts'),
    ('rs.tools.layer_bench', ['--image_size=0'], '--image_size=0: too small for resnetrs50'),
    ('rs.tools.precision', ['--image_size=3'], '--image_size=3: too small for resnetrs50'),
    ('rs.tools.precision', ['--batch_size=0'], '--batch_size=0: 0 is not a positive integer'),
    ('rs.tools.benchmark', ['--model=resnetrs51'], "unknown model 'resnetrs51'; did you mean"),
    ('rs.tools.benchmark', ['--compare=pytorch'], 'only timm'),
    ('rs.tools.benchmark', ['--compare=timm', '--width_multiplier=0.5'], 'released architecture'),
    ('rs.predict', ['--checkpoint={empty_dir}', '--batch_size=0', 'x.png'],
     '--batch_size=0: give 1 or more'),
    ('rs.tools.show_augment', [f'--config={TINY}', '--out={tmp}/missing/a.png'],
     'the folder {tmp}/missing does not exist'),
    ('rs.tools.show_augment', [f'--config={TINY}', '--out={tmp}'], 'give the path of a .png'),
    ('rs.tools.show_augment', [f'--config={TINY}', '--rows=0'], '--rows=0: 0 is not a positive integer'),
    ('rs.tools.photo_dataset', ['--num_classes=40', '--out={tmp}/p'],
     '--num_classes=40: 40 is not an integer in the range [1, 16]'),
    ('rs.tools.sweep', [f'--config={TINY}', '--out={tmp}/s', '--widths=-1', '--dry_run'],
     '--widths=-1: give values above 0'),
    ('rs.tools.sweep', [f'--config={TINY}', '--out={tmp}/s', '--depths=51', '--dry_run'],
     '51 is not registered'),
    ('rs.tools.sweep', [f'--config={TINY}', '--out={tmp}/s', '--depths=x', '--dry_run'],
     '--depths=x: give comma-separated integers'),
    ('rs.tools.sweep', [f'--config={TINY}', '--out={tmp}/s', '--models=efficientnet_b9',
                        '--dry_run'], "--models: unknown model 'efficientnet_b9'"),
    ('rs.tools.compare_models', ['--pairs=resnetrs101@192/efficientnet_b3'],
     "'efficientnet_b3': give MODEL@RESOLUTION"),
    ('rs.tools.compare_models', ['--pairs=resnetrs101@192'], 'give two networks'),
    ('rs.tools.bench_input', [f'--config={TINY}', '--data={empty_folder}'],
     'no .jpg/.jpeg/.png/.bmp/.gif files under {empty_folder}/train'),
    ('rs.tools.bench_input', [f'--config={TINY}', '--data={bad_folder}'],
     'none of the first 3 images decodes'),
    ('rs.tools.pareto', ['--runs={empty_dir}', '--out={tmp}/p'], 'no finished, benchmarked runs'),
    ('rs.pseudo_label', ['--teacher={empty_dir}', '--data=fashion_mnist', '--split=test',
                         '--out={tmp}/pl'], 'neither a weights directory'),
    ('rs.pseudo_label', ['--teacher={empty_dir}', '--data=fashion_mnist', '--out={tmp}/pl',
                         '--top_k=-1'], 'give --top_k >= 0'),
    ('rs.pseudo_label', ['--teacher={empty_dir}', '--data=fashion_mnist', '--out={tmp}/pl',
                         '--per_class=0'], '--per_class=0: give 1 or more'),
    ('rs.pseudo_label', ['--teacher={empty_dir}', '--data=fashion_mnist', '--out={tmp}/pl',
                         '--min_threshold=1.5'], 'give a confidence in [0, 1]'),
    ('rs.pseudo_label', ['--teacher={empty_dir}', '--data=fashion_mnist', '--out=/proc/rs/pl'],
     '--out=/proc/rs/pl: cannot write in /proc'),
    ('rs.tools.noisy_student', [f'--config={TINY}', '--out={tmp}/ns', '--data=fashion_mnist',
                                '--rounds=-1'], '--rounds=-1: give 0'),
    ('rs.tools.noisy_student', [f'--config={TINY}', '--out={tmp}/ns', '--data=fashion_mnist',
                                '--ratio=0.1'], 'ratio x batch_size=32 is 3.2 images per step'),
]


def _fill(text: str, files: dict) -> str:
  for name, path in files.items():
    text = text.replace('{' + name + '}', path)
  return text


@pytest.mark.parametrize('module,args,fragment', CASES,
                         ids=[f'{m}:{" ".join(a)[-40:]}' for m, a, _ in CASES])
def test_bad_input_is_one_error_line(module, args, fragment, files):
  if any('{list.pth}' in a for a in args) and 'list.pth' not in files:
    pytest.skip('needs torch')
  result = run_command(module, *[_fill(a, files) for a in args])
  lines = result.stderr.strip().splitlines()
  assert result.status == 1, result
  assert 'Traceback' not in result.stderr, result.stderr
  assert [line for line in lines if line.startswith('error:')] == lines[-1:], lines
  assert _fill(fragment, files) in lines[-1], lines[-1]
  assert 'weights_only' not in result.stderr
  assert not os.path.exists(os.path.join(files['tmp'], 'w'))  # rs.main wrote nothing


def test_ctrl_c_is_one_line_and_the_shells_status(monkeypatch):
  from rs.tools import summary

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(summary, 'summarize', interrupted)
  result = run_command('rs.tools.summary')
  assert result.status == 130
  assert result.stderr.strip().splitlines() == [
      'Stopped by Ctrl-C (nothing half-written is kept; run the same command again to go on).']


def test_a_config_field_can_be_set_to_none_from_the_command_line(monkeypatch):
  """A steps-based config switched back to epochs: train_steps=None, train_epochs=2."""
  from rs import train
  seen = {}
  monkeypatch.setattr(train, 'train_and_evaluate',
                      lambda config, workdir: seen.update(config=config, workdir=workdir))
  result = run_command('rs.main', f'--config={TINY}', '--workdir=/tmp/never',
                       '--config.train_steps=None', '--config.train_epochs=2',
                       '--config.data.data_dir=None', '--config.batch_size=16',
                       '--config.model.remat=none')
  assert result.status == 0, result
  c = seen['config']
  assert c.train_steps is None and c.train_epochs == 2 and c.batch_size == 16
  assert c.data.data_dir is None and seen['workdir'] == '/tmp/never'
  assert json.loads(c.to_json())['train_steps'] is None
  # Lower-case 'none' is a value, not None: remat off, not remat's CPU default ('auto').
  assert c.model.remat == 'none'


def save_tiny_weights(directory, config):
  """configs/tiny.py's network, initialised, as a weights directory."""
  import jax
  import jax.numpy as jnp
  from rs import programs, weights
  model = programs.build_model(config, 10)
  variables = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 24, 24, 1)),
                                         train=False))()
  weights.save(str(directory), variables, weights.describe(config, 10, 1))


def test_weights_that_do_not_match_their_description_are_one_line(tmp_path, tiny):
  """rs.evaluate on a weights directory whose arrays are another network's than model.json
  says (width 0.125 saved, 0.25 described): one line naming the difference, not orbax's tree
  diff."""
  save_tiny_weights(tmp_path / 'w', tiny())
  described = json.loads((tmp_path / 'w' / 'model.json').read_text())
  described['architecture']['width_multiplier'] = 0.25
  (tmp_path / 'w' / 'model.json').write_text(json.dumps(described))
  result = run_command('rs.evaluate', f'--weights={tmp_path}/w')
  lines = result.stderr.strip().splitlines()
  assert result.status == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert [line for line in lines if line.startswith('error:')] == lines[-1:]
  assert 'do not fit the network model.json describes' in lines[-1], lines[-1]
  assert 'partial_restore' not in result.stderr


def test_an_evaluation_batch_the_devices_do_not_divide_names_the_flag(tmp_path, tiny):
  """rs.evaluate --batch_size=12 on the tests' 8 devices: one line naming --batch_size (the
  config's field only when the batch comes from --config)."""
  save_tiny_weights(tmp_path / 'w', tiny())
  result = run_command('rs.evaluate', f'--weights={tmp_path}/w', '--batch_size=12')
  assert result.status == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      'error: eval_batch_size=12 does not divide over 8 devices: set --batch_size to a multiple '
      'of 8')
  result = run_command('rs.evaluate', f'--weights={tmp_path}/w', '--config=configs/tiny.py',
                       '--config.eval_batch_size=100')
  assert result.stderr.strip().splitlines()[-1].endswith(
      'set --config.eval_batch_size to a multiple of 8')
