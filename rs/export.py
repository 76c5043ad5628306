"""Export a trained run's weights for inference, and a serving artifact.

  python -m rs.export --workdir=DIR --out=PATH [--weights=ema|raw] [--step=N] [--serving]
      [--saved_model] [--overwrite]

reads the newest checkpoint of DIR/checkpoints that restores and verifies (or --step), on
whatever devices this process has (one CPU is enough, whatever the run trained on), and
writes PATH (local or gs://) in the weights format (rs.weights): PATH/variables (an unsharded
orbax checkpoint of {'params', 'batch_stats'}, the EMA weights and BN statistics by default)
and PATH/model.json (the run's workdir/model.json: the network, the class count and names, the
evaluation input; with the step and weights exported); PATH/config.json is the run's config,
for reference. So `--config.init_from=PATH`, `python -m rs.evaluate --weights=PATH`,
`python -m rs.predict --checkpoint=PATH` and `load(PATH)` read it.

--serving also writes PATH/serving/model.jax_export: the inference function serialised with
jax.export (StableHLO, weights inside) for uint8 NHWC images of any batch size (a video
network: (b, views, T, H, W, C), the views' probabilities averaged), normalisation inside,
{'logits', 'probabilities'} out; PATH/serving/serving.json describes it and
`load_serving(PATH)` calls it. --saved_model adds PATH/serving/saved_model/, the same function
as a TF SavedModel (jax2tf) for TF Serving. From a notebook: `export(workdir, out)`, `load(out)`.
The workdir is only read: a checkpoint that fails to restore is skipped, never renamed.
"""
import dataclasses
import functools
import json
import logging
import uuid

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from etils import epath

from rs import checkpoint, cli, logs, rundir, step as step_lib, weights as weights_lib
from rs.data import sources
from rs.errors import UserError, one_line

WEIGHTS = ('ema', 'raw')
# Where the serving artifact may run: lowered for each, chosen when it is called.
SERVING_PLATFORMS = ('cpu', 'cuda', 'tpu')
SERVING_FILE = 'model.jax_export'


class ExportError(UserError, ValueError):
  """The workdir, the checkpoint or --out cannot give an export (one line naming the fix)."""



def _one_device() -> jax.sharding.Sharding:
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def restore_state(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """(state as nested dicts on one device, step): the newest checkpoint that restores and
  matches its fingerprint, or exactly `step`. Nothing in the workdir is changed (the run may
  still be training there)."""
  directory = rundir.checkpoints(workdir)
  if not rundir.has_checkpoint(workdir):
    raise ExportError(f'no checkpoint in {directory}: train first')
  ckpt = checkpoint.Checkpointer(directory, read_only=True)
  try:
    steps = ckpt.all_steps()
    if step is not None and step not in steps:
      raise ExportError(f'no checkpoint of step {step} in {directory} (there are {steps})')
    abstract = lambda s: checkpoint.abstract_like(
        checkpoint.tree_metadata(str(ckpt.directory / str(s) / 'state')), _one_device())
    try:
      return ckpt.restore_latest_valid(abstract, steps if step is None else [step])
    except checkpoint.CheckpointError as e:
      raise ExportError(str(e)) from None
  finally:
    ckpt.close()


def describe_run(workdir: str, config, variables) -> weights_lib.Description:
  """What the run trained: its workdir/model.json (written by rs.train when it started). Runs
  from before that file describe themselves from config.json, the variables and the dataset
  (its class names where it can still be read)."""
  if (rundir.path(workdir) / 'model.json').exists():
    return weights_lib.read(workdir)
  num_classes = int(np.shape(variables['params']['head']['kernel'])[-1])
  names = sources.class_names(config.data.name, config.data.data_dir,
                              config.data.train_split)
  native = sources.NATIVE_SIZE.get(config.data.name)
  return weights_lib.describe(config, num_classes, len(config.data.mean),  # one per channel
                              names if names and len(names) == num_classes else None, native)


def _check_writable(out: str, workdir: str, overwrite: bool = False) -> None:
  """--out can take an export: a new or empty directory, or this run's earlier export to
  replace; weights from anywhere else only with `overwrite`."""
  path = rundir.path(out)
  try:
    if path.exists():
      if not path.is_dir():
        raise ExportError(f'--out={out} is a file: give a directory')
      if any(path.iterdir()) and not (path / 'variables').exists():
        raise ExportError(f'--out={out} holds files but no export (no variables): give a new '
                          'or empty directory')
      if (path / 'variables').exists() and not overwrite:
        _check_same_run(out, workdir)
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.rs_export_probe_{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()
  except ExportError:
    raise
  except Exception as e:  # OSError locally; tf.errors or fsspec's on gs://
    raise ExportError(f'cannot write --out={out}: {type(e).__name__}: {one_line(e)}') from None


def _check_same_run(out: str, workdir: str) -> None:
  """The weights in `out` are an earlier export of `workdir` (replacing them is an update);
  else ExportError naming what they are."""
  try:
    existing = weights_lib.read(out)
    source = existing.source or {}
    what = (f'{existing.model} with {existing.num_classes} classes, written by '
            f'{source.get("tool", "an unknown tool")}'
            + (f' from {source["workdir"]}' if source.get('workdir') else ''))
  except weights_lib.WeightsError:
    source, what = {}, 'weights without a readable model.json'
  if source.get('tool') == 'rs.export' and source.get('workdir') == str(rundir.path(workdir)):
    return
  raise ExportError(f'--out={out} holds other weights ({what}): give a new directory, or add '
                    '--overwrite to replace them')


def _run_config(workdir: str, weights: str):
  if weights not in WEIGHTS:
    raise ExportError(f'weights={weights!r}: use one of {WEIGHTS}')
  try:
    return rundir.read_config(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise ExportError(f'--workdir={workdir}: {e}') from None


def run_weights(workdir: str, weights: str = 'ema', step: int | None = None,
                tool: str = 'rs.export') -> tuple[dict, weights_lib.Description]:
  """(variables, description) of a run's `weights` ('ema' or 'raw') at `step` (default: the
  newest valid checkpoint), on one device, checked against the network; the description's
  source names `tool`, the run, the step and the weights."""
  config = _run_config(workdir, weights)
  state, step = restore_state(workdir, step)
  prefix = 'ema_' if weights == 'ema' else ''
  variables = {'params': state[f'{prefix}params'], 'batch_stats': state[f'{prefix}batch_stats']}
  description = dataclasses.replace(describe_run(workdir, config, variables), source={
      'tool': tool, 'workdir': str(rundir.path(workdir)), 'step': int(step),
      'weights': weights, 'train_dtype': config.get('dtype')})
  weights_lib.check_fits(description.build(), variables, description.input.channels,
                         f'the {weights} weights')
  return variables, description


def export(workdir: str, out: str, weights: str = 'ema', serving: bool = False,
           step: int | None = None, saved_model: bool = False,
           overwrite: bool = False) -> weights_lib.Description:
  """Writes the run's `weights` ('ema' or 'raw') at `step` (default: the newest valid
  checkpoint) to `out`; with `serving` the jax.export artifact too, with `saved_model` also
  a TF SavedModel of it; returns the description written (model.json). `out` may hold this
  run's earlier export, which is replaced; other weights only with `overwrite`."""
  _run_config(workdir, weights)
  _check_writable(out, workdir, overwrite)  # before the restore: minutes for a large run
  variables, description = run_weights(workdir, weights, step)
  model = description.build()
  if (rundir.path(out) / 'serving').exists():  # an earlier export's: never leave a stale one
    (rundir.path(out) / 'serving').rmtree()
  weights_lib.save(out, variables, description)
  (rundir.path(out) / 'config.json').write_text((rundir.path(workdir) / 'config.json').read_text())
  if serving or saved_model:
    write_serving(out, model, variables, description, saved_model)
  return description


def load(directory: str, dtype: str = 'float32', device: jax.Device | None = None):
  """(model, variables, description) of a weights directory (rs.export's, rs.convert's), on
  one device. `inference_fn(model, variables, description)` gives logits from uint8 images."""
  sharding = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
  variables, description = weights_lib.load(directory, sharding)
  return description.build(dtype), variables, description


def _infer(model, spec, variables, images):
  logits = step_lib.logits(model, variables, images, spec.mean, spec.std)
  return {'logits': logits, 'probabilities': jax.nn.softmax(logits)}


def inference_fn(model, variables, description: weights_lib.Description):
  """uint8 (or 0..255 float) NHWC images -> {'logits', 'probabilities'}, float32, jitted:
  the normalisation of training inside. The weights are an argument of the compiled program,
  not constants in it (large constants make XLA compile slowly)."""
  infer = jax.jit(functools.partial(_infer, model, description.input))
  return functools.partial(infer, variables)


def serving_export(model, variables, description: weights_lib.Description,
                   platforms=SERVING_PLATFORMS):
  """jax.export.Exported of the inference function for uint8 images (b, S, S, C) (a video
  network: views (b, V, T, S, S, C)), b symbolic; the weights are constants inside it, so the
  file alone serves."""
  batch = jax.export.symbolic_shape('b')
  spec = description.input
  shape = jax.ShapeDtypeStruct((*batch, *spec.shape), jnp.uint8)
  infer = functools.partial(_infer, model, spec, variables)
  return jax.export.export(jax.jit(infer), platforms=platforms)(shape)


def write_saved_model(path: epath.Path, model, variables,
                      description: weights_lib.Description) -> None:
  """A TF SavedModel of the inference function (jax2tf, the same StableHLO inside), for TF
  Serving: signature 'serving_default', uint8 `images` [None, S, S, C] (or a video's views
  [None, V, T, S, S, C]) in."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  spec = description.input
  infer = functools.partial(_infer, model, spec, variables)
  shape = ', '.join(str(n) for n in spec.shape)
  converted = jax2tf.convert(infer, polymorphic_shapes=[f'(b, {shape})'],
                             with_gradient=False,
                             native_serialization_platforms=SERVING_PLATFORMS)
  module = tf.Module()
  module.serve = tf.function(converted, autograph=False, input_signature=[
      tf.TensorSpec([None, *spec.shape], tf.uint8, name='images')])
  tf.saved_model.save(module, str(path), signatures={'serving_default': module.serve})


def write_serving(out: str, model, variables, description: weights_lib.Description,
                  saved_model: bool = False) -> dict:
  """out/serving/model.jax_export, with `saved_model` out/serving/saved_model/ too, and
  out/serving/serving.json (what calling them needs)."""
  exported = serving_export(model, variables, description)
  directory = rundir.path(out) / 'serving'
  directory.mkdir(parents=True, exist_ok=True)
  (directory / SERVING_FILE).write_bytes(bytes(exported.serialize()))
  if saved_model:
    write_saved_model(directory / 'saved_model', model, variables, description)
  spec = description.input
  info = {
      'format': 'jax.export', 'file': SERVING_FILE, 'platforms': list(exported.platforms),
      'jax_version': jax.__version__,
      'calling_convention_version': exported.calling_convention_version,
      # The input as it reaches the function; how an image file becomes it is model.json's.
      'input': {'shape': ['b', *spec.shape], 'dtype': 'uint8',
                'layout': 'NVTHWC' if spec.method == 'clips' else 'NHWC',
                'preprocess': spec.to_json()},
      'outputs': {'logits': ['b', description.num_classes],
                  'probabilities': ['b', description.num_classes]},
      'class_names': description.names(),
      'saved_model': 'saved_model' if saved_model else None,
  }
  (directory / 'serving.json').write_text(json.dumps(info, indent=2))
  return info


def load_serving(directory: str):
  """(call, serving.json) of an export's serving artifact: call(uint8 images (b, S, S, C))
  -> {'logits', 'probabilities'}, with any batch size b, on the default device."""
  serving = rundir.path(directory) / 'serving'
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
  flags.DEFINE_bool('overwrite', False, "Replace weights in --out that are not this run's "
                    'earlier export (an earlier export of the same run is always replaced).')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  logs.quiet_library_logs(logging.ERROR)  # orbax logs each step of a save and restore
  description = export(f.workdir, f.out, f.weights, f.serving, f.step, f.saved_model,
                       f.overwrite)
  print(json.dumps({'out': f.out, 'step': description.source['step'],
                    'weights': description.source['weights'], 'model': description.model,
                    'num_classes': description.num_classes,
                    'serving': f'{f.out}/serving' if f.serving or f.saved_model else None}))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
