"""Top-5 classes of image files: `python -m rs.predict --checkpoint=DIR img1.jpg img2.png ...`.

DIR is a weights directory (rs.convert, rs.export: DIR/variables + DIR/model.json). For each
image it prints the path, then one line per class, most probable first:

  photos/boot.png
    0.8123  Ankle boot
    ...

or, with --json, one JSON object per image: {"path", "top5": [{"index", "label",
"probability"}, ...]}. A file that cannot be read or decoded (missing, not an image, truncated)
gets one line on stderr naming it and is skipped; the others are still predicted, and the exit
status is 1 when any failed. JPEG, PNG, GIF (first frame) and BMP files are read.

Each image is preprocessed exactly as the model's evaluation did, as model.json describes it
(rs.data.eval_input.EvalInput):
- streamed datasets (ImageNet, tfds and folder datasets; timm imports):
  `tf_preprocess.eval_image_from_bytes`, the official center crop S / (S + crop_padding)
  (or crop_fraction), decoded straight from the JPEG, then TF1's bicubic resize to S x S.
- in-memory datasets (Fashion-MNIST): the file decoded with the model's channel count
  (grayscale for Fashion-MNIST: color files through their luma, tf_preprocess.grayscale), then
  `preprocess.resize` to S x S, as rs.data.pipeline resizes the eval split. A file at the
  dataset's own size (28 x 28) is thus exactly an eval image. Any other size is first centered
  on a black square and resized to 28 x 28 with the same resize, as Fashion-MNIST built its
  images from product photos; their pixels are light garments on black, so a photograph of a
  dark garment on white needs inverting first (rs.predict does not guess).
- video networks (3D ResNet-RS): each path is a video file or a folder of frame images, read
  as rs.data.video_pipeline evaluates: clips x crops views, probabilities averaged.
--image_size evaluates at another resolution than model.json's.

Class names: model.json's (rs.convert writes ImageNet's 1000 WordNet lemmas, 'tench, Tinca
tinca', ...; rs.export the run's dataset's); else 'class 7'.
"""
import dataclasses
import json
import logging
import sys

import jax
import numpy as np
from absl import app, flags

from rs import cli, logs, sharding, step as step_lib, validate, weights
from rs.errors import UserError
from rs.data.eval_input import ImageError

TOP = 5


class PredictError(UserError, ValueError):
  """The weights directory cannot be used; the message names it and says why."""


class Predictor:
  """A weights directory's network, class names and evaluation input, and one jitted forward
  pass (batches padded to a power of two, and to a multiple of the devices: a few programs for
  any number of images)."""

  def __init__(self, directory: str, image_size: int | None = None, batch_size: int = 32,
               devices: list | None = None):
    if batch_size < 1:
      raise PredictError(f'--batch_size={batch_size}: give 1 or more')
    try:
      variables, self.description = weights.load(directory)
    except weights.WeightsError as e:
      raise PredictError(f'--checkpoint={directory}: {e}') from None
    self.prepare = self.description.input
    if image_size is not None:
      validate.check_image_size(self.description.build(), self.description.model, image_size)
      self.prepare = dataclasses.replace(self.prepare, image_size=image_size)
    self.names = self.description.names()
    self.batch_size = batch_size
    model, spec = self.description.build(), self.prepare
    # Each batch split over `devices` (default: this host's; one per core on a CPU, rs.cli);
    # the weights are copied to each once.
    self.mesh = sharding.create_mesh(devices or jax.local_devices())
    self.variables = jax.device_put(variables, sharding.replicated(self.mesh))
    self._forward = jax.jit(lambda v, images: jax.nn.softmax(
        step_lib.logits(model, v, images, spec.mean, spec.std)),
        in_shardings=(sharding.replicated(self.mesh), sharding.batch_sharded(self.mesh)))

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 (N, S, S, C) preprocessed images -> (N, num_classes) softmax probabilities."""
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      padded = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
      padded = -(-padded // self.mesh.size) * self.mesh.size  # a multiple of the devices
      rows = len(chunk)
      chunk = np.concatenate([chunk, np.zeros((padded - rows, *chunk.shape[1:]), chunk.dtype)])
      out.append(np.asarray(self._forward(self.variables, chunk))[:rows])  # the padding dropped
    return np.concatenate(out)

  def predict(self, paths: list[str], top: int = TOP) -> list[dict | ImageError]:
    """For each path, {'path', 'top5': [{'index', 'label', 'probability'}]}, or its error."""
    results, images = [], []
    for path in paths:
      try:
        images.append(self.prepare.read(path))
        results.append(None)
      except ImageError as e:
        results.append(e)
    probabilities = iter(self.probabilities(np.stack(images)) if images else [])
    for i, result in enumerate(results):
      if result is None:
        p = next(probabilities)
        best = np.argsort(-p, kind='stable')[:top]
        results[i] = {'path': paths[i], 'top5': [
            {'index': int(k), 'label': self.names[k], 'probability': float(p[k])} for k in best]}
    return results


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_string('checkpoint', None, 'A weights directory (rs.convert, rs.export).')
  flags.DEFINE_integer('image_size', None, "Input side S; default: model.json's.")
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.')
  flags.DEFINE_bool('json', False, 'One JSON object per image instead of text.')
  cli.define_inference_cpu_devices_flag()


def main(argv):
  f = flags.FLAGS
  paths = argv[1:]
  if not f.checkpoint or not paths:
    raise app.UsageError('give --checkpoint=DIR and one or more image files')
  cli.request_inference_devices()
  logs.quiet_library_logs(logging.ERROR)  # orbax logs each restore
  tf = logs.import_tensorflow_quietly()
  tf.config.set_visible_devices([], 'GPU')
  predictor = Predictor(f.checkpoint, f.image_size, f.batch_size)
  failed = 0
  for path, result in zip(paths, predictor.predict(paths)):
    if isinstance(result, ImageError):
      print(f'rs.predict: {path}: {result}', file=sys.stderr)
      failed += 1
    elif f.json:
      print(json.dumps(result))
    else:
      print(path)
      for row in result['top5']:
        print(f"  {row['probability']:.4f}  {row['label']}")
  if failed:
    raise PredictError(f'{failed} of {len(paths)} images could not be read (named above)')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
