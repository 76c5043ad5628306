"""Checks of a run's config, data and workdir before anything is compiled or written.

Every failure is a `ConfigError`: one line naming the field and the fix. rs.main prints it
and exits non-zero, leaving the workdir as it was.
"""
import contextlib
import difflib
import numbers
import os
import re
import uuid

from etils import epath

from rs import models, optim, rundir, sharding, transfer
from rs.data import sources
from rs.errors import ConfigError, one_line
from rs.models import architecture, convolution, layers, registry, resnet


def check_config(config, mesh) -> None:
  """Checks `config` against the devices of `mesh`; writes nothing.

  Reads only what names the data: tfds's list of datasets, and the folders the config points
  at (data.data_dir for data.name=folder, data.manual_dir). Whether a tfds dataset is prepared
  and has the configured splits is known once it is opened (rs.data.records), see
  `data_errors`.
  """
  _check_model(config)
  _check_numbers(config)
  _check_choices(config)
  _check_durations(config)
  _check_image_size(config)
  _check_batches(config, mesh)
  _check_data(config.data)
  _check_pseudo(config, mesh)
  _check_init(config)


def _check_pseudo(config, mesh) -> None:
  """data.pseudo: a ratio giving whole images per step, split evenly like the labeled batch;
  a directory when it is on; known targets; a positive temperature (the directory itself is
  read when the pipeline opens it: rs.data.pseudo)."""
  p = config.data.get('pseudo')
  if p is None:
    return  # a config from before data.pseudo
  ratio = p.ratio or 0
  if not isinstance(ratio, numbers.Real) or ratio < 0:
    _fail('data.pseudo.ratio', ratio, 'set --config.data.pseudo.ratio to 0 (off) or more '
          '(pseudo-labeled images per labeled one)')
  if ratio == 0:
    return
  if not p.dir:
    _fail('data.pseudo.dir', p.dir, 'set --config.data.pseudo.dir to an rs.pseudo_label '
          'output directory (or --config.data.pseudo.ratio=0)')
  rows = ratio * config.batch_size
  if abs(rows - round(rows)) > 1e-9 or round(rows) < 1:
    _fail('data.pseudo.ratio', ratio, f'ratio x batch_size={config.batch_size} is {rows:g} '
          'images per step: choose a ratio that makes it a whole number')
  sharding.check_batch_size('pseudo-labeled images per step (data.pseudo.ratio x batch_size)',
                            round(rows), mesh, '--config.data.pseudo.ratio')
  if p.targets not in ('soft', 'hard'):
    _fail('data.pseudo.targets', p.targets, "set --config.data.pseudo.targets to 'soft' (the "
          "teacher's probabilities) or 'hard' (its argmax)")
  if not isinstance(p.temperature, numbers.Real) or p.temperature <= 0:
    _fail('data.pseudo.temperature', p.temperature, 'give a temperature above 0 (1: the '
          "teacher's probabilities as they are)")
  if p.loss_weight is not None and (not isinstance(p.loss_weight, numbers.Real)
                                    or p.loss_weight < 0):
    _fail('data.pseudo.loss_weight', p.loss_weight, 'give 0 or more, or None (the ratio: '
          'every image weighs the same)')


def check_workdir(config, workdir: str) -> None:
  """The workdir can be written, and a run saved there trained the same model.

  Changes nothing in an existing local workdir (its permissions tell); a new or remote one is
  tested with a file written and removed where it will be created (or in it, on gs://).
  """
  check_writable(workdir)
  _check_resume(config, workdir)


def check_durations(config, steps_per_epoch: float) -> None:
  """Warmup is no longer than training, in steps: for durations given in different units,
  known once the dataset is open (check_config compares those given in the same unit)."""
  train = optim.steps_for(config, 'train', steps_per_epoch)
  warmup = optim.steps_for(config, 'warmup', steps_per_epoch)
  if warmup > train:
    field = 'warmup_steps' if config.warmup_steps is not None else 'warmup_epochs'
    _fail(field, config[field], f'{warmup} warmup steps, longer than the {train} training '
          f'steps ({steps_per_epoch:.4g} per epoch): lower --config.{field}')


@contextlib.contextmanager
def data_errors():
  """Errors raised while the dataset is opened become ConfigErrors (one line each).

  Opening a dataset raises FileNotFoundError (not downloaded or prepared, with where it looked
  and how to prepare it) or ValueError (unknown split, too few examples) with a message that
  names the fix; rs.main prints ConfigErrors without a traceback, and no other error: a
  ValueError from anywhere else stays a bug report with its traceback.
  """
  try:
    yield
  except ConfigError:
    raise
  except (FileNotFoundError, ValueError) as e:
    raise ConfigError(one_line(e, limit=None)) from e  # one line, however it was written


def _fail(field: str, value, fix: str):
  raise ConfigError(f'{field}={value!r}: {fix}')


_MISSING = object()


def _get(config, field: str):
  """`config.a.b` for field 'a.b'; _MISSING if a config made by hand lacks it (unchecked)."""
  for key in field.split('.'):
    if key not in config:
      return _MISSING
    config = config[key]
  return config


# The model.

def _check_model(config) -> None:
  name = config.model.name
  if name not in registry.MODELS:
    close = difflib.get_close_matches(str(name), registry.MODELS, n=3)
    hint = f'did you mean {" or ".join(close)}? ' if close else ''
    depths = ', '.join(str(d) for d in registry.STAGE_SIZES)
    _fail('model.name', name, f'not a registered model; {hint}set --config.model.name to '
          f'resnetrsD (ResNet-RS) or resnetD (plain ResNet), D in {depths}, or '
          'efficientnet_b0 ... efficientnet_b7')
  video = registry.family(name) is registry.ResNet3D
  if video != bool(config.data.get('frames')):
    if video:
      _fail('model.name', name, 'a 3D network takes video clips: set --config.data.frames '
            '(e.g. 32) and videos (data.name=folder or a tfds video dataset), or use a 2D model')
    _fail('data.frames', config.data.frames, f'{name} takes images: leave data.frames unset, '
          'or use a 3D network (resnet3d_rs50, ...)')
  if config.data.get('eval_image_size') is not None and not video:
    _fail('data.eval_image_size', config.data.eval_image_size, 'applies to video clips only '
          '(images evaluate at data.image_size): leave it unset')
  if video and config.data.get('channels') not in (None, 3):
    _fail('data.channels', config.data.channels, 'video clips are RGB so far: leave it unset')
  if config.data.get('flip', True) is not True and not video:
    _fail('data.flip', config.data.flip, 'turns flips off for video clips only so far (images '
          'are always flipped): leave it True')
  foreign = sorted(k for k, v in config.model.items()
                   if k != 'name' and v is not None and k not in registry.fields_of(name))
  if foreign:
    _fail(f'model.{foreign[0]}', config.model[foreign[0]], f'{name} has no such field (family '
          f'{registry.family(name).__name__}): leave --config.model.{foreign[0]} unset')
  stages = config.model.stage_sizes
  if stages is not None and (
      not isinstance(stages, (tuple, list)) or len(stages) != 4
      or not all(_is_int(s) and s >= 1 for s in stages)):
    _fail('model.stage_sizes', stages, 'set --config.model.stage_sizes to four block counts '
          '>= 1, e.g. "(3,4,6,3)"')


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


# (field, test, what a valid value is): single values. Optional (placeholder) fields are
# checked only when set.
_INT_FROM_1 = (lambda v: _is_int(v) and v >= 1, 'an integer >= 1')
_INT_FROM_0 = (lambda v: _is_int(v) and v >= 0, 'an integer >= 0')
_POSITIVE = (lambda v: _is_number(v) and v > 0, 'a number > 0')
_NON_NEGATIVE = (lambda v: _is_number(v) and v >= 0, 'a number >= 0')
_FRACTION = (lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)')
_CLOSED_FRACTION = (lambda v: _is_number(v) and 0 <= v <= 1, 'a number in [0, 1]')
_OPEN_CLOSED_FRACTION = (lambda v: _is_number(v) and 0 < v <= 1, 'a number in (0, 1]')

NUMBERS = (
    ('batch_size', *_INT_FROM_1),
    ('eval_batch_size', *_INT_FROM_1),
    ('data.image_size', *_INT_FROM_1),
    ('log_every_steps', *_INT_FROM_1),
    ('checkpoint_every_steps', *_INT_FROM_1),
    ('keep_checkpoints', *_INT_FROM_1),
    ('model.width_multiplier', *_POSITIVE),
    ('model.se_ratio', *_NON_NEGATIVE),  # 0: no Squeeze-Excite
    ('model.dropout_rate', *_FRACTION),
    ('model.stochastic_depth_rate', *_FRACTION),
    ('model.bn_momentum', *_CLOSED_FRACTION),  # 1 freezes the BN statistics (fine-tuning)
    ('model.bn_epsilon', *_POSITIVE),
    ('model.bn_group_size', *_INT_FROM_1),
    ('label_smoothing', *_FRACTION),
    ('ema_decay', *_FRACTION),
    # 0 is allowed: it freezes the weights (an evaluation of init_from through the trainer).
    ('optimizer.base_learning_rate', *_NON_NEGATIVE),
    ('optimizer.momentum', *_FRACTION),
    ('optimizer.weight_decay', *_NON_NEGATIVE),
    ('optimizer.decay_rate', lambda v: _is_number(v) and 0 < v <= 1, 'a number in (0, 1]'),
    ('optimizer.decay_epochs', *_POSITIVE),
    ('optimizer.rmsprop_decay', *_FRACTION),
    ('optimizer.rmsprop_epsilon', *_POSITIVE),
    ('model.depth_multiplier', *_POSITIVE),
    ('data.crop_padding', *_INT_FROM_0),
    ('data.eval_crop_padding', *_INT_FROM_0),
    ('data.eval_crop_fraction', *_OPEN_CLOSED_FRACTION),
    ('data.randaugment_layers', *_INT_FROM_0),
    ('data.randaugment_magnitude', *_NON_NEGATIVE),
    ('data.shuffle_buffer', *_INT_FROM_1),
    ('data.prefetch_batches', *_INT_FROM_1),
    ('data.threads', *_INT_FROM_1),
    ('data.frames', *_INT_FROM_1),
    ('data.frame_stride', *_INT_FROM_1),
    ('data.eval_clips', *_INT_FROM_1),
    ('data.eval_crops', *_INT_FROM_1),
    ('data.min_video_frames', *_INT_FROM_1),
    ('data.channels', lambda v: v in (1, 3) and not isinstance(v, bool), '1 (grayscale) or 3 '
     '(RGB)'),
    ('data.eval_image_size', *_INT_FROM_1),
    ('model.stem_temporal_kernel', *_INT_FROM_1),
    ('model.stem_temporal_stride', *_INT_FROM_1),
    ('model.pool_temporal_stride', *_INT_FROM_1),
)


def _check_numbers(config) -> None:
  for field, ok, what in NUMBERS:
    value = _get(config, field)
    if value is not None and value is not _MISSING and not ok(value):
      _fail(field, value, f'set --config.{field} to {what}')


def _choices() -> tuple:
  """(field, allowed values, may be None): fields that name one of a few options."""
  from rs.data import bad_images, pipeline, randaugment, tf_preprocess  # TensorFlow: only here
  return (
      ('dtype', tuple(models.DTYPES), False),
      ('model.stem', resnet.STEM_TYPES, True),
      ('model.stem_pool', resnet.STEM_POOLS, True),
      ('model.conv_lowering', convolution.LOWERINGS, False),
      ('model.remat', layers.REMATS, True),
      ('model.remat_policy', tuple(layers.REMAT_POLICIES), True),
      ('optimizer.schedule', ('cosine', 'step', 'exponential'), False),
      ('optimizer.name', optim.OPTIMIZERS, False),
      ('on_nonfinite', ('stop', 'skip'), False),
      ('data.augment', pipeline.AUGMENTS, False),
      ('data.bad_images', bad_images.BAD_IMAGE_MODES, False),
      ('data.resize_method', tf_preprocess.RESIZE_METHODS, False),
      ('data.randaugment_contrast_mean', randaugment.CONTRAST_MEANS, False),
  )


def _check_choices(config) -> None:
  for field, allowed, optional in _choices():
    value = _get(config, field)
    if value is _MISSING or (value is None and optional) or value in allowed:
      continue
    _fail(field, value, f'set --config.{field} to one of {", ".join(map(repr, allowed))}')


def _check_durations(config) -> None:
  """Each duration is in steps when `*_steps` is set (rs.optim.steps_for), else in epochs."""
  for name, smallest in (('train', 1), ('warmup', 0), ('eval_every', 1)):
    steps, epochs = config[f'{name}_steps'], config[f'{name}_epochs']
    if steps is not None:
      if not (_is_int(steps) and steps >= smallest):
        _fail(f'{name}_steps', steps, f'set --config.{name}_steps to an integer >= {smallest}')
    elif not (_is_number(epochs) and (epochs > 0 if smallest else epochs >= 0)):
      _fail(f'{name}_epochs', epochs, f'set --config.{name}_epochs to a number '
            f'{">" if smallest else ">="} 0 (or --config.{name}_steps)')
  # Warmup and training in the same unit compare here; mixed units only once the dataset's
  # size is known.
  for unit in ('steps', 'epochs'):
    warmup, train = config[f'warmup_{unit}'], config[f'train_{unit}']
    mixed = unit == 'epochs' and (config.warmup_steps is not None or
                                  config.train_steps is not None)
    if warmup is not None and train is not None and not mixed and warmup > train:
      _fail(f'warmup_{unit}', warmup, f'longer than training (train_{unit}={train}): set '
            f'--config.warmup_{unit} to at most {train}')


def _check_image_size(config) -> None:
  check_image_size(models.create_model(config.model.name, **architecture.resolved(config.model)),
                   config.model.name, config.data.image_size, 'config.data.image_size',
                   field='data.image_size')


def check_image_size(model, name: str, size, flag: str = 'image_size',
                     field: str | None = None) -> None:
  """The image must be large enough for the network's downsampling, read off the network
  itself (rs.models.architecture.min_image_size); `flag` names where the size was given (a
  config `field`: the message starts with it, as every config check's does)."""
  smallest = architecture.min_image_size(model)
  if not _is_int(size) or size < smallest:
    stride = architecture.total_stride(model)
    raise ConfigError(f'{field or "--" + flag}={size!r}: too small for {name}: it shrinks '
                      f'its input {stride}x, and its last stride-2 layer needs at least 2x2 pixels, so '
                      f'the image needs at least {smallest} px; raise --{flag}')


def _check_batches(config, mesh) -> None:
  """Each global batch splits evenly over the devices and over the hosts (each host feeds
  its own rows); a BN group is a divisor of the global batch (rs.models.layers)."""
  for name in ('batch_size', 'eval_batch_size'):
    sharding.check_batch_size(name, config[name], mesh)
  group = config.model.bn_group_size
  if group is not None and config.batch_size % group:
    per_device = config.batch_size // mesh.devices.size
    _fail('model.bn_group_size', group, f'does not divide batch_size={config.batch_size}: '
          f'set --config.model.bn_group_size to a divisor of it, e.g. the per-device batch '
          f'{per_device} (what unset means)')


def _check_init(config) -> None:
  """Fine-tuning: the weights directory exists, the patterns are valid regexes."""
  init_from = _get(config, 'init_from')
  if init_from is not None and init_from is not _MISSING:
    if not init_from:
      _fail('init_from', init_from, 'set --config.init_from to a weights directory written by '
            'rs.export or rs.convert')
    if not (epath.Path(init_from) / 'model.json').exists() or not (
        epath.Path(init_from) / 'variables').exists():
      hint = (' (this is a run directory: rs.export it first)'
              if rundir.has_checkpoint(init_from) else '')
      _fail('init_from', init_from, f'no model.json and variables there{hint}: set '
            '--config.init_from to a weights directory written by rs.export or rs.convert')
  skip = _get(config, 'init_skip')
  if skip not in (None, _MISSING):
    try:
      re.compile(skip)
    except re.error as e:
      _fail('init_skip', skip, f'not a regex ({e}): set --config.init_skip to e.g. "^head/"')
  groups = _get(config, 'optimizer.param_groups')
  if groups not in (None, _MISSING):
    try:
      transfer.parse_param_groups(groups)
    except ValueError as e:
      raise ConfigError(str(e)) from None


def check_channels(config, channels: int) -> None:
  """data.mean and data.std give one value per channel of the dataset's images: a 1-channel
  config (Fashion-MNIST's) on RGB images would train, then describe its weights wrongly."""
  for field in ('mean', 'std'):
    values = tuple(float(f'{v:.6g}') for v in config.data[field])  # 72.93, not 72.92999999999999
    if len(values) != channels:
      imagenet = {'mean': '(123.675, 116.28, 103.53)', 'std': '(58.395, 57.12, 57.375)'}[field]
      example = f", e.g. ImageNet's {imagenet}" if channels == 3 else ''
      _fail(f'data.{field}', values, f'{len(values)} value{"s" * (len(values) != 1)} for images '
            f'with {channels} channel{"s" * (channels != 1)} ({config.data.name} '
            f'{config.data.train_split}): give one per channel{example}')


def check_init_fits(config, num_classes: int, image_shape: tuple[int, ...]) -> None:
  """Fine-tuning: the saved weights fit the network the config builds for this dataset, up
  to init_skip. Compared on shapes alone (the files' metadata, the network's abstract
  variables), before anything is written; a mismatch names both networks and the fix."""
  init_from = _get(config, 'init_from')
  if not init_from or init_from is _MISSING:
    return
  import jax
  import jax.numpy as jnp
  from rs import checkpoint, programs, weights
  model = programs.build_model(config, num_classes)
  wanted = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)),
                                             train=False))
  saved_channels = weights.saved_channels(init_from)
  try:
    transfer.merge(wanted, checkpoint.tree_metadata(str(epath.Path(init_from) / 'variables')),
                   config.init_skip, saved_channels and (saved_channels, image_shape[-1]))
  except transfer.WeightsMismatch as e:
    try:
      d = weights.read(init_from)
      saved = (f'{d.model} with {d.num_classes} classes for {d.input.channels}-channel '
               f'images')
    except weights.WeightsError:
      saved = 'weights without a readable model.json'
    raise ConfigError(f'init_from={init_from!r}: the weights are {saved}; the config builds '
                      f'{config.model.name} with {num_classes} classes for {image_shape[-1]}-'
                      f'channel images. {e}') from None


# The data.

def _check_data(data) -> None:
  if data.manual_dir and not _isdir(data.manual_dir):
    _fail('data.manual_dir', data.manual_dir, 'no such folder: set --config.data.manual_dir to '
          'the folder holding the downloaded files, or unset it')
  if data.name == 'folder':
    _check_folder(data)
  elif data.name in sources.ARRAY_DATASETS:
    _check_array_splits(data)
  else:
    _check_tfds_name(data)


def _check_folder(data) -> None:
  from rs.data import records  # TensorFlow: only for folder datasets
  video = bool(data.get('frames'))  # clips have their own sampling: data.augment is unused
  if data.augment != 'inception_crop' and not video:
    _fail('data.augment', data.augment, 'data.name=folder streams its images: set '
          "--config.data.augment='inception_crop'")
  files = 'video files or frame folders' if video else '*.jpg'
  if not data.data_dir or not _isdir(data.data_dir):
    _fail('data.data_dir', data.data_dir, f'data.name=folder reads ROOT/SPLIT/CLASS/{files}: '
          'set --config.data.data_dir to ROOT')
  for field in ('train_split', 'eval_split'):
    split = data[field]
    if not _isdir(os.path.join(data.data_dir, split)):
      found = records.subfolders(data.data_dir)
      listed = ', '.join(found[:10]) + (f' and {len(found) - 10} more' if found[10:] else '')
      _fail(f'data.{field}', split, f'{data.data_dir} has no such folder: set '
            f'--config.data.{field} to one of its split folders ({listed or "none"})')
  classes = records.subfolders(os.path.join(data.data_dir, data.train_split))
  if len(classes) < 2:
    # One class trains to loss 0 at once and learns nothing.
    _fail('data.train_split', data.train_split, f'{data.data_dir}/{data.train_split} has '
          f'{len(classes)} class folder{"" if len(classes) == 1 else "s"} '
          f'({", ".join(classes) or "none"}): a classifier needs at least 2, one per class '
          f'(ROOT/SPLIT/CLASS/{files})')


def _check_array_splits(data) -> None:
  """The in-memory datasets rs reads itself (fashion_mnist, lfw_faces, digits): split names."""
  splits = sources.ARRAY_DATASETS[data.name]
  for field in ('train_split', 'eval_split'):
    split = data[field]
    try:
      name, _ = sources.parse_split(split)
    except ValueError:
      name = None
    if name not in splits:
      _fail(f'data.{field}', split, f"set --config.data.{field} to {' or '.join(map(repr, splits))}"
            f", optionally sliced as in '{splits[-1]}[:500]'")


def _check_tfds_name(data) -> None:
  check_tfds_name(data.name, data.data_dir)


def check_tfds_name(name: str, data_dir: str | None, flag: str = '--config.data.name',
                    others: str = "'folder' (your own images) or 'fashion_mnist'") -> None:
  """A name tfds knows: registered (looked up offline), or prepared in data_dir (looked up on
  disk: tfds.builder would search community catalogues over the network, retrying for minutes
  offline, and leave empty folders behind). The error names `flag` and the `others` names
  it takes besides tfds's."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return  # the pipeline says so when it opens the dataset
  base = re.split(r'[/:]', name)[0]  # 'name/config:version'
  known = tfds.list_builders(with_community_datasets=False)
  if base in known:
    return
  root = epath.Path(data_dir or os.environ.get('TFDS_DATA_DIR')
                    or os.path.expanduser('~/tensorflow_datasets'))
  if any(any((root / base).glob(pattern)) for pattern in ('*/dataset_info.json',
                                                          '*/*/dataset_info.json')):
    return  # prepared there (a dataset without registered code)
  close = difflib.get_close_matches(base, sorted({'folder', *sources.ARRAY_DATASETS, *known}),
                                    n=3)
  hint = f'did you mean {" or ".join(close)}? ' if close else ''
  raise ConfigError(f'{flag.removeprefix("--config.")}={name!r}: no such tfds dataset '
                    f'(registered, or prepared in {data_dir or "the default data_dir"}); {hint}'
                    f'set {flag} to a tfds name, {others}')


# The workdir.

def _isdir(path: str) -> bool:
  return epath.Path(path).is_dir()


def _parent(path: str) -> str | None:
  """The folder above `path`; None at a root ('/', 'gs://bucket')."""
  path = path.rstrip('/')
  if re.fullmatch(r'\w+://[^/]*', path) or not path:
    return None
  parent = os.path.dirname(path) or '.'  # 'runs' -> '.'
  return None if parent == path else parent


def _closest_existing(path: str) -> str | None:
  """`path` or the closest of its parents that exists; None if not even its root does."""
  while path is not None and not epath.Path(path).exists():
    path = _parent(path)
  return path


def check_writable(workdir: str, flag: str = '--workdir') -> None:
  """A directory (local or gs://) that can be created and written, named `flag` in errors."""
  fix = f'choose a {flag} you can write'
  where = f'{flag}={workdir}'
  try:  # raises for a malformed or unreachable URL (gs:// without a bucket, ...)
    existing = _closest_existing(workdir)
    is_folder = existing is not None and _isdir(existing)
  except Exception as e:  # pylint: disable=broad-except (tf.errors.OpError and others)
    raise ConfigError(f'{where}: cannot be read ({one_line(e)}); {fix}') from None
  if existing is None:
    raise ConfigError(f'{where}: no part of it exists (a missing bucket?); {fix}')
  if not is_folder:
    raise ConfigError(f'{where}: {existing} is a file, not a folder; {fix}')
  local = '://' not in existing
  if local and not os.access(existing, os.W_OK | os.X_OK):  # no write bits, read-only mount
    raise ConfigError(f'{where}: cannot write in {existing} (permission denied); {fix}')
  if local and existing == workdir:
    return  # left as it is, even its time stamp: a write test would change it
  # A file written and removed where the workdir will be created: permissions say nothing of
  # buckets, and root passes them where the file system refuses (/proc, ...).
  probe = epath.Path(existing) / f'.rs-write-test-{uuid.uuid4().hex}'
  try:
    probe.write_text('')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except (OSError, tf.errors.OpError, ...)
    raise ConfigError(f'{where}: cannot write in {existing} ({one_line(e)}); {fix}') from None


def _check_resume(config, workdir: str) -> None:
  """A run resumes its latest checkpoint: it must build the parameters that were saved."""
  if not rundir.has_checkpoint(workdir):
    return  # nothing to resume
  try:
    saved = rundir.read_config(workdir)
  except FileNotFoundError:
    return  # checkpoints without a config.json: not rs's; orbax reports them if unreadable
  except ValueError as e:
    raise ConfigError(f'{e}; use a new --workdir') from None
  diffs = parameter_differences(saved, config)
  if diffs:
    raise ConfigError(f'--workdir={workdir} holds checkpoints of another model: '
                      f'{"; ".join(diffs)}; use a new --workdir, or these saved values to '
                      'resume')


def parameter_differences(saved: dict, config) -> list[str]:
  """'field saved X, now Y' for each setting that changes the parameters' tree or shapes.

  The architecture compares as built (registered values + overrides), so spelling the same
  network differently passes; so do dropout, stochastic depth, BN group size, dtype, the
  conv lowering, the resolution and the whole recipe, which leave the parameters as they are.
  The number of classes (and the image channels) follow data.name.
  """
  saved_model, saved_data = saved.get('model', {}), saved.get('data', {})
  diffs = architecture.shape_differences(saved_model, config.model)
  if diffs and saved_model.get('name') != config.model.name:
    diffs.insert(0, f'model.name saved {saved_model.get("name")!r}, now {config.model.name!r}')
  if saved_data.get('name') != config.data.name:
    diffs.append(f'data.name saved {saved_data.get("name")!r}, now {config.data.name!r}')
  return diffs
