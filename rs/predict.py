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

Each image is preprocessed exactly as the model's evaluation did, as model.json describes it:
- streamed datasets (ImageNet, tfds and folder datasets; timm imports):
  `tf_preprocess.eval_image_from_bytes`, the official center crop S / (S + eval_crop_padding)
  (or eval_crop_fraction), decoded straight from the JPEG, then TF1's bicubic resize to S x S.
  (Evaluation always resizes bicubic; model.json's resize_method is the training crop's.)
- in-memory datasets (Fashion-MNIST): the file decoded with the model's channel count
  (grayscale for Fashion-MNIST: color files through TF's luma weights), then
  `preprocess.resize` to S x S, as rs.data.pipeline resizes the eval split. A file at the
  dataset's own size (28 x 28) is thus exactly an eval image. Any other size is first centered
  on a black square and resized to 28 x 28 with the same resize, as Fashion-MNIST built its
  images from product photos; their pixels are light garments on black, so a photograph of a
  dark garment on white needs inverting first (rs.predict does not guess).
Weights from rs.convert (timm) carry no preprocessing: they get ImageNet's (configs/base.py) at
--image_size, by default the resolution of the official checkpoint timm ported (TIMM_IMAGE_SIZE).

Class names: model.json's class_names when given; ImageNet's 1000 WordNet lemmas ('tench, Tinca
tinca', ...) for ImageNet models, from tensorflow_datasets (see `imagenet_class_names`); a tfds
dataset's own label names (Fashion-MNIST's 'T-shirt/top' ... 'Ankle boot'); else 'class 7'.
"""
import dataclasses
import functools
import json
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from rs import checkpoint, programs
from rs.step import normalize

TOP = 5

# The resolution of the official checkpoint that timm ported for each name (timm's file names:
# resnetrs101_i192_ema, resnetrs152_i256_ema, resnetrs350_i256_ema, ...; configs/rs*_i*.py).
TIMM_IMAGE_SIZE = {'resnetrs50': 160, 'resnetrs101': 192, 'resnetrs152': 256,
                   'resnetrs200': 256, 'resnetrs270': 256, 'resnetrs350': 256,
                   'resnetrs420': 320}
IMAGENET_CLASSES = 1000


class PredictError(ValueError):
  """The weights directory cannot be used; the message names it and says why."""


class ImageError(ValueError):
  """One image file cannot be read or decoded; the message says why."""


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


# Class names.

def imagenet_class_names() -> list[str]:
  """ImageNet-1k's class names in label order (the sorted WordNet ids, n01440764 first).

  tensorflow_datasets (a requirement) ships the WordNet lemmas of each id, 'tench, Tinca tinca'
  ... 'toilet tissue, toilet paper, bathroom tissue', with its SI-Score dataset (the two cranes
  told apart as 'crane (bird)' and 'crane (machine)'); tests/test_predict.py checks them in
  order against imagenet2012's id list and timm's lemma table. Should that module move, the
  WordNet ids of tfds's imagenet2012 labels stand in.
  """
  try:
    from tensorflow_datasets.datasets.siscore import labels
    if len(labels.IMAGENET_LABELS_LIST) == IMAGENET_CLASSES:
      return list(labels.IMAGENET_LABELS_LIST)
  except ImportError:
    pass
  return _tfds_label_names('imagenet2012') or [f'class {i}' for i in range(IMAGENET_CLASSES)]


def _tfds_info(name: str):
  """tfds's DatasetInfo of `name` (from the builder's code: no download), or None."""
  try:
    import tensorflow_datasets as tfds
    return tfds.builder(name).info
  except Exception:  # not a tfds name, tfds missing, default data_dir unreadable
    return None


def _tfds_label_names(name: str) -> list[str] | None:
  info = _tfds_info(name)
  if info is None:
    return None
  label = (info.supervised_keys or ('image', 'label'))[1]
  feature = info.features[label] if label in info.features else None
  return list(feature.names) if hasattr(feature, 'names') else None


def is_imagenet(meta: dict) -> bool:
  if int(meta['num_classes']) != IMAGENET_CLASSES:
    return False
  dataset = meta.get('dataset')
  return meta.get('source') == 'timm' if dataset is None else dataset.startswith('imagenet2012')


def class_names(meta: dict) -> list[str]:
  """The name of each class of the model that model.json `meta` describes (see the top)."""
  num_classes = int(meta['num_classes'])
  if meta.get('class_names') is not None:
    if len(meta['class_names']) != num_classes:
      raise PredictError(f"model.json names {len(meta['class_names'])} classes, the model has "
                         f'{num_classes}')
    return [str(n) for n in meta['class_names']]
  if is_imagenet(meta):
    return imagenet_class_names()
  dataset = meta.get('dataset')
  names = _tfds_label_names(dataset) if dataset not in (None, 'folder') else None
  return names if names and len(names) == num_classes else [f'class {i}'
                                                             for i in range(num_classes)]


# Preprocessing.

@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How the model's evaluation turned an image into its input (float32, 0..255)."""
  image_size: int
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  in_memory: bool  # the in-memory pipeline's resize, else the streamed official center crop
  native_size: int | None = None  # in-memory datasets: the side of the dataset's own images
  crop_padding: int = 32
  crop_fraction: float | None = None

  def __call__(self, image_bytes: bytes) -> np.ndarray:
    """Encoded image -> float32 (S, S, channels); raises ImageError for undecodable bytes."""
    import tensorflow as tf
    from rs.data import tf_preprocess
    # A JPEG decoder may stop at a crop window before a truncation: look at the whole file.
    if not tf_preprocess.well_formed(tf.constant(image_bytes)):
      error = tf_preprocess.decode_error(image_bytes)
      if error:
        raise ImageError(error)
    try:
      if self.in_memory:
        return self._in_memory(self._decode(image_bytes))
      return tf_preprocess.eval_image_from_bytes(
          tf.constant(image_bytes), self.image_size, self.crop_padding,
          self.crop_fraction).numpy()
    except tf.errors.OpError as e:
      raise ImageError(tf_preprocess.decode_error(image_bytes) or _one_line(e.message)) from None

  def _decode(self, image_bytes: bytes) -> np.ndarray:
    """uint8 (H, W, channels), whatever the file holds: alpha dropped, color made gray by
    TF's luma weights (exact on gray pixels), gray repeated for a color model."""
    import tensorflow as tf
    # The file's own channels: TF's GIF and BMP decoders give no grayscale.
    image = tf.io.decode_image(image_bytes, channels=0, expand_animations=False)
    image = image[..., :3] if image.shape[-1] >= 3 else image[..., :1]
    if self.channels == 1 and image.shape[-1] == 3:
      image = tf.image.rgb_to_grayscale(image)
    return np.repeat(image.numpy(), self.channels // image.shape[-1], axis=-1)

  def _in_memory(self, image: np.ndarray) -> np.ndarray:
    from rs.data import preprocess
    height, width = image.shape[:2]
    if self.native_size and (height, width) != (self.native_size,) * 2:
      side = max(height, width)
      top, left = (side - height) // 2, (side - width) // 2
      image = np.pad(image, ((top, side - height - top), (left, side - width - left), (0, 0)))
      image = preprocess.resize(image[None], self.native_size)[0]
    return preprocess.resize(image[None], self.image_size)[0].astype(np.float32)


def _first_conv_channels(variables: dict) -> int:
  return int(variables['params']['stem1']['conv']['kernel'].shape[2])


def preprocessing(meta: dict, variables: dict, image_size: int | None = None) -> Preprocessing:
  """The evaluation preprocessing model.json describes, with configs/base.py's ImageNet
  defaults for what it leaves out (rs.convert's timm imports give none of it)."""
  from configs import base
  defaults = base.get_config().data
  image_size = image_size or meta.get('image_size') or TIMM_IMAGE_SIZE.get(meta['model'])
  if not image_size:
    raise PredictError(f"model.json gives no image_size and {meta['model']} has no released "
                       'resolution: give --image_size')
  channels = int(meta.get('channels') or _first_conv_channels(variables))
  mean = tuple(meta.get('mean') or defaults.mean)
  std = tuple(meta.get('std') or defaults.std)
  if len(mean) != channels or len(std) != channels:
    raise PredictError(f'model.json has mean {list(mean)} and std {list(std)} for {channels} '
                       'channels')
  dataset = meta.get('dataset')
  # The eval input rs.export records ('resize': in-memory, 'center_crop': streamed); without
  # it, the one dataset rs holds in memory by default, and any grayscale one.
  in_memory = (meta['preprocess'] == 'resize' if meta.get('preprocess') else
               dataset == 'fashion_mnist' or channels == 1)
  native = None
  if in_memory and dataset:
    info = _tfds_info(dataset)
    shape = info.features['image'].shape if info and 'image' in info.features else None
    native = shape[0] if shape and shape[0] and shape[0] == shape[1] else None
  crop_padding = meta.get('eval_crop_padding')
  return Preprocessing(
      image_size=int(image_size), channels=channels, mean=mean, std=std, in_memory=in_memory,
      native_size=native,
      crop_padding=int(defaults.eval_crop_padding if crop_padding is None else crop_padding),
      crop_fraction=meta.get('eval_crop_fraction'))


def read_image(path: str, prepare: Preprocessing) -> np.ndarray:
  """The file at `path` as the model's input; ImageError (naming why) when unusable."""
  try:
    with open(path, 'rb') as f:
      image_bytes = f.read()
  except OSError as e:
    raise ImageError(e.strerror or _one_line(e)) from None
  if not image_bytes:
    raise ImageError('empty file')
  return prepare(image_bytes)


# The model.

def _shape_mismatch(want: dict, got: dict) -> str | None:
  """The first variable whose saved shape differs from the network's, or None."""
  want = {k: v.shape for k, v in flax.traverse_util.flatten_dict(want, sep='/').items()}
  got = {k: np.shape(v) for k, v in flax.traverse_util.flatten_dict(got, sep='/').items()}
  for name in sorted(want.keys() | got.keys()):
    if want.get(name) != got.get(name):
      return f'{name}: saved {got.get(name)}, the network needs {want.get(name)}'
  return None


class Predictor:
  """A weights directory's network, its class names and preprocessing, and one jitted
  forward pass (batches padded to a power of two: a few programs for any number of images)."""

  def __init__(self, directory: str, image_size: int | None = None, batch_size: int = 32):
    if batch_size < 1:
      raise PredictError(f'--batch_size={batch_size}: give 1 or more')
    try:
      variables, meta = checkpoint.load_variables(directory)
      self.model = programs.model_from_meta(meta)
      self.prepare = preprocessing(meta, variables, image_size)
      self.names = class_names(meta)
    except KeyError as e:
      raise PredictError(f'--checkpoint={directory}: model.json or the weights lack {e}') from None
    except PredictError as e:
      raise PredictError(f'--checkpoint={directory}: {e}') from None
    except Exception as e:  # no model.json, bad JSON, unreadable or missing arrays, bad name
      raise PredictError(f'--checkpoint={directory}: {_one_line(e)}') from None
    self.meta = meta
    s, c = self.prepare.image_size, self.prepare.channels
    shapes = jax.eval_shape(functools.partial(self.model.init, train=False), jax.random.key(0),
                            jnp.zeros((1, s, s, c)))
    mismatch = _shape_mismatch(dict(shapes), variables)
    if mismatch:
      raise PredictError(f'--checkpoint={directory}: the weights do not fit the network '
                         f"model.json describes ({meta['model']}, {c} channels): {mismatch}")
    self.variables = jax.device_put(variables)
    self.batch_size = batch_size
    mean, std = self.prepare.mean, self.prepare.std
    self._forward = jax.jit(lambda v, images: jax.nn.softmax(self.model.apply(
        v, normalize(images, mean, std), train=False).astype(jnp.float32)))

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 (N, S, S, C) preprocessed images -> (N, num_classes) softmax probabilities."""
    out = []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      padded = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
      chunk = np.concatenate([chunk, np.zeros((padded - len(chunk), *chunk.shape[1:]),
                                              chunk.dtype)])
      out.append(np.asarray(self._forward(self.variables, chunk))[:len(images) - start])
    return np.concatenate(out)

  def predict(self, paths: list[str], top: int = TOP) -> list[dict | ImageError]:
    """For each path, {'path', 'top5': [{'index', 'label', 'probability'}]}, or its error."""
    results, images = [], []
    for path in paths:
      try:
        images.append(read_image(path, self.prepare))
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
  flags.DEFINE_integer('image_size', None, "Input side S; default: model.json's, or the "
                       'released resolution of a timm import.')
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.')
  flags.DEFINE_bool('json', False, 'One JSON object per image instead of text.')


def _import_tensorflow_quietly():
  """TensorFlow, imported with stderr closed: its import logs four lines (oneDNN, absl's
  'before InitializeLog') whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21), which would bury the
  one-line messages. An ImportError still shows (raised after stderr is back)."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow as tf
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
  return tf


def main(argv):
  f = flags.FLAGS
  paths = argv[1:]
  if not f.checkpoint or not paths:
    raise app.UsageError('give --checkpoint=DIR and one or more image files')
  if not f['verbosity'].present:  # orbax logs each restore at INFO
    logging.set_verbosity(logging.WARNING)
  tf = _import_tensorflow_quietly()
  tf.config.set_visible_devices([], 'GPU')
  tf.get_logger().setLevel('ERROR')  # resize_bicubic's deprecation notice
  try:
    predictor = Predictor(f.checkpoint, f.image_size, f.batch_size)
  except PredictError as e:
    sys.exit(f'rs.predict: {e}')  # one line, no traceback: the message names the fix
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
    sys.exit(f'rs.predict: {failed} of {len(paths)} images could not be read')


if __name__ == '__main__':
  # TF's C++ log repeats each decoder failure that the one-line messages above already name.
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
  define_flags()
  app.run(main)
