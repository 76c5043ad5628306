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

from rs.data import preprocess, sources, streaming

AUGMENTS = ('pad_crop', 'none')


@dataclasses.dataclass(eq=False)  # hashed by identity, for the epoch-order cache
class ArrayPipeline:
  """Train/eval batches from in-memory splits (datasets small enough to hold: Fashion-MNIST)."""
  train: sources.ArraySplit
  eval: sources.ArraySplit
  batch_size: int  # global
  eval_batch_size: int  # global
  seed: int
  augment: str = 'pad_crop'
  pad: int = 4
  prefetch: int = 2

  def __post_init__(self):
    if self.augment not in AUGMENTS:
      raise ValueError(f'data.augment={self.augment!r} for an in-memory dataset: use one of '
                       f'{AUGMENTS}')
    if self.batch_size > len(self.train):
      raise ValueError(f'batch_size={self.batch_size} exceeds the {len(self.train)} training '
                       'examples: lower --config.batch_size')

  @property
  def num_classes(self) -> int:
    return self.train.num_classes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.train.images.shape[1:]

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
                       pad=d.crop_padding, prefetch=d.prefetch_batches)


def create_eval_pipeline(config):
  """Only the evaluation side (nothing is prepared or downloaded)."""
  return create_pipeline(config, prepare=False)
