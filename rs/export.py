"""Export a trained run's weights for inference, and a serving artifact.

  python -m rs.export --workdir=DIR --out=PATH [--weights=ema|raw] [--step=N] [--serving]
      [--saved_model]

reads the newest checkpoint of DIR/checkpoints that restores and verifies (or --step), on
whatever devices this process has (one CPU is enough, whatever the run trained on), and
writes PATH (local or gs://) in rs.convert's format: PATH/variables (an unsharded orbax
checkpoint of {'params', 'batch_stats'}, the EMA weights and BN statistics by default) and
PATH/model.json (the network, the class count and names, the input size, channels,
normalisation and eval preprocessing); PATH/config.json is the run's config, for reference.
So `--config.init_from=PATH`, `python -m rs.evaluate --weights=PATH` and `load(PATH)` read it.

--serving also writes PATH/serving/model.jax_export: the inference function serialised with
jax.export (StableHLO, weights inside) for uint8 NHWC images of any batch size, normalisation
inside, {'logits', 'probabilities'} out; PATH/serving/serving.json describes it and
`load_serving(PATH)` calls it. --saved_model adds PATH/serving/saved_model/, the same function
as a TF SavedModel (jax2tf) for TF Serving. From a notebook: `export(workdir, out)`, `load(out)`.
The workdir is only read: a checkpoint that fails to restore is skipped, never renamed.
"""
import functools
import json
import sys
import uuid

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from etils import epath

from rs import checkpoint, programs, step as step_lib, validate
from rs.data import sources

WEIGHTS = ('ema', 'raw')
# Where the serving artifact may run: lowered for each, chosen when it is called.
SERVING_PLATFORMS = ('cpu', 'cuda', 'tpu')
SERVING_FILE = 'model.jax_export'


class ExportError(ValueError):
  """The workdir, the checkpoint or --out cannot give an export (one line naming the fix)."""


def _path(path: str) -> epath.Path:
  return epath.Path(checkpoint.absolute(path))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's resolved config, as rs.metrics.write_config saved it."""
  path = _path(workdir) / 'config.json'
  if not path.exists():
    raise ExportError(f'{path} does not exist: --workdir must be a directory written by rs.main')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def _saved_abstract(path: epath.Path, sharding: jax.sharding.Sharding):
  """Shapes and dtypes of an orbax checkpoint item, each placed on `sharding`.

  Built from the files' metadata, not from the saved devices: a run's checkpoint names its
  mesh (e.g. 8 devices), which orbax refuses to restore onto other devices without a target.
  """
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as reader:
    metadata = reader.metadata(path)
  tree = getattr(metadata, 'item_metadata', metadata)
  tree = getattr(tree, 'tree', tree)
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)


def _one_device() -> jax.sharding.Sharding:
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def restore_state(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """(state as nested dicts on one device, step): the newest checkpoint that restores and
  matches its fingerprint, or exactly `step`. Nothing in the workdir is changed (the run may
  still be training there)."""
  directory = f'{workdir}/checkpoints'
  if not validate.has_checkpoint(workdir):
    raise ExportError(f'no checkpoint in {directory}: train first')
  ckpt = checkpoint.Checkpointer(directory, read_only=True)
  try:
    steps = ckpt.all_steps()
    if step is not None and step not in steps:
      raise ExportError(f'no checkpoint of step {step} in {directory} (there are {steps})')
    abstract = lambda s: _saved_abstract(ckpt.directory / str(s) / 'state', _one_device())
    try:
      return ckpt.restore_latest_valid(abstract, steps if step is None else [step])
    except checkpoint.CheckpointError as e:
      raise ExportError(str(e)) from None
  finally:
    ckpt.close()


def _overrides(config) -> dict:
  """create_model's arguments beyond the registered network: the architecture fields the
  config sets, and a changed BN epsilon (it changes inference outputs)."""
  from rs.models import resnet
  overrides = programs.architecture_overrides(config)
  epsilon = config.model.get('bn_epsilon')
  if epsilon is not None and epsilon != resnet.ResNet.bn_epsilon:
    overrides['bn_epsilon'] = epsilon
  return overrides


def class_names(config) -> list[str] | None:
  """Class names by label index: a class-folder dataset's sorted folders (the training
  split's, as rs.data.records numbers them), the in-memory datasets' own names; None for
  datasets whose names tfds knows (rs.predict asks it) or that are labelled by number only."""
  data = config.data
  if data.name in sources.CLASS_NAMES:
    return list(sources.CLASS_NAMES[data.name])
  if data.name != 'folder':
    return None
  from rs.data import records
  return records.FolderRecords(data.data_dir, data.train_split.split('[')[0]).classes


def describe(config, workdir: str, step: int, weights: str, variables) -> dict:
  """model.json: what rs.programs.model_from_meta builds, and how inputs are prepared."""
  params = variables['params']
  data = config.data
  return {
      'model': config.model.name,
      'num_classes': int(params['head']['kernel'].shape[-1]),
      'overrides': {k: list(v) if isinstance(v, tuple) else v
                    for k, v in _overrides(config).items()},
      'source': 'rs.export',
      'workdir': checkpoint.absolute(workdir),
      'step': int(step),
      'weights': weights,
      'image_size': int(data.image_size),
      'channels': int(params['stem1']['conv']['kernel'].shape[2]),
      'mean': [float(x) for x in data.mean],  # per channel, on the 0..255 scale
      'std': [float(x) for x in data.std],
      'dataset': data.name,
      # The eval input: 'resize' (in-memory datasets: rs.data.preprocess.resize of the whole
      # image, bilinear with antialiasing) or 'center_crop' (streamed: rs.data.tf_preprocess
      # eval_image, a center crop by eval_crop_padding/eval_crop_fraction, then resize_method).
      'preprocess': 'center_crop' if data.augment == 'inception_crop' else 'resize',
      'eval_crop_padding': data.get('eval_crop_padding'),
      'eval_crop_fraction': data.get('eval_crop_fraction'),
      'resize_method': data.get('resize_method'),
      'class_names': class_names(config),
      'train_dtype': config.get('dtype'),
  }


def check_fits(model, variables, channels: int) -> None:
  """The variables are exactly the network's: same tree, shapes and dtypes."""
  want = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, channels)),
                                           train=False))
  want = {k: want[k] for k in ('params', 'batch_stats')}
  shape = lambda tree: {jax.tree_util.keystr(p): (tuple(x.shape), str(x.dtype))
                        for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  want, got = shape(want), shape(variables)
  diffs = [f'{k}: saved {got.get(k)}, model {want.get(k)}' for k in sorted(want.keys() | got.keys())
           if want.get(k) != got.get(k)]
  if diffs:
    raise ExportError(f'the weights do not fit {model.__class__.__name__} as model.json describes '
                      f'it ({len(diffs)} differences, e.g. {diffs[0]})')


def _check_writable(out: str) -> None:
  """--out can take an export: a new or empty directory, or an earlier export to replace."""
  path = _path(out)
  try:
    if path.exists():
      if not path.is_dir():
        raise ExportError(f'--out={out} is a file: give a directory')
      if any(path.iterdir()) and not (path / 'model.json').exists():
        raise ExportError(f'--out={out} holds files but no export (no model.json): give a new '
                          'or empty directory')
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.rs_export_probe_{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()
  except ExportError:
    raise
  except Exception as e:  # OSError locally; tf.errors or fsspec's on gs://
    raise ExportError(f'cannot write --out={out}: {type(e).__name__}: '
                      f'{" ".join(str(e).split())[:200]}') from None


def export(workdir: str, out: str, weights: str = 'ema', serving: bool = False,
           step: int | None = None, saved_model: bool = False) -> dict:
  """Writes the run's `weights` ('ema' or 'raw') at `step` (default: the newest valid
  checkpoint) to `out`; with `serving` the jax.export artifact too, with `saved_model` also
  a TF SavedModel of it; returns model.json."""
  if weights not in WEIGHTS:
    raise ExportError(f'weights={weights!r}: use one of {WEIGHTS}')
  config = read_config(workdir)
  _check_writable(out)  # before the restore, which can take minutes for a large run
  state, step = restore_state(workdir, step)
  prefix = 'ema_' if weights == 'ema' else ''
  variables = {'params': state[f'{prefix}params'], 'batch_stats': state[f'{prefix}batch_stats']}
  meta = describe(config, workdir, step, weights, variables)
  model = programs.model_from_meta(meta)
  check_fits(model, variables, meta['channels'])
  if (_path(out) / 'serving').exists():  # an earlier export's: never leave a stale one
    (_path(out) / 'serving').rmtree()
  checkpoint.save_variables(out, variables, meta)
  (_path(out) / 'config.json').write_text((_path(workdir) / 'config.json').read_text())
  if serving or saved_model:
    write_serving(out, model, variables, meta, saved_model)
  return meta


def load(directory: str, dtype: str = 'float32', device: jax.Device | None = None):
  """(model, variables, meta) of an export (or of rs.convert's weights), on one device.

  `model.apply(variables, images, train=False)` gives logits for images normalised with
  meta['mean'] / meta['std']; `inference_fn(model, variables, meta)` does that from uint8.
  """
  path = _path(directory)
  if not (path / 'model.json').exists():
    raise ExportError(f'{directory} holds no export (no model.json): give a directory written '
                      'by rs.export or rs.convert')
  sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
  abstract = _saved_abstract(path / 'variables', sharding)
  variables, meta = checkpoint.load_variables(str(directory), abstract)
  model = programs.model_from_meta(meta, dtype)
  check_fits(model, variables, variables['params']['stem1']['conv']['kernel'].shape[2])
  return model, variables, meta


def _infer(model, mean, std, variables, images):
  x = step_lib.normalize(images, mean, std)
  logits = model.apply(variables, x, train=False).astype(jnp.float32)
  return {'logits': logits, 'probabilities': jax.nn.softmax(logits)}


def inference_fn(model, variables, meta: dict):
  """uint8 (or 0..255 float) NHWC images -> {'logits', 'probabilities'}, float32, jitted:
  the normalisation of training inside. The weights are an argument of the compiled program,
  not constants in it (large constants make XLA compile slowly)."""
  if 'mean' not in meta:
    raise ExportError('these weights carry no input normalisation (rs.convert writes none): '
                      "set meta['mean'] and meta['std'] (per channel, 0..255 scale)")
  infer = jax.jit(functools.partial(_infer, model, tuple(meta['mean']), tuple(meta['std'])))
  return functools.partial(infer, variables)


def serving_export(model, variables, meta: dict, platforms=SERVING_PLATFORMS):
  """jax.export.Exported of the inference function for uint8 images (b, S, S, C), b symbolic;
  the weights are constants inside it, so the file alone serves."""
  batch = jax.export.symbolic_shape('b')
  size, channels = meta['image_size'], meta['channels']
  spec = jax.ShapeDtypeStruct((*batch, size, size, channels), jnp.uint8)
  infer = functools.partial(_infer, model, tuple(meta['mean']), tuple(meta['std']), variables)
  return jax.export.export(jax.jit(infer), platforms=platforms)(spec)


def write_saved_model(path: epath.Path, model, variables, meta: dict) -> None:
  """A TF SavedModel of the inference function (jax2tf, the same StableHLO inside), for TF
  Serving: signature 'serving_default', uint8 `images` [None, S, S, C] in."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  size, channels = meta['image_size'], meta['channels']
  infer = functools.partial(_infer, model, tuple(meta['mean']), tuple(meta['std']), variables)
  converted = jax2tf.convert(infer, polymorphic_shapes=[f'(b, {size}, {size}, {channels})'],
                             with_gradient=False,
                             native_serialization_platforms=SERVING_PLATFORMS)
  module = tf.Module()
  module.serve = tf.function(converted, autograph=False, input_signature=[
      tf.TensorSpec([None, size, size, channels], tf.uint8, name='images')])
  tf.saved_model.save(module, str(path), signatures={'serving_default': module.serve})


def write_serving(out: str, model, variables, meta: dict, saved_model: bool = False) -> dict:
  """out/serving/model.jax_export, with `saved_model` out/serving/saved_model/ too, and
  out/serving/serving.json (what calling them needs)."""
  exported = serving_export(model, variables, meta)
  directory = _path(out) / 'serving'
  directory.mkdir(parents=True, exist_ok=True)
  (directory / SERVING_FILE).write_bytes(bytes(exported.serialize()))
  if saved_model:
    write_saved_model(directory / 'saved_model', model, variables, meta)
  size, channels = meta['image_size'], meta['channels']
  info = {
      'format': 'jax.export', 'file': SERVING_FILE, 'platforms': list(exported.platforms),
      'jax_version': jax.__version__,
      'calling_convention_version': exported.calling_convention_version,
      'input': {'shape': ['b', size, size, channels], 'dtype': 'uint8', 'layout': 'NHWC',
                'preprocess': meta['preprocess'], 'resize_method': meta['resize_method'],
                'eval_crop_padding': meta['eval_crop_padding'],
                'eval_crop_fraction': meta['eval_crop_fraction']},
      'outputs': {'logits': ['b', meta['num_classes']],
                  'probabilities': ['b', meta['num_classes']]},
      'class_names': meta['class_names'],
      'saved_model': 'saved_model' if saved_model else None,
  }
  (directory / 'serving.json').write_text(json.dumps(info, indent=2))
  return info


def load_serving(directory: str):
  """(call, serving.json) of an export's serving artifact: call(uint8 images (b, S, S, C))
  -> {'logits', 'probabilities'}, with any batch size b, on the default device."""
  serving = _path(directory) / 'serving'
  if not (serving / SERVING_FILE).exists():
    raise ExportError(f'{serving / SERVING_FILE} does not exist: export with --serving')
  exported = jax.export.deserialize(bytearray((serving / SERVING_FILE).read_bytes()))
  info = json.loads((serving / 'serving.json').read_text())
  return (lambda images: exported.call(np.asarray(images, np.uint8))), info


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_string('workdir', None, 'A run directory written by rs.main (local or gs://).')
  flags.DEFINE_string('out', None, 'Directory for the export (local or gs://).')
  flags.DEFINE_enum('weights', 'ema', list(WEIGHTS), 'The EMA weights and BN statistics, or '
                    'the raw (last step) ones.')
  flags.DEFINE_integer('step', None, 'Export this checkpoint step (default: the newest valid).')
  flags.DEFINE_bool('serving', False, 'Also write out/serving/ (jax.export, batch-polymorphic).')
  flags.DEFINE_bool('saved_model', False, 'Also write out/serving/saved_model/ (a TF '
                    'SavedModel through jax2tf; implies --serving).')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax logs each step of a save and restore
  try:
    meta = export(f.workdir, f.out, f.weights, f.serving, f.step, f.saved_model)
  except (ExportError, FileNotFoundError, checkpoint.CheckpointError) as e:
    sys.exit(f'rs.export: {e}')  # one line, no traceback: the message names the fix
  print(json.dumps({'out': f.out, 'step': meta['step'], 'weights': meta['weights'],
                    'model': meta['model'], 'num_classes': meta['num_classes'],
                    'serving': f'{f.out}/serving' if f.serving or f.saved_model else None}))


if __name__ == '__main__':
  define_flags()
  app.run(main)
