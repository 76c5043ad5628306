"""Evaluate saved weights: `python -m rs.evaluate --weights=DIR [--data_dir=D]`.

DIR is a weights directory (rs.convert's, e.g. the official ResNet-RS weights via timm, or
rs.export's). Its model.json gives the network, the evaluation input (resolution, crop,
normalisation) and the dataset it was made for; flags change what is evaluated:
--data (a tfds name, 'folder' or an in-memory dataset), --split, --data_dir, --image_size.
With --config (a configs/*.py file, as rs.main takes), its data section and evaluation input
are used instead: `python -m rs.evaluate --config=configs/rs50_i160.py --weights=DIR`.
Prints top-1/top-5 and the loss over the whole split: one line of text, or with --json one
JSON object and nothing else on stdout (the logs go to stderr).
"""
import dataclasses
import json
import logging

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from rs import cli, logs, metrics, programs, sharding, validate, weights
from rs.data.eval_input import EvalInput
from rs.models import architecture


def evaluate_weights(weights_dir: str, config: ml_collections.ConfigDict | None = None,
                     data: str | None = None, split: str | None = None,
                     data_dir: str | None = None, image_size: int | None = None,
                     batch_size: int | None = None,
                     mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """top-1/top-5/loss of the weights in `weights_dir` over a whole split: model.json's
  dataset and evaluation input, or the config's; the other arguments override them."""
  mesh = mesh or sharding.create_mesh()
  variables, description = weights.load(weights_dir, sharding.replicated(mesh))
  dataset = dict(description.dataset or {})
  spec, manual_dir, dtype = description.input, None, 'float32'
  if config is not None:
    d = config.data
    dataset = {'name': d.name, 'train_split': d.train_split, 'eval_split': d.eval_split,
               'data_dir': d.data_dir}
    spec = EvalInput.from_config(config, description.input.channels)
    manual_dir, dtype = d.manual_dir, config.dtype
    built = (config.model.name, architecture.of_config(config.model))
    if built != (description.model, description.architecture):
      logging.warning('The config builds %s %s, the weights are %s %s: evaluating the weights '
                      "(model.json's network).", *built, description.model,
                      description.architecture)
  name = data or dataset.get('name')
  if not name:
    raise weights.WeightsError(f'{weights_dir}/model.json names no dataset: give --data (and '
                               '--split, --data_dir)')
  split = split or (dataset.get('eval_split') if name == dataset.get('name') else None) or (
      'validation')
  data_dir = data_dir or (dataset.get('data_dir') if name == dataset.get('name') else None)
  if image_size:
    spec = dataclasses.replace(spec, image_size=image_size)
  flag = '--batch_size' if batch_size or config is None else '--config.eval_batch_size'
  batch_size = batch_size or (config.eval_batch_size if config is not None else 8 * mesh.size)
  sharding.check_batch_size('eval_batch_size', batch_size, mesh, flag)
  # The input and the trainer's evaluation loop import TensorFlow: here, so that the command
  # imports it first, quietly (rs.logs).
  from rs import train
  from rs.data import pipeline as pipeline_lib
  with validate.data_errors():  # a dataset not found or not prepared, a split it lacks
    pipeline = pipeline_lib.eval_pipeline(
        name, split, spec, batch_size, data_dir, manual_dir,
        train_split=dataset.get('train_split') or 'train', class_names=description.class_names)
  if pipeline.num_classes != description.num_classes:
    raise weights.WeightsError(f'{name} {split} has {pipeline.num_classes} classes, the weights '
                               f'{description.num_classes}: evaluate on the dataset they were '
                               'trained for (--data)')
  eval_fn = programs.build_eval(description.build(dtype), spec.mean, spec.std, mesh)
  return train.evaluate(eval_fn, {'': variables}, pipeline, mesh)


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  config_flags.DEFINE_config_file('config', None, 'Optional: a configs/*.py file whose data '
                                  'and evaluation input to use.', lock_config=True)
  flags.DEFINE_string('weights', None, 'A directory written by rs.export or rs.convert.')
  flags.DEFINE_string('data', None, "Dataset: a tfds name, 'folder' or 'fashion_mnist'; "
                      "default: model.json's.")
  flags.DEFINE_string('split', None, "Split to evaluate; default: model.json's, else "
                      "'validation'.")
  flags.DEFINE_string('data_dir', None, 'tfds data_dir, or the ROOT of a class-folder dataset.')
  flags.DEFINE_integer('image_size', None, "Input side; default: model.json's.")
  flags.DEFINE_integer('batch_size', None, 'Images per step over all devices; default: 8 per '
                       "device, or the config's eval_batch_size.")
  flags.DEFINE_bool('json', False, 'Print only one JSON object (top1, top5, loss, '
                    'num_examples) on stdout.')
  flags.mark_flags_as_required(['weights'])
  cli.define_inference_cpu_devices_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  cli.request_inference_devices(f.batch_size or (f.config.eval_batch_size if f.config else None))
  logs.quiet_library_logs(logging.ERROR)  # orbax logs each step of a restore
  tf = logs.import_tensorflow_quietly()
  tf.config.set_visible_devices([], 'GPU')
  result = evaluate_weights(f.weights, f.config, f.data, f.split, f.data_dir, f.image_size,
                            f.batch_size)
  print(json.dumps(result) if f.json else f'{f.weights}: {metrics.eval_text(result)}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
