"""Small ImageNet-like datasets of real photographs, in each format rs reads.

The photographs are scikit-image's bundled samples (no download). Each class is one
photograph; its examples are random crops of it resized to about ImageNet's typical size
(500 x 375 by default) and saved as JPEG (or PNG). Used by the tests (one dataset per source
format), the input benchmark and demos:

  python -m rs.tools.photo_dataset --format=folder --out=/tmp/photos --per_class=40

Formats: 'folder' (ROOT/SPLIT/CLASS/*.jpg), 'tfds' (a prepared tfds dataset in a data_dir),
'imagenet2012' (the two ILSVRC2012 tar files of a manual-download directory).
"""
import io
import os
import tarfile

import numpy as np
from absl import flags

from rs import cli

# scikit-image sample photographs that need no download: colour first.
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
          'hubble_deep_field', 'retina', 'colorwheel', 'camera', 'coins', 'moon', 'clock',
          'brick', 'grass', 'gravel', 'cell')


def photo(name: str) -> np.ndarray:
  """A scikit-image sample as uint8 RGB."""
  import skimage.data
  image = np.asarray(getattr(skimage.data, name)())
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return image[..., :3].astype(np.uint8)


def crops(image: np.ndarray, count: int, size: tuple[int, int], rng: np.random.Generator):
  """`count` random crops (25-100% of each side) of `image`, resized to (width, height)."""
  from PIL import Image
  h, w = image.shape[:2]
  out = []
  for _ in range(count):
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(image[top:top + ch, left:left + cw])
    if rng.random() < 0.5:  # portrait and landscape, as in ImageNet
      size = size[::-1]
    out.append(np.asarray(crop.resize(size, Image.BICUBIC)))
  return out


def encode(image: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt.upper(), quality=quality)
  return buffer.getvalue()


def examples(num_classes: int, per_class: int, size=(500, 375), seed: int = 0):
  """[(image uint8, label)] : `per_class` crops of each of the first `num_classes` photos."""
  if not 1 <= num_classes <= len(PHOTOS):
    raise ValueError(f'num_classes={num_classes}: between 1 and {len(PHOTOS)} photographs')
  rng = np.random.default_rng(seed)
  return [(image, label) for label, name in enumerate(PHOTOS[:num_classes])
          for image in crops(photo(name), per_class, size, rng)]


def write_folder(root: str, split: str, items, fmt: str = 'jpeg') -> None:
  """ROOT/SPLIT/<photo name>/<index>.jpg|png."""
  ext = {'jpeg': 'jpg', 'png': 'png'}[fmt]
  for i, (image, label) in enumerate(items):
    folder = os.path.join(root, split, PHOTOS[label])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f'{i:05d}.{ext}'), 'wb') as f:
      f.write(encode(image, fmt))


def write_tfds(data_dir: str, name: str, splits: dict, num_classes: int) -> None:
  """A prepared tfds dataset `name` (JPEG images) with {split: items} in `data_dir`."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(names=list(PHOTOS[:num_classes]))})
  signature = {'image': tf.TensorSpec((None, None, 3), tf.uint8),
               'label': tf.TensorSpec((), tf.int64)}

  def dataset(items):
    return tf.data.Dataset.from_generator(
        lambda: ({'image': image, 'label': label} for image, label in items),
        output_signature=signature)

  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version='1.0.0', features=features,
      split_datasets={split: dataset(items) for split, items in splits.items()},
      data_dir=data_dir, disable_shuffling=True)


def imagenet_synsets() -> list[str]:
  """The 1000 ILSVRC2012 synset ids in label order (tfds ships them)."""
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common
  with open(imagenet_common.label_names_file()) as f:
    return f.read().split()


def write_imagenet_manual(manual_dir: str, train_items, num_val: int,
                          seed: int = 0) -> list[int]:
  """ILSVRC2012_img_train.tar (one inner tar per synset) and ILSVRC2012_img_val.tar.

  Training class k is stored as the k-th synset. Validation labels come from tfds's bundled
  list for ILSVRC2012_val_00000001...: the images are crops of the photos and their stored
  labels are those official ones; returns them.
  """
  from tensorflow_datasets.datasets.imagenet2012 import imagenet_common
  if num_val > len(PHOTOS):
    raise ValueError(f'num_val={num_val}: at most {len(PHOTOS)}')
  os.makedirs(manual_dir, exist_ok=True)
  synsets = imagenet_synsets()

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_train.tar'), 'w') as outer:
    for label in sorted({label for _, label in train_items}):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as tar:
        for i, (image, l) in enumerate(train_items):
          if l == label:
            add(tar, f'{synsets[label]}_{i}.JPEG', encode(image))
      add(outer, f'{synsets[label]}.tar', inner.getvalue())
  val_images = [image for image, _ in examples(len(PHOTOS), 1, seed=seed + 1)][:num_val]
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_val.tar'), 'w') as tar:
    for i, image in enumerate(val_images):
      add(tar, f'ILSVRC2012_val_{i + 1:08d}.JPEG', encode(image))
  labels_file = os.path.join(os.path.dirname(imagenet_common.__file__), 'validation_labels.txt')
  with open(labels_file) as f:
    official = f.read().split()[:num_val]
  return [synsets.index(s) for s in official]


def main(argv):
  del argv
  f = flags.FLAGS
  items = examples(f.num_classes, f.per_class, seed=0)
  val = examples(f.num_classes, max(1, f.per_class // 5), seed=1)
  if f.format == 'folder':
    write_folder(f.out, 'train', items)
    write_folder(f.out, 'validation', val)
  elif f.format == 'tfds':
    write_tfds(f.out, 'rs_photos', {'train': items, 'validation': val}, f.num_classes)
  else:
    write_imagenet_manual(f.out, items, num_val=len(val))
  print(f'{len(items)} training and {len(val)} validation images ({f.format}) in {f.out}')


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_enum('format', 'folder', ['folder', 'tfds', 'imagenet2012'], 'Output format.')
  flags.DEFINE_string('out', None, 'Output folder (a data_dir for tfds, a manual_dir for '
                      'imagenet2012).', required=True)
  flags.DEFINE_integer('num_classes', 8, f'Classes (one photograph each), at most {len(PHOTOS)}.',
                       lower_bound=1, upper_bound=len(PHOTOS))
  flags.DEFINE_integer('per_class', 40, 'Training images per class.', lower_bound=1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
