"""Streaming train/eval batches with tf.data: ImageNet-scale datasets and the official recipe.

Training batch `step` is a pure function of (seed, step) for a given number of hosts:
- epoch e reads this host's share of the split in the order `records` derives from
  (seed, e), and every host takes the same number of examples per epoch
  (floor(N / global batch) batches), so hosts stay in step;
- each image's crop, flip and RandAugment draw from a stateless seed made of (seed, its
  position in the global stream), so parallelism and prefetching never change the numbers;
- resuming at step s rebuilds epoch s // steps_per_epoch and skips the encoded records of its
  first batches (no decoding): no iterator state goes into checkpoints.
Evaluation reads each host's share in order and pads every host to the same number of
batches, masking the padding, so each example counts exactly once.
"""
import dataclasses
import functools
import math
import os
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

from rs.data import records, tf_preprocess

# tf.data.Dataset.range needs an end; no run reaches this many epochs.
_MAX_EPOCHS = 1 << 40


@dataclasses.dataclass
class StreamingPipeline:
  source: 'records.TfdsRecords | records.FolderRecords'
  train_split: str
  eval_split: str
  image_size: int
  batch_size: int  # global
  eval_batch_size: int  # global
  seed: int = 0
  randaugment_layers: int = 0
  randaugment_magnitude: float = 10
  randaugment_contrast_mean: str = 'official'
  resize_method: str = 'bicubic'
  eval_crop_padding: int = 32
  eval_crop_fraction: float | None = None
  shuffle_buffer: int = 16 * 1024
  prefetch: int = 2
  threads: int | None = None  # the private tf.data thread pool; None: this host's CPU count
  cache_decoded: bool = False  # keep decoded images in memory (small datasets only)
  host: int = dataclasses.field(default_factory=jax.process_index)
  hosts: int = dataclasses.field(default_factory=jax.process_count)

  def __post_init__(self):
    for name, size in (('batch_size', self.batch_size), ('eval_batch_size',
                                                         self.eval_batch_size)):
      if size % self.hosts:
        raise ValueError(f'{name}={size} does not divide over {self.hosts} hosts: set '
                         f'--config.{name} to a multiple of {self.hosts}')
    tf_preprocess.resize(tf.zeros([1, 1, 3]), 1, self.resize_method)  # validates the name
    self.num_eval_examples = self.source.num_examples(self.eval_split)

  @functools.cached_property
  def num_train_examples(self) -> int:
    """Read on first use: evaluation alone needs no training split."""
    n = self.source.num_examples(self.train_split)
    if self.batch_size > n:
      raise ValueError(f'batch_size={self.batch_size} exceeds the {n} examples of '
                       f'{self.train_split}: lower --config.batch_size')
    return n

  @property
  def num_classes(self) -> int:
    return self.source.num_classes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  @property
  def steps_per_epoch(self) -> float:
    return self.num_train_examples / self.batch_size

  @property
  def num_eval_batches(self) -> int:
    return math.ceil(self.num_eval_examples / self.eval_batch_size)

  def _options(self) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # A private pool sized to the host keeps tf.data off the threads that feed the devices;
    # one thread per op avoids oversubscription (as TPU hosts are usually configured).
    options.threading.private_threadpool_size = self.threads or os.cpu_count()
    options.threading.max_intra_op_parallelism = 1
    return options

  def _train_image(self, image, seed):
    return tf_preprocess.train_image(
        image, self.image_size, seed, self.randaugment_layers, self.randaugment_magnitude,
        self.resize_method, self.eval_crop_padding, self.randaugment_contrast_mean)

  def train_dataset(self, start_step: int) -> tf.data.Dataset:
    """This host's batches start_step, start_step + 1, ... (endless)."""
    local = self.batch_size // self.hosts
    full_batches = self.num_train_examples // self.batch_size
    start_epoch, offset = divmod(start_step, full_batches)
    seed = tf.constant(self.seed, tf.int64)
    if self.cache_decoded:
      decoded = self.source.records(self.train_split, self.host, self.hosts).map(
          lambda ex: {'image': tf_preprocess.decode_rgb(ex['image']), 'label': ex['label']},
          num_parallel_calls=tf.data.AUTOTUNE).cache()
      host_examples = self.source.num_examples(self.train_split, self.host, self.hosts)

    def epoch(e):
      order_seed = tf.stack([seed, -1 - e])  # negative: apart from the per-image seeds
      if self.cache_decoded:
        ds = decoded.shuffle(host_examples, seed=records._int64_hash(order_seed))
      else:
        ds = self.source.records(self.train_split, self.host, self.hosts, order_seed,
                                 self.shuffle_buffer)
      # Position in the global stream: step * batch + this host's row offset + row.
      first = e * full_batches * self.batch_size + self.host * local
      return ds.take(full_batches * local).enumerate().map(
          lambda i, ex: (first + (i // local) * self.batch_size + i % local, ex))

    def preprocess(position, example):
      image = self._train_image(example['image'], tf.stack([seed, position]))
      return {'image': image, 'label': example['label']}

    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch)
    ds = ds.skip(offset * local)  # within the first epoch: encoded records, not decoded
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=True).prefetch(self.prefetch)
    return ds.with_options(self._options())

  def train_iter(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    return self.train_dataset(start_step).as_numpy_iterator()

  def _eval_dataset(self, local: int) -> tf.data.Dataset:
    def preprocess(example):
      image = tf_preprocess.eval_image_from_bytes(example['image'], self.image_size,
                                                  self.eval_crop_padding,
                                                  self.eval_crop_fraction)
      return {'image': image, 'label': example['label']}

    return (self.source.records(self.eval_split, self.host, self.hosts)
            .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(local).prefetch(self.prefetch).with_options(self._options()))

  def eval_iter(self) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of every global eval batch; padding rows have mask 0."""
    local = self.eval_batch_size // self.hosts
    emitted = 0
    for batch in self._eval_dataset(local).as_numpy_iterator():
      yield _pad(batch, local)
      emitted += 1
    empty = {'image': np.zeros((0, *self.image_shape), np.float32),
             'label': np.zeros((0,), np.int32)}
    for _ in range(emitted, self.num_eval_batches):  # hosts with fewer examples
      yield _pad(empty, local)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch['label'])
  pad = lambda x: np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
  return {'image': pad(batch['image']), 'label': pad(batch['label']),
          'mask': (np.arange(size) < n).astype(np.float32)}


def create(config, prepare: bool = False) -> StreamingPipeline:
  """The streaming pipeline of a config (data.name: a tfds name, or 'folder')."""
  d = config.data
  return StreamingPipeline(
      records.open_source(d, prepare), d.train_split, d.eval_split, d.image_size,
      config.batch_size, config.eval_batch_size, config.seed,
      randaugment_layers=d.randaugment_layers, randaugment_magnitude=d.randaugment_magnitude,
      randaugment_contrast_mean=d.randaugment_contrast_mean, resize_method=d.resize_method,
      eval_crop_padding=d.eval_crop_padding, eval_crop_fraction=d.eval_crop_fraction,
      shuffle_buffer=d.shuffle_buffer, prefetch=d.prefetch_batches, threads=d.threads,
      cache_decoded=d.cache_decoded)
