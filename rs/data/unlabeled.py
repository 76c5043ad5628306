"""Unlabeled images for the pseudo-labelling teacher (rs.pseudo_label), cut into fixed shards.

`open_unlabeled(name, split, data_dir)` reads any source rs trains on, its labels ignored:
- 'folder': every image file under DATA_DIR/SPLIT (or DATA_DIR without a split), recursively,
  in sorted path order: class folders and a flat folder of images alike;
- 'tfrecord': the TFRecord files DATA_DIR matches (a glob), tf.train.Examples holding the
  encoded image under 'image/encoded' (ImageNet's and Noisy Student's files) or 'image';
- an in-memory dataset (fashion_mnist, lfw_faces, digits): its arrays, read as training reads them;
- any other name: a prepared tfds dataset's split.

A shard is a fixed piece of the source in a fixed order: which examples it holds depends only
on the source and the shard count, never on the run, so it is the unit that is labelled,
written and, after a kill, skipped (finished) or redone whole. Each TFRecord file is a shard.

`shard(i)` is a tf.data.Dataset of examples {'id': int64, its position in the source (file
index * 2**32 + record index for TFRecord files); 'key': where it came from (the image file,
FILE[INDEX] for records, NAME:SPLIT[INDEX] for arrays); 'encoded': the image file's bytes (PNG
for in-memory arrays); and, for in-memory sources only, 'pixels': the uint8 image as training
holds it}.
"""
import hashlib
import os

import numpy as np
import tensorflow as tf
from etils import epath

from rs.data import records, sources
from rs.errors import UserError


class UnlabeledDataError(UserError, ValueError):
  """An unlabeled source that cannot be read, or holds no images."""


def _fingerprint(*parts) -> str:
  """A short hex digest of what identifies a source's contents."""
  digest = hashlib.sha256()
  for part in parts:
    digest.update(part if isinstance(part, bytes) else repr(part).encode())
  return digest.hexdigest()[:16]


def _ranges(count: int, num_shards: int) -> list[tuple[int, int]]:
  """`num_shards` contiguous [start, stop) ranges as even as possible (no empty one)."""
  num_shards = max(1, min(num_shards, count))
  bounds = [count * i // num_shards for i in range(num_shards + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


class FolderImages:
  """Every image file under a folder, recursively, by sorted relative path."""

  def __init__(self, root: str, split: str | None, num_shards: int):
    folder = epath.Path(root) / split if split else epath.Path(root)
    if not folder.is_dir():
      raise UnlabeledDataError(f'--data_dir={root}: {folder} is not a folder of images')
    self.description = f'the images under {folder}'
    self.paths = sorted(os.path.join(top, name) for top, _, names in tf.io.gfile.walk(str(folder))
                        for name in names if name.lower().endswith(records.IMAGE_EXTENSIONS))
    if not self.paths:
      raise UnlabeledDataError(f'no {"/".join(records.IMAGE_EXTENSIONS)} files under {folder}')
    self.ranges = _ranges(len(self.paths), num_shards)
    self.fingerprint = _fingerprint('folder', *(os.path.relpath(p, folder) for p in self.paths))

  def shard_size(self, index: int) -> int:
    start, stop = self.ranges[index]
    return stop - start

  def shard(self, index: int) -> tf.data.Dataset:
    start, stop = self.ranges[index]
    return tf.data.Dataset.from_tensor_slices(
        (tf.range(start, stop, dtype=tf.int64), self.paths[start:stop])).map(
            lambda i, path: {'id': i, 'key': path, 'encoded': tf.io.read_file(path)},
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class TFRecordImages:
  """TFRecord files of tf.train.Examples with an encoded image; one shard per file."""

  def __init__(self, pattern: str):
    self.files = sorted(tf.io.gfile.glob(pattern)) if pattern else []
    if not self.files:
      raise UnlabeledDataError(f'--data_dir={pattern!r} matches no TFRecord files: give a '
                               'glob such as gs://bucket/unlabeled/train-*')
    self.description = f'{len(self.files)} TFRecord files like {self.files[0]}'
    self.ranges = [None] * len(self.files)
    self.image_key = self._image_key(self.files[0])
    self.fingerprint = _fingerprint('tfrecord', *((os.path.basename(f), tf.io.gfile.stat(f).length)
                                                  for f in self.files))

  @staticmethod
  def _image_key(path: str) -> str:
    try:
      first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
      raise UnlabeledDataError(f'{path} is not a readable TFRecord file ({e.message})') from None
    if first is None:
      raise UnlabeledDataError(f'{path} holds no records')
    try:
      features = tf.train.Example.FromString(first.numpy()).features.feature
    except Exception:  # a protobuf DecodeError
      raise UnlabeledDataError(f'{path} does not hold tf.train.Examples') from None
    for key in ('image/encoded', 'image'):
      if key in features and features[key].bytes_list.value:
        return key
    raise UnlabeledDataError(f"{path}: its examples hold no 'image/encoded' or 'image' bytes "
                             f'(they have {sorted(features)})')

  def shard_size(self, index: int) -> None:
    return None  # known once read

  def shard(self, index: int) -> tf.data.Dataset:
    path = self.files[index]
    spec = {self.image_key: tf.io.FixedLenFeature([], tf.string)}

    def parse(i, serialized):
      return {'id': tf.cast(index, tf.int64) * 2**32 + i,
              'key': tf.strings.join([path, '[', tf.strings.as_string(i), ']']),
              'encoded': tf.io.parse_single_example(serialized, spec)[self.image_key]}

    return tf.data.TFRecordDataset(path).enumerate().map(parse)


class ArrayImages:
  """An in-memory dataset's split (rs.data.sources), as training holds it."""

  def __init__(self, name: str, split: str, data_dir: str | None, manual_dir: str | None,
               num_shards: int):
    data = sources.load_array_split(name, split, data_dir, manual_dir)
    self.images = data.images  # (N, H, W, C) uint8
    if not len(self.images):
      raise UnlabeledDataError(f'{name} {split} holds no images')
    self.prefix = f'{name}:{split}'
    self.description = f'{name} {split} ({len(self.images):,} images)'
    self.ranges = _ranges(len(self.images), num_shards)
    self.fingerprint = _fingerprint('arrays', name, split, self.images.shape,
                                    self.images.tobytes())

  def shard_size(self, index: int) -> int:
    start, stop = self.ranges[index]
    return stop - start

  def shard(self, index: int) -> tf.data.Dataset:
    start, stop = self.ranges[index]

    def example(i, pixels):
      return {'id': i, 'key': tf.strings.join([self.prefix, '[', tf.strings.as_string(i), ']']),
              'encoded': tf.io.encode_png(pixels), 'pixels': pixels}

    return tf.data.Dataset.from_tensor_slices(
        (tf.range(start, stop, dtype=tf.int64), self.images[start:stop])).map(
            example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class TfdsImages:
  """A prepared tfds dataset's split, read from its record files; shards are even pieces."""

  def __init__(self, name: str, split: str, data_dir: str | None, num_shards: int):
    try:
      self.source = records.TfdsRecords(name, data_dir)
      total = self.source.num_examples(split)
    except (FileNotFoundError, ValueError) as e:
      raise UnlabeledDataError(str(e)) from None
    if not total:
      raise UnlabeledDataError(f'{name} {split} holds no examples')
    self.split, self.num_shards = split, max(1, min(num_shards, total))
    sizes = [self.source.num_examples(split, i, self.num_shards) for i in range(self.num_shards)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    self.ranges = [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
    version = self.source.builder.info.version
    self.description = f'tfds {name}:{version} {split} ({total:,} images)'
    self.fingerprint = _fingerprint('tfds', name, str(version), split, sizes)

  def shard_size(self, index: int) -> int:
    start, stop = self.ranges[index]
    return stop - start

  def shard(self, index: int) -> tf.data.Dataset:
    start = self.ranges[index][0]
    ds = self.source.records(self.split, index, self.num_shards)
    return ds.enumerate(start).map(
        lambda i, r: {'id': i, 'key': r['path'], 'encoded': r['image']})


def open_unlabeled(name: str, split: str | None, data_dir: str | None,
                   manual_dir: str | None = None, num_shards: int = 16):
  """The unlabeled source `name` (see the module docstring), cut into about `num_shards`
  shards (TFRecord sources: one per file)."""
  if name == 'folder':
    if not data_dir:
      raise UnlabeledDataError('--data=folder needs --data_dir=FOLDER (images anywhere under '
                               'it, or under FOLDER/SPLIT with --split)')
    return FolderImages(data_dir, split, num_shards)
  if name == 'tfrecord':
    return TFRecordImages(data_dir)
  if not split:
    raise UnlabeledDataError(f'--data={name} needs --split (e.g. train, or train[6000:])')
  if name in sources.ARRAY_DATASETS:
    try:
      return ArrayImages(name, split, data_dir, manual_dir, num_shards)
    except (FileNotFoundError, ValueError) as e:
      raise UnlabeledDataError(str(e)) from None
  return TfdsImages(name, split, data_dir, num_shards)
