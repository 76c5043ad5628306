"""Where examples come from: datasets as in-memory arrays (small) with their official splits.

Fashion-MNIST is read through tfds when tfds can prepare it (network, or already prepared in
`data_dir`); with no network, from the four original IDX files, e.g. Debian's package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) - the same files tfds downloads.
"""
import dataclasses
import gzip
import logging
import os
import re

import numpy as np

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """One split held in memory: uint8 images (N, H, W, C) and int32 labels (N,)."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...] | None = None  # by label index, where the dataset names them

  def __len__(self):
    return len(self.labels)


def read_idx(path: str) -> np.ndarray:
  """An IDX file (the MNIST format, optionally gzipped) as a numpy array."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f'{path} is not an unsigned-byte IDX file; re-download it')
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f'{path} holds {array.size} values, its header says {shape}: the file is '
                     'truncated; re-download it')
  return array.reshape(shape)


def _fashion_mnist_from_idx(directory: str, split: str) -> ArraySplit:
  images_file, labels_file = FASHION_MNIST_FILES[split]
  images = read_idx(os.path.join(directory, images_file))
  labels = read_idx(os.path.join(directory, labels_file)).astype(np.int32)
  return ArraySplit(images[..., None], labels, num_classes=10,
                    class_names=CLASS_NAMES['fashion_mnist'])


def _find_idx_dir(manual_dir: str | None) -> str | None:
  for d in (manual_dir, DEBIAN_FASHION_MNIST):
    if d and all(os.path.exists(os.path.join(d, f)) for pair in FASHION_MNIST_FILES.values()
                 for f in pair):
      return d
  return None


def _load_tfds(name: str, split: str, data_dir: str | None) -> ArraySplit:
  import tensorflow_datasets as tfds
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()
  arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  images = arrays['image']
  label = builder.info.features['label']
  names = label_names(name, label)
  return ArraySplit(images if images.ndim == 4 else images[..., None],
                    arrays['label'].astype(np.int32), num_classes=label.num_classes,
                    class_names=None if names is None else tuple(names))


def parse_split(split: str) -> tuple[str, slice]:
  """'test[:500]' -> ('test', slice(None, 500)); 'test' -> ('test', slice(None))."""
  match = re.fullmatch(r'(\w+)(?:\[(-?\d*):(-?\d*)\])?', split)
  if not match:
    raise ValueError(f"split {split!r}: use a name with an optional [start:stop], e.g. 'test[:500]'")
  name, start, stop = match.groups()
  return name, slice(int(start) if start else None, int(stop) if stop else None)


def _load_lfw_faces(split: str) -> ArraySplit:
  """scikit-image's bundled LFW subset as a 2-class task: 100 faces (label 0) and 100
  non-face crops (label 1), 25x25 grayscale. 'train' holds the first 80 of each, face and
  non-face alternating (so any slice of it, e.g. a minival 'train[120:]', is balanced), 'test'
  the last 20 of each: a real dataset small enough to fine-tune on in seconds (the notebook)."""
  try:
    from skimage import data
  except ImportError:
    raise FileNotFoundError('lfw_faces comes with scikit-image: pip install scikit-image'
                            ) from None
  images = np.round(data.lfw_subset() * 255).astype(np.uint8)[..., None]
  labels = np.repeat(np.arange(2, dtype=np.int32), 100)
  rows = (np.stack([np.r_[0:80], np.r_[100:180]], 1).ravel() if split == 'train'
          else np.r_[80:100, 180:200])
  return ArraySplit(images[rows], labels[rows], num_classes=2,
                    class_names=CLASS_NAMES['lfw_faces'])


def _load_digits(split: str) -> ArraySplit:
  """scikit-learn's bundled copy of the UCI handwritten digits (the test part of UCI's
  optdigits, 13 writers): 1,797 8x8 grayscale images, 17 gray levels (scaled to 0..255), 10
  classes. 'train' is the first 1,297, 'test' the last 500 (the classes are spread evenly
  through the file)."""
  try:
    from sklearn.datasets import load_digits
  except ImportError:
    raise FileNotFoundError('digits comes with scikit-learn: pip install scikit-learn'
                            ) from None
  digits = load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  rows = slice(0, 1297) if split == 'train' else slice(1297, None)
  return ArraySplit(images[rows], digits.target[rows].astype(np.int32), num_classes=10,
                    class_names=CLASS_NAMES['digits'])


# The small datasets held in memory without tfds: their splits, class names and image side.
ARRAY_DATASETS = {
    'fashion_mnist': ('train', 'test'),
    'lfw_faces': ('train', 'test'),
    'digits': ('train', 'test'),
}
CLASS_NAMES = {
    # The dataset's documented labels (tfds's too), by label index.
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                      'Sneaker', 'Bag', 'Ankle boot'),
    'lfw_faces': ('face', 'not a face'),
    'digits': tuple('0123456789'),
}
NATIVE_SIZE = {'fashion_mnist': 28, 'lfw_faces': 25, 'digits': 8}
# ImageNet's per-channel mean and std on the 0..255 scale (the official code's normalisation).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
IMAGENET_CLASSES = 1000


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
  try:  # the WordNet ids
    import tensorflow_datasets as tfds
    return list(tfds.builder('imagenet2012').info.features['label'].names)
  except Exception:  # tfds missing, or its imagenet2012 code moved
    return [f'class {i}' for i in range(IMAGENET_CLASSES)]


def label_names(name: str, feature) -> list[str] | None:
  """Class names of tfds dataset `name` from its label feature: ImageNet's readable lemmas
  (tfds names its classes by WordNet id), else the feature's names; None where it has none."""
  if name.split(':')[0].split('/')[0] == 'imagenet2012':
    return imagenet_class_names()
  names = getattr(feature, 'names', None)
  return list(names) if names else None


def tfds_label_names(name: str, data_dir: str | None = None) -> list[str] | None:
  """A tfds dataset's label names, from its builder's code or its prepared copy in `data_dir`
  (nothing is downloaded); None where tfds does not know them."""
  try:
    import tensorflow_datasets as tfds
    info = tfds.builder(name, data_dir=data_dir).info
  except Exception:  # not a tfds name, tfds missing, data_dir unreadable
    return None
  label = (info.supervised_keys or ('image', 'label'))[1]
  return label_names(name, info.features[label]) if label in info.features else None


def class_names(name: str | None, data_dir: str | None = None,
                train_split: str = 'train') -> list[str] | None:
  """The class names of dataset `name` by label index, where they can be known: rs's
  in-memory datasets, ImageNet, tfds datasets with named labels, class folders (the training
  split's sorted folder names, as rs.data.records numbers them); None otherwise."""
  if name is None:
    return None
  if name in CLASS_NAMES:
    return list(CLASS_NAMES[name])
  if name == 'folder':
    from rs.data import records
    if not data_dir:
      return None
    try:
      return records.FolderRecords(data_dir, train_split.split('[')[0]).class_names
    except (OSError, ValueError):  # the folder has gone or changed
      return None
  return tfds_label_names(name, data_dir)


def load_array_split(name: str, split: str, data_dir: str | None = None,
                     manual_dir: str | None = None) -> ArraySplit:
  """`split` of the small dataset `name`, in memory; `split` may carry a [start:stop] slice."""
  if name not in ARRAY_DATASETS:
    return _load_tfds(name, split, data_dir)
  split, rows = parse_split(split)
  if split not in ARRAY_DATASETS[name]:
    raise ValueError(f'{name} has splits {ARRAY_DATASETS[name]}, not {split!r}')
  if name in _BUNDLED:
    full = _BUNDLED[name](split)
  else:
    full = _load_fashion_mnist(split, data_dir, manual_dir)
  return dataclasses.replace(full, images=full.images[rows], labels=full.labels[rows])


# Datasets that come inside an installed package.
_BUNDLED = {'lfw_faces': _load_lfw_faces, 'digits': _load_digits}


def _load_fashion_mnist(split: str, data_dir: str | None, manual_dir: str | None) -> ArraySplit:
  name = 'fashion_mnist'
  if split not in FASHION_MNIST_FILES:
    raise ValueError(f"fashion_mnist has splits 'train' and 'test', not {split!r}")
  try:
    import tensorflow_datasets as tfds
    if tfds.builder(name, data_dir=data_dir).is_prepared():
      return _load_tfds(name, split, data_dir)
  except Exception as e:  # tfds missing or its data_dir unreadable: fall through to the files
    logging.info('tfds cannot read prepared fashion_mnist (%s); looking for IDX files.', e)
  directory = _find_idx_dir(manual_dir)
  if directory is not None:
    logging.info('Reading fashion_mnist %s from the IDX files in %s.', split, directory)
    return _fashion_mnist_from_idx(directory, split)
  try:
    return _load_tfds(name, split, data_dir)
  except Exception as e:
    raise FileNotFoundError(
        f'fashion_mnist not found: no prepared tfds copy in {data_dir or "the tfds default dir"},'
        f' no IDX files in {manual_dir or "(data.manual_dir unset)"} or {DEBIAN_FASHION_MNIST},'
        f' and tfds could not download it ({type(e).__name__}). Fix: `apt-get install '
        'dataset-fashion-mnist`, or set --config.data.manual_dir to a folder with the four '
        'original .gz files.') from None
