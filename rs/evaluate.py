"""Evaluate saved weights: `python -m rs.evaluate --config=configs/rs50_i160.py --weights=DIR`.

DIR is what rs.convert writes (e.g. the official ResNet-RS weights via timm). The config gives
the data (data.name, data.eval_split, data.data_dir), the resolution and the official eval
preprocessing (data.eval_crop_padding / data.eval_crop_fraction). Prints top-1/top-5 and the
loss over the whole split as one JSON line.
"""
import functools
import json
import logging
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from rs import checkpoint, programs, sharding, train
from rs.data import pipeline as pipeline_lib


def evaluate_weights(config: ml_collections.ConfigDict, weights_dir: str,
                     mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """top-1/top-5/loss of the weights in `weights_dir` on the config's eval split."""
  mesh = mesh or sharding.create_mesh()
  sharding.check_batch_size('eval_batch_size', config.eval_batch_size, mesh)
  pipeline = pipeline_lib.create_eval_pipeline(config)
  model = programs.build_model(config, pipeline.num_classes)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jax.numpy.zeros((1, *pipeline.image_shape)))
  replicated = sharding.replicated(mesh)
  variables, meta = checkpoint.load_variables(
      weights_dir, checkpoint.abstract_like(dict(shapes), replicated))
  if meta.get('model') not in (None, config.model.name):
    logging.warning('Weights were saved for %s, the config builds %s.', meta['model'],
                    config.model.name)
  eval_fn = programs.build_eval(model, config.data.mean, config.data.std, mesh)
  return train.evaluate(eval_fn, {'': variables}, pipeline, mesh)


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.',
                                  lock_config=True)
  flags.DEFINE_string('weights', None, 'A directory written by rs.export or rs.convert.')
  flags.mark_flags_as_required(['config', 'weights'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  try:
    result = evaluate_weights(flags.FLAGS.config, flags.FLAGS.weights)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'rs.evaluate: {e}')  # one line, no traceback: the message names the fix
  print(json.dumps(result))


if __name__ == '__main__':
  define_flags()
  app.run(main)
