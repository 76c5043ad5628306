"""A config, dataset or workdir that cannot work fails before anything is compiled or written:
one line naming the field and the fix, and the workdir left as it was."""
import glob
import json
import os
import re
import subprocess
import sys
import time

import jax
import pytest

from conftest import ROOT, process_env
from rs import rundir, sharding, train, validate
from rs.errors import UserError


def tiny(**overrides):
  from conftest import tiny_config  # configs/tiny.py: 24 px, batch 32 over the 8 devices
  return tiny_config(**overrides)


def assign(config, field: str, value) -> None:
  *parents, key = field.split('.')
  for p in parents:
    config = config[p]
  config[key] = value


def snapshot(path: str):
  """Every file and folder under `path` with its size and time; None if `path` is absent."""
  if not os.path.exists(path):
    return None
  out = {}
  for folder, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(folder, name)
      out[os.path.relpath(full, path)] = (os.path.getsize(full), os.stat(full).st_mtime_ns)
  return out


def fails(config, workdir: str, *fragments: str, mesh=None) -> str:
  """train_and_evaluate stops with a one-line ConfigError holding `fragments`, and `workdir`
  (and the folder it would be created in) is as it was."""
  parent = os.path.dirname(workdir)
  before = snapshot(workdir), snapshot(parent)
  with pytest.raises(validate.ConfigError) as error:
    train.train_and_evaluate(config, workdir, mesh=mesh)
  message = str(error.value)
  assert '\n' not in message
  for fragment in fragments:
    assert fragment in message
  assert (snapshot(workdir), snapshot(parent)) == before
  return message


def config_files():
  return sorted(os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                if not f.endswith('__init__.py'))


@pytest.mark.parametrize('name', config_files())
def test_every_config_file_passes_on_one_device(name, tmp_path):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  one_device = sharding.create_mesh(jax.devices()[:1])
  if config.init_from == '':  # configs/finetune.py: the user's weights and images
    with pytest.raises(validate.ConfigError, match=r'^data.data_dir=.*--config.data.data_dir'):
      validate.check_config(config, one_device)
    for split in ('train', 'validation'):
      for label in ('cat', 'dog'):
        (tmp_path / 'images' / split / label).mkdir(parents=True)
    config.data.data_dir = str(tmp_path / 'images')
    with pytest.raises(validate.ConfigError, match=r'^init_from=.*--config.init_from'):
      validate.check_config(config, one_device)
    (tmp_path / 'weights' / 'variables').mkdir(parents=True)
    (tmp_path / 'weights' / 'model.json').write_text('{}')
    config.init_from = str(tmp_path / 'weights')
  if config.data.get('frames') and config.data.data_dir == '':  # the user's (or made) videos
    with pytest.raises(validate.ConfigError, match=r'^data.data_dir=.*--config.data.data_dir'):
      validate.check_config(config, one_device)
    for split in (config.data.train_split, config.data.eval_split):
      for label in ('abseiling', 'archery'):
        (tmp_path / 'videos' / split / label).mkdir(parents=True)
    config.data.data_dir = str(tmp_path / 'videos')
  validate.check_config(config, one_device)


@pytest.mark.parametrize('model, stem_pool, smallest', [
    ('resnetrs26', None, 17),  # deep stem, conv pool: 5 stride-2 layers, total stride 32
    ('resnet26', None, 17),  # classic 7x7/2 stem and max pool: the same strides
    ('resnetrs26', 'none', 9),  # no stem pool: 4 stride-2 layers, total stride 16
])
def test_image_size_must_reach_the_last_stride(model, stem_pool, smallest):
  mesh = sharding.create_mesh()
  for size in (smallest, 24, 32):
    config = tiny()
    config.model.name, config.model.stem_pool, config.data.image_size = model, stem_pool, size
    validate.check_config(config, mesh)
  config.data.image_size = smallest - 1
  stride = 2**(5 if stem_pool is None else 4)
  with pytest.raises(validate.ConfigError, match=rf'data\.image_size={smallest - 1}: too small '
                     rf'for {model}: it shrinks its input {stride}x, and its last stride-2 '
                     rf'layer needs at least 2x2 pixels, so the image needs at least {smallest} '
                     rf'px; raise --config\.data\.image_size'):
    validate.check_config(config, mesh)


# (settings, field the message names, what else it says). Each leaves the rest of tiny() valid.
BAD_CONFIGS = {
    'unknown model': ({'model.name': 'resnetrs51'}, 'model.name', 'did you mean resnetrs50'),
    'zero batch': ({'batch_size': 0}, 'batch_size', 'an integer >= 1'),
    'negative eval batch': ({'eval_batch_size': -8}, 'eval_batch_size', 'an integer >= 1'),
    'batch over devices': ({'batch_size': 30}, 'batch_size',
                           'does not divide over 8 devices: set --config.batch_size to a '
                           'multiple of 8'),
    'eval batch over devices': ({'eval_batch_size': 60}, 'eval_batch_size',
                                'does not divide over 8 devices'),
    'image too small': ({'data.image_size': 16}, 'data.image_size', 'needs at least 17 px'),
    'zero image size': ({'data.image_size': 0}, 'data.image_size', 'an integer >= 1'),
    'three stages': ({'model.stage_sizes': (1, 1, 1)}, 'model.stage_sizes', 'four block counts'),
    'empty stage': ({'model.stage_sizes': (1, 0, 1, 1)}, 'model.stage_sizes', '>= 1'),
    'zero width': ({'model.width_multiplier': 0.0}, 'model.width_multiplier', '> 0'),
    'zero train steps': ({'train_steps': 0}, 'train_steps', 'an integer >= 1'),
    'zero train epochs': ({'train_steps': None, 'train_epochs': 0.0}, 'train_epochs', '> 0'),
    'negative warmup': ({'warmup_steps': -1}, 'warmup_steps', '>= 0'),
    'warmup beyond training': ({'warmup_steps': 7}, 'warmup_steps',
                               'longer than training (train_steps=6)'),
    'warmup epochs beyond training': (
        {'train_steps': None, 'warmup_steps': None, 'train_epochs': 1.0, 'warmup_epochs': 2.0},
        'warmup_epochs', 'at most 1.0'),
    'zero log interval': ({'log_every_steps': 0}, 'log_every_steps', 'an integer >= 1'),
    'zero checkpoint interval': ({'checkpoint_every_steps': 0}, 'checkpoint_every_steps', '>= 1'),
    'no checkpoints kept': ({'keep_checkpoints': 0}, 'keep_checkpoints', '>= 1'),
    'zero eval interval': ({'eval_every_steps': 0}, 'eval_every_steps', '>= 1'),
    'dropout of 1': ({'model.dropout_rate': 1.0}, 'model.dropout_rate', '[0, 1)'),
    'negative stochastic depth': ({'model.stochastic_depth_rate': -0.1},
                                  'model.stochastic_depth_rate', '[0, 1)'),
    'label smoothing of 1': ({'label_smoothing': 1.0}, 'label_smoothing', '[0, 1)'),
    'EMA decay of 1': ({'ema_decay': 1.0}, 'ema_decay', '[0, 1)'),
    'negative learning rate': ({'optimizer.base_learning_rate': -0.1},
                               'optimizer.base_learning_rate', '>= 0'),
    'unknown dtype': ({'dtype': 'float16'}, 'dtype', "'float32', 'bfloat16'"),
    'unknown stem pool': ({'model.stem_pool': 'avg'}, 'model.stem_pool', "'conv', 'max', 'none'"),
    'unknown non-finite policy': ({'on_nonfinite': 'ignore'}, 'on_nonfinite', "'stop', 'skip'"),
    'unknown augment': ({'data.augment': 'random_crop'}, 'data.augment', "'inception_crop'"),
    'BN group not dividing the batch': ({'model.bn_group_size': 5}, 'model.bn_group_size',
                                        'does not divide batch_size=32'),
    'unknown dataset': ({'data.name': 'fashion_mnst'}, 'data.name',
                        'no such tfds dataset (registered, or prepared in'),
    'unknown fashion_mnist split': ({'data.eval_split': 'validation'}, 'data.eval_split',
                                    "'train' or 'test'"),
    'malformed split slice': ({'data.train_split': 'train[:1k]'}, 'data.train_split',
                              "'test[:500]'"),
    'missing manual_dir': ({'data.manual_dir': '/nonexistent/fashion'}, 'data.manual_dir',
                           'no such folder'),
}


@pytest.mark.parametrize('case', list(BAD_CONFIGS))
def test_bad_config_fails_in_one_line_before_the_workdir_is_created(case, tmp_path):
  settings, field, says = BAD_CONFIGS[case]
  config = tiny()
  for key, value in settings.items():
    assign(config, key, value)
  message = fails(config, str(tmp_path / 'run'), says, f'--config.{field}')
  assert message.startswith(f'{field}=')


def test_close_dataset_names_are_suggested(tmp_path):
  """Looked up offline, at once, leaving no folders (tfds.builder would search community
  catalogues over the network and retry for minutes)."""
  config = tiny()
  config.data.name = 'imagenet2021'
  config.data.data_dir = str(tmp_path)
  start = time.monotonic()
  with pytest.raises(validate.ConfigError, match='did you mean imagenet2012'):
    validate.check_config(config, sharding.create_mesh())
  assert time.monotonic() - start < 30 and os.listdir(tmp_path) == []


def test_batch_must_divide_over_hosts(monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 3)  # 8 devices seen as spread over 3 hosts
  with pytest.raises(validate.ConfigError, match=r'^batch_size=32 does not divide over 3 hosts: '
                     r'set --config\.batch_size to a multiple of 24$'):
    validate.check_config(tiny(), sharding.create_mesh())
  validate.check_config(tiny(batch_size=48, eval_batch_size=24), sharding.create_mesh())


def test_one_device_takes_any_batch_and_bn_group_dividing_it():
  config = tiny(batch_size=30, eval_batch_size=50)
  config.model.bn_group_size = 15
  validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))


def folder_config(root, **splits):
  config = tiny()
  config.data.update(name='folder', data_dir=root, augment='inception_crop',
                     **{'train_split': 'train', **splits})
  return config


def test_class_folder_splits_must_exist(tmp_path):
  root = tmp_path / 'photos'
  for split in ('train', 'validation'):
    (root / split / 'cat').mkdir(parents=True)
  mesh = sharding.create_mesh()
  # One class would train to loss 0 and learn nothing.
  fails(folder_config(str(root), eval_split='validation'), str(tmp_path / 'run'),
        f"data.train_split='train': {root}/train has 1 class folder (cat): a classifier needs "
        'at least 2')
  (root / 'train' / 'dog').mkdir()
  validate.check_config(folder_config(str(root), eval_split='validation'), mesh)
  fails(folder_config(str(root), eval_split='val'), str(tmp_path / 'run'),
        "data.eval_split='val': ", 'split folders (train, validation)')
  fails(folder_config(str(tmp_path / 'nothing')), str(tmp_path / 'run'),
        'data.data_dir=', '--config.data.data_dir to ROOT')
  config = folder_config(str(root), eval_split='validation')
  config.data.augment = 'pad_crop'
  fails(config, str(tmp_path / 'run'), "data.augment='pad_crop'", "'inception_crop'")


def imagenet_config(data_dir):
  from configs import rs50_i160
  config = rs50_i160.get_config()
  config.data.data_dir = data_dir
  return config


def test_imagenet_without_prepared_data_or_manual_dir_fails_in_one_line(tmp_path):
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  fails(imagenet_config(str(data_dir)), str(tmp_path / 'run'),
        f'no prepared imagenet2012 in {data_dir}', '--config.data.manual_dir=FOLDER')
  assert os.listdir(data_dir) == []  # nothing was downloaded or prepared
  config = imagenet_config(str(data_dir))
  config.data.manual_dir = str(tmp_path / 'downloads')
  fails(config, str(tmp_path / 'run'), f"data.manual_dir='{tmp_path}/downloads': no such folder")


def test_tfds_split_must_exist(tmp_path):
  pytest.importorskip('skimage.data')
  from rs.tools import photo_dataset
  data_dir = str(tmp_path / 'tfds')
  items = photo_dataset.examples(2, 1, size=(40, 30))
  photo_dataset.write_tfds(data_dir, 'rs_photos', {'train': items, 'validation': items}, 2)
  config = imagenet_config(data_dir)
  config.data.name = 'rs_photos'
  config.batch_size = config.eval_batch_size = 8
  validate.check_config(config, sharding.create_mesh())  # a dataset tfds has no code for
  for field in ('eval_split', 'train_split'):
    config = imagenet_config(data_dir)
    config.data.update(name='rs_photos', **{field: 'test'})
    fails(config, str(tmp_path / 'run'), "rs_photos has splits ['train', 'validation'], "
          "not 'test'")


def test_warmup_in_epochs_longer_than_training_in_steps(tmp_path):
  config = tiny(warmup_steps=None, warmup_epochs=1.0)  # 100 steps of 32 > 6
  fails(config, str(tmp_path / 'run'), 'warmup_epochs=1.0: 100 warmup steps, longer than the '
        '6 training steps', '--config.warmup_epochs')


def test_unwritable_workdirs(tmp_path):
  (tmp_path / 'file.txt').write_text('not a folder')
  fails(tiny(), str(tmp_path / 'file.txt' / 'run'), f'{tmp_path}/file.txt is a file, not a '
        'folder', '--workdir')
  fails(tiny(), str(tmp_path / 'file.txt'), 'is a file, not a folder')
  assert (tmp_path / 'file.txt').read_text() == 'not a folder'
  # Permission bits do not stop root (the tests' user), /proc does.
  with pytest.raises(validate.ConfigError, match=r'^--workdir=/proc/rs-test/run: cannot write '
                     r'in /proc \(.*\); choose a --workdir you can write$'):
    validate.check_workdir(tiny(), '/proc/rs-test/run')


def test_writable_workdir_is_not_created_by_the_check(tmp_path):
  validate.check_workdir(tiny(), str(tmp_path / 'new' / 'run'))
  (tmp_path / 'old').mkdir()
  validate.check_workdir(tiny(), str(tmp_path / 'old'))
  assert snapshot(str(tmp_path)) == {'old': snapshot(str(tmp_path))['old']}


def saved_run(workdir: str, config, checkpoint: str = '3'):
  """A workdir as a run leaves it: its config.json (rs.rundir's) and checkpoints/<step>."""
  rundir.write_config(workdir, config)
  os.makedirs(os.path.join(workdir, 'checkpoints', checkpoint))


def test_resuming_a_different_model_fails(tmp_path):
  workdir = str(tmp_path / 'run')
  saved_run(workdir, tiny())
  config = tiny()
  config.model.stage_sizes = (2, 2, 2, 2)
  config.data.name = 'cifar10'
  message = fails(config, workdir, f'--workdir={workdir} holds checkpoints of another model: '
                  'model.stage_sizes saved (1, 1, 1, 1), now (2, 2, 2, 2); data.name saved '
                  "'fashion_mnist', now 'cifar10'; use a new --workdir, or these saved values")
  assert 'model.name' not in message  # unchanged
  config = tiny()
  config.model.name, config.model.stage_sizes = 'resnetrs50', None
  fails(config, workdir, "model.name saved 'resnetrs14', now 'resnetrs50'; model.stage_sizes "
        'saved (1, 1, 1, 1), now (3, 4, 6, 3)')


def test_resuming_with_changes_that_keep_the_parameters_passes(tmp_path):
  workdir = str(tmp_path / 'run')
  saved = tiny()
  saved.model.stage_sizes = None  # a placeholder: null in config.json
  saved.model.name = 'resnetrs50'
  saved_run(workdir, saved)
  assert json.load(open(os.path.join(workdir, 'config.json')))['model']['stage_sizes'] is None
  config = tiny(dtype='bfloat16')
  config.model.update(name='resnetrs26', stage_sizes=(3, 4, 6, 3), dropout_rate=0.5,
                      stochastic_depth_rate=0.2, bn_group_size=4, conv_lowering='native')
  config.data.image_size = 32
  validate.check_workdir(config, workdir)  # the same network, spelled differently


def test_saved_config_without_a_finished_checkpoint_is_not_resumed(tmp_path):
  workdir = str(tmp_path / 'run')
  saved_run(workdir, tiny(), checkpoint='3.orbax-checkpoint-tmp-1700000000')  # unfinished
  config = tiny()
  config.model.name = 'resnetrs50'
  validate.check_workdir(config, workdir)
  assert not rundir.has_checkpoint(workdir)
  assert not rundir.has_checkpoint(str(tmp_path / 'nothing'))


def run_main(*args):
  return subprocess.run([sys.executable, '-m', 'rs.main', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


def check_one_error_line(process, workdir, *fragments):
  """Exit status 1, no traceback, stderr ends with the one `error:` line (absl and TF log
  lines may come before it), nothing on stdout, no workdir."""
  lines = process.stderr.strip().splitlines()
  assert process.returncode == 1, process.stderr[-3000:]
  assert 'Traceback' not in process.stderr and process.stdout == ''
  assert [line for line in lines if line.startswith('error:')] == lines[-1:]
  for fragment in fragments:
    assert fragment in lines[-1]
  assert not os.path.exists(workdir)
  log = re.compile(r'^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl)')
  assert all(log.match(line) for line in lines[:-1]), lines


def test_command_line_unknown_model(tmp_path):
  workdir = str(tmp_path / 'run')
  process = run_main('--config=configs/fashion_mnist.py', f'--workdir={workdir}',
                     '--config.model.name=resnetrs51')
  check_one_error_line(process, workdir, "error: model.name='resnetrs51': not a registered "
                       'model; did you mean resnetrs50', '--config.model.name')


def test_command_line_missing_dataset(tmp_path):
  workdir = str(tmp_path / 'run')
  process = run_main('--config=configs/rs50_i160.py', f'--workdir={workdir}',
                     f'--config.data.data_dir={tmp_path}')
  check_one_error_line(process, workdir, f'error: no prepared imagenet2012 in {tmp_path}',
                       '--config.data.manual_dir')


def test_command_line_cpu_devices_makes_that_many_devices(tmp_path):
  """--cpu_devices=3 in a process started without XLA_FLAGS: the trainer sees 3 CPU devices,
  which the tiny config's batch of 32 does not divide (so no training is needed to tell)."""
  workdir = str(tmp_path / 'run')
  env = process_env()
  process = subprocess.run(
      [sys.executable, '-m', 'rs.main', '--config=configs/tiny.py', f'--workdir={workdir}',
       '--cpu_devices=3'], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  check_one_error_line(process, workdir, 'batch_size=32 does not divide over 3 devices',
                       'a multiple of 3')


def test_every_augment_the_pipelines_offer_is_accepted(tmp_path):
  """validate takes its choices from the pipelines (rs.data.pipeline.AUGMENTS): 'none'
  (in memory, no augmentation) validates and builds."""
  from rs.data import in_memory, pipeline as pipeline_lib
  assert set(pipeline_lib.AUGMENTS) == {'inception_crop', 'pad_crop', 'none'}
  config = tiny()
  config.data.augment = 'none'
  validate.check_config(config, sharding.create_mesh())
  built = pipeline_lib.create_pipeline(config)
  assert isinstance(built, in_memory.InMemoryPipeline) and built.augment == 'none'


def test_a_run_directory_is_no_init_from(tmp_path):
  """A workdir holds a model.json too (rs.train's description), but no weights: named."""
  workdir = str(tmp_path / 'source')
  saved_run(workdir, tiny())
  (tmp_path / 'source' / 'model.json').write_text('{}')
  fails(tiny(init_from=workdir), str(tmp_path / 'run'), f'init_from={workdir!r}: no model.json '
        'and variables there (this is a run directory: rs.export it first)')


def test_a_grayscale_config_on_colour_images_is_refused_before_anything_is_written(tmp_path):
  """Fashion-MNIST's one mean/std value on RGB class folders: caught where it starts, not by
  rs.predict after training and export."""
  pytest.importorskip('skimage.data')
  from rs.tools import photo_dataset
  root = str(tmp_path / 'photos')
  items = photo_dataset.examples(2, 4, size=(40, 30))
  for split in ('train', 'validation'):
    photo_dataset.write_folder(root, split, items)
  config = folder_config(root, eval_split='validation')
  config.batch_size = config.eval_batch_size = 8
  with pytest.raises(validate.ConfigError, match=re.escape(
      "data.mean=(72.93,): 1 value for images with 3 channels (folder train): give one per "
      "channel, e.g. ImageNet's (123.675, 116.28, 103.53)")):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('mode, says', [
    ('skip', 'too few images of train decode to fill an epoch'),
    ('stop', 'undecodable image '),
])
def test_a_dataset_that_does_not_decode_leaves_no_workdir(tmp_path, mode, says):
  """Found when the first batch is read (after the workdir is set up): one line, and the
  workdir this run created is removed again."""
  root = tmp_path / 'junk'
  for split in ('train', 'validation'):
    for label in ('cat', 'dog'):
      (root / split / label).mkdir(parents=True)
      for i in range(8):
        (root / split / label / f'{i}.jpg').write_text('not a jpeg')
  config = folder_config(str(root), eval_split='validation')
  config.data.update(mean=(127.5,) * 3, std=(58.0,) * 3, bad_images=mode)
  config.batch_size = config.eval_batch_size = 8
  with pytest.raises(UserError, match=says):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
