"""Does bfloat16 compute give the float32 results? RS-50 on real photographs, on any device.

  python -m rs.tools.precision [--model=resnetrs50] [--image_size=160] [--steps=10]

From the same initial weights and the same batch of real photographs (scikit-image's samples,
resized), it runs the trainer's own programs (rs.programs) in three compute settings:
float32 at full precision (the reference), float32 at the backend's default matmul precision
(TF32 on recent NVIDIA GPUs, bf16 passes on TPU), and bfloat16 (rs's default). It prints one
JSON object per setting: the inference logits' relative difference from the reference and
their top-1 agreement, and over `steps` train steps the largest relative loss difference and
the parameters' relative distance after training. On a GPU this is the numerics check of
scripts/benchmark.sh gpu; tests/test_step.py checks the same on Fashion-MNIST on the CPU.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from rs import cli, optim, programs, sharding, step as step_lib, validate
from rs.models import create_model


def photographs(image_size: int, batch_size: int) -> np.ndarray:
  """uint8 (batch, S, S, 3): scikit-image's colour samples, resized, repeated to the batch."""
  from skimage import data
  photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(),
            data.immunohistochemistry(), np.repeat(data.camera()[..., None], 3, -1)]
  resized = [np.asarray(jax.image.resize(jnp.asarray(p, jnp.float32), (image_size, image_size, 3),
                                         'bilinear')) for p in photos]
  images = np.stack([resized[i % len(resized)] for i in range(batch_size)])
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def run_setting(config, batch, steps: int, precision: str):
  """(inference logits, losses, final params) of the trainer's programs in one setting."""
  mesh = sharding.create_mesh(jax.local_devices()[:1])
  size = config.data.image_size
  schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size, 0, 1000, 100)
  with jax.default_matmul_precision(precision):
    training = programs.build_training(config, mesh, 1000, (size, size, 3), schedule)
    state = jax.jit(training.init, out_shardings=training.state_sharding)(jax.random.key(0))
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    forward = jax.jit(lambda v, images: step_lib.logits(training.model, v, images,
                                                        config.data.mean, config.data.std))
    logits = np.asarray(forward(variables, batch['image']))
    global_batch = sharding.to_global(batch, mesh)
    losses = []
    for _ in range(steps):
      state, metrics = training.train_fn(state, global_batch)
      losses.append(float(metrics['loss']))
  return logits, np.asarray(losses), jax.device_get(state.params)


def compare(recipe, model: str, image_size: int, batch_size: int, steps: int) -> list[dict]:
  """The three settings side by side; `recipe` is a training config (configs/base.py)."""
  from rs.tools.benchmark import rs_config
  rng = np.random.default_rng(0)
  batch = {'image': photographs(image_size, batch_size),
           'label': rng.integers(0, 1000, batch_size).astype(np.int32)}
  settings = {'float32 highest': ('float32', 'highest'),
              'float32 default': ('float32', 'default'),
              'bfloat16': ('bfloat16', 'default')}
  runs = {}
  for name, (dtype, precision) in settings.items():
    config = rs_config(recipe, model, image_size, batch_size, dtype)
    config.model.dropout_rate = 0.0  # the same function in every setting
    runs[name] = run_setting(config, batch, steps, precision)
  ref_logits, ref_losses, ref_params = runs['float32 highest']
  norm = lambda tree: np.sqrt(sum(np.sum(np.square(x, dtype=np.float64))
                                  for x in jax.tree.leaves(tree)))
  results = []
  for name, (logits, losses, params) in runs.items():
    results.append({
        'setting': name, 'model': model, 'image_size': image_size, 'batch_size': batch_size,
        'backend': jax.default_backend(), 'device': jax.local_devices()[0].device_kind,
        'logits_relative_difference': float(np.linalg.norm(logits - ref_logits) /
                                            np.linalg.norm(ref_logits)),
        'top1_agreement': float(np.mean(logits.argmax(-1) == ref_logits.argmax(-1))),
        'steps': steps,
        'largest_relative_loss_difference': float(np.max(np.abs(losses - ref_losses) /
                                                         ref_losses)),
        'final_loss': float(losses[-1]),
        'params_relative_distance': float(norm(jax.tree.map(np.subtract, params, ref_params)) /
                                          norm(ref_params)),
    })
  return results


def main(argv):
  del argv
  f = flags.FLAGS
  validate.check_image_size(create_model(f.model), f.model, f.image_size)
  for result in compare(f.config, f.model, f.image_size, f.batch_size, f.steps):
    print(json.dumps(result))


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  from ml_collections import config_flags
  from rs.tools.benchmark import BASE_CONFIG
  config_flags.DEFINE_config_file('config', BASE_CONFIG, 'The training recipe compared.')
  flags.DEFINE_string('model', 'resnetrs50', 'A registered model name.')
  flags.DEFINE_integer('image_size', 160, 'Square input resolution.')
  flags.DEFINE_integer('batch_size', 32, 'Examples per step.', lower_bound=1)
  flags.DEFINE_integer('steps', 10, 'Train steps compared.', lower_bound=1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
