"""Batches for training and evaluation, each a pure function of (seed, step).

A resumed run therefore sees exactly the batches an uninterrupted run would have, with no
iterator state in the checkpoint. Each host builds only its own rows of a global batch;
rs.sharding.to_global assembles them.
"""
import concurrent.futures
import dataclasses
import functools
from typing import Iterator

import jax
import numpy as np
from etils import epath

from rs.data import preprocess, records, sources, streaming
from rs.data.eval_input import EvalInput

AUGMENTS = ('pad_crop', 'none')


@dataclasses.dataclass(eq=False)  # hashed by identity, for the epoch-order cache
class ArrayPipeline:
  """Train/eval batches from in-memory splits (datasets small enough to hold: Fashion-MNIST).
  `train` is None for evaluation alone."""
  train: sources.ArraySplit | None
  eval: sources.ArraySplit
  batch_size: int  # global
  eval_batch_size: int  # global
  seed: int
  augment: str = 'pad_crop'
  pad: int = 4
  prefetch: int = 2
  native_size: int | None = None  # the side of the dataset's own images, before resizing

  def __post_init__(self):
    if self.augment not in AUGMENTS:
      raise ValueError(f'data.augment={self.augment!r} for an in-memory dataset: use one of '
                       f'{AUGMENTS}')
    if self.train is not None and self.batch_size > len(self.train):
      raise ValueError(f'batch_size={self.batch_size} exceeds the {len(self.train)} training '
                       'examples: lower --config.batch_size')

  eval_skipped = 0  # undecodable images left out of evaluation: none in memory

  @property
  def num_classes(self) -> int:
    return (self.train or self.eval).num_classes

  @property
  def class_names(self) -> tuple[str, ...] | None:
    return (self.train or self.eval).class_names

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.eval.images.shape[1:]

  @property
  def steps_per_epoch(self) -> float:
    return len(self.train) / self.batch_size

  def _local_rows(self, global_rows: np.ndarray) -> np.ndarray:
    """This host's contiguous share of a global batch's rows."""
    n = len(global_rows) // jax.process_count()
    return global_rows[jax.process_index() * n:(jax.process_index() + 1) * n]

  @functools.lru_cache(maxsize=2)
  def _epoch_order(self, epoch: int) -> np.ndarray:
    """The permutation of the training set for `epoch`, seeded by (seed, epoch)."""
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.train))

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's rows of the global training batch number `step`.

    Epoch e is a permutation seeded by (seed, e); an epoch's last partial batch is skipped.
    """
    full_batches = len(self.train) // self.batch_size
    epoch, index = divmod(step, full_batches)
    rows = self._epoch_order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
    images = self.train.images[rows]
    if self.augment == 'pad_crop':
      # Augment the global batch, then slice: the result does not depend on the host count.
      images = preprocess.pad_crop_flip(images, np.random.default_rng([self.seed, step, 1]),
                                        self.pad)
    return {'image': self._local_rows(images), 'label': self._local_rows(self.train.labels[rows])}

  def train_iter(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches start_step, start_step+1, ... built `prefetch` ahead in a worker thread."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='rs-input') as pool:
      pending = [pool.submit(self.train_batch, s)
                 for s in range(start_step, start_step + self.prefetch)]
      step = start_step + self.prefetch
      while True:
        batch = pending.pop(0).result()
        pending.append(pool.submit(self.train_batch, step))
        step += 1
        yield batch

  def eval_iter(self) -> Iterator[dict[str, np.ndarray]]:
    """The whole eval split in order, once; the last batch padded and masked (mask 0)."""
    n = len(self.eval)
    for start in range(0, n, self.eval_batch_size):
      rows = np.arange(start, start + self.eval_batch_size)
      mask = rows < n
      rows = np.where(mask, rows, 0)
      batch = {'image': self.eval.images[rows], 'label': self.eval.labels[rows],
               'mask': mask.astype(np.float32)}
      yield {k: self._local_rows(v) for k, v in batch.items()}

  @property
  def num_eval_batches(self) -> int:
    return -(-len(self.eval) // self.eval_batch_size)


def create_pipeline(config, prepare: bool = True):
  """The input pipeline the config asks for.

  data.augment 'pad_crop' is the small-image recipe: the whole dataset in memory (Fashion-MNIST,
  CIFAR-sized tfds sets). 'inception_crop' streams with tf.data (rs.data.streaming): ImageNet
  and any tfds or class-folder dataset, with the official preprocessing and RandAugment.
  With `prepare`, an unprepared tfds dataset is prepared first (single host only).
  """
  d = config.data
  if d.augment == 'inception_crop':
    return streaming.create(config, prepare=prepare and jax.process_count() == 1)
  if d.augment != 'pad_crop':
    raise ValueError(f"data.augment={d.augment!r}: use 'inception_crop' (streamed, ImageNet "
                     "recipe) or 'pad_crop' (in-memory small images)")
  train = sources.load_array_split(d.name, d.train_split, d.data_dir, d.manual_dir)
  evaluation = sources.load_array_split(d.name, d.eval_split, d.data_dir, d.manual_dir)
  resize = lambda s: dataclasses.replace(s, images=preprocess.resize(s.images, d.image_size))
  return ArrayPipeline(resize(train), resize(evaluation), config.batch_size,
                       config.eval_batch_size, config.seed, augment=d.augment,
                       pad=d.crop_padding, prefetch=d.prefetch_batches,
                       native_size=_square_side(train.images))


def _square_side(images) -> int | None:
  return images.shape[1] if images.shape[1] == images.shape[2] else None


def create_eval_pipeline(config):
  """Only the evaluation side, as the config's training evaluates (nothing is prepared or
  downloaded)."""
  d = config.data
  return eval_pipeline(d.name, d.eval_split, EvalInput.from_config(config, len(d.mean)),
                       config.eval_batch_size, d.data_dir, d.manual_dir,
                       train_split=d.train_split, bad_images=d.get('bad_images', 'skip'))


def eval_pipeline(name: str, split: str, spec: EvalInput, batch_size: int,
                  data_dir: str | None = None, manual_dir: str | None = None,
                  train_split: str = 'train', bad_images: str = 'skip'):
  """Evaluation batches of dataset `name`'s `split`, prepared as `spec` says (a weights
  directory's model.json, or a config's evaluation): 'resize' holds the split in memory,
  'center_crop' streams it. A class-folder dataset numbers its classes by the folders of
  `train_split` (the training run's order) where that folder exists."""
  if spec.method == 'resize':
    split_data = sources.load_array_split(name, split, data_dir, manual_dir)
    native_size = _square_side(split_data.images)
    split_data = dataclasses.replace(
        split_data, images=preprocess.resize(split_data.images, spec.image_size))
    return ArrayPipeline(None, split_data, batch_size, batch_size, seed=0, augment='none',
                         native_size=native_size)
  if name == 'folder':
    classes_from = train_split.split('[')[0]
    if not data_dir or not epath.Path(data_dir, classes_from).is_dir():
      classes_from = split.split('[')[0]
    source = records.FolderRecords(data_dir, classes_from)
  else:
    source = records.TfdsRecords(name, data_dir, manual_dir)
  return streaming.StreamingPipeline(
      source, split, split, spec.image_size, batch_size, batch_size,
      eval_crop_padding=spec.crop_padding, eval_crop_fraction=spec.crop_fraction,
      bad_images=bad_images)
