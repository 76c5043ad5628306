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

Images that do not decode never stop an epoch. They are left out, logged once with their path
and counted (`StreamingPipeline.undecodable`); with bad_images='stop' the iterators raise
UndecodableImageError naming the file instead. Two guards (docs/data.md has what TF does with
each kind of bad file):
- a byte test in the map that reads each record (`tf_preprocess.well_formed`: signature and end
  marker, a few string ops) drops empty, non-image and cut-short files before records are
  numbered: they shift nothing. The few files it doubts are decoded whole, in Python;
- files that pass it and still fail to decode (a corrupt header or entropy data) are dropped by
  ignore_errors as they decode; the iterators see the gap in the record indices of each batch
  and name the missing files. Such a drop moves the rest of its epoch up by one image; the next
  epoch starts in place again, since every epoch takes the same number of images.
"""
import dataclasses
import functools
import logging
import math
import os
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

from rs.data import records, tf_preprocess
from rs.data.bad_images import (END as _END, BadImages, Gaps as _Gaps, UndecodableImageError,
                                 why_undecodable as _why_undecodable)

# tf.data.Dataset.range needs an end; no run reaches this many epochs.
_MAX_EPOCHS = 1 << 40


def _ok(record):
  return record['ok']  # only returns an input: tf.data short-circuits it (no function call)


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
  bad_images: str = 'skip'  # undecodable files: 'skip' (log, count) or 'stop' (raise)
  stream: int = 0  # another number gives other random draws from the same seed (rs.data.pseudo)
  channels: int = 3  # 1: images made grayscale (luma) after decoding as RGB
  host: int = dataclasses.field(default_factory=jax.process_index)
  hosts: int = dataclasses.field(default_factory=jax.process_count)

  def __post_init__(self):
    for name, size in (('batch_size', self.batch_size), ('eval_batch_size',
                                                         self.eval_batch_size)):
      if size % self.hosts:
        raise ValueError(f'{name}={size} does not divide over {self.hosts} hosts: set '
                         f'--config.{name} to a multiple of {self.hosts}')
    tf_preprocess.resize(tf.zeros([1, 1, 3]), 1, self.resize_method)  # validates the name
    self.undecodable = BadImages(self.bad_images)
    self.eval_skipped = 0  # undecodable images the last eval_iter left out (this host)
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
  def class_names(self) -> list[str] | None:
    return self.source.class_names

  native_size = None  # images of any size, center-cropped

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.channels)

  def _with_channels(self, image: tf.Tensor) -> tf.Tensor:
    """An RGB image with the pipeline's channels. Color and gray files mix in one folder:
    every file decodes as RGB (gray repeated), so the recipe (RandAugment's color ops
    included) sees RGB, then 1 channel takes its luma (tf_preprocess.grayscale), which gives
    a gray pixel back exactly."""
    return tf_preprocess.grayscale(image) if self.channels == 1 else image

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
    return self._with_channels(tf_preprocess.train_image(
        image, self.image_size, seed, self.randaugment_layers, self.randaugment_magnitude,
        self.resize_method, self.eval_crop_padding, self.randaugment_contrast_mean))

  def _order_seed(self, epoch) -> tf.Tensor:
    """The seed of epoch `epoch`'s record order (an int, or a tensor in graph)."""
    # Negative: apart from the per-image seeds (seed, position). Another stream: far apart.
    return tf.stack([tf.constant(self.seed, tf.int64),
                     tf.cast(-1 - epoch, tf.int64) - self.stream * (1 << 40)])

  def _records(self, split: str, order_seed=None) -> tf.data.Dataset:
    return self.source.records(split, self.host, self.hosts, order_seed, self.shuffle_buffer,
                               check=self.undecodable.check)

  def _why_undecodable(self, path: str) -> str:
    """Why the record of `path` failed to decode (a video pipeline asks its own decoder)."""
    return _why_undecodable(path)

  @property
  def eval_image_shape(self) -> tuple[int, ...]:
    """One evaluation example's input: an image (a video pipeline: its views of clips)."""
    return self.image_shape

  def _screened(self, records: tf.data.Dataset, ends: int | None = 1) -> tf.data.Dataset:
    """(index, record) of the records that pass the check, then `ends` end records (None:
    endless). Indices count the kept records only, so dropped ones shift nothing."""
    end = tf.data.Dataset.from_tensors({'image': tf.constant(_END['image']),
                                        'label': tf.constant(_END['label'], tf.int32),
                                        'path': tf.constant(_END['path']),
                                        'ok': tf.constant(_END['ok'])})
    return records.concatenate(end.repeat(ends)).filter(_ok).enumerate()

  def _report_missing(self, split: str, order_seed, passes: int, missing: np.ndarray) -> None:
    """Names the records at indices `missing` of a screened stream, which failed to decode."""
    names = self.source.names(split, self.host, self.hosts, order_seed)
    if names is None:
      self.undecodable.add_unnamed(split, len(missing))
      return
    kept = [name for name in names * passes if not self.undecodable.screened_out(name)]
    for index in missing:
      if index < len(kept):  # else an end record: they decode
        self.undecodable.add(kept[index], self._why_undecodable(kept[index]))

  def _too_few(self, split: str, per_epoch: int) -> UndecodableImageError:
    return self.undecodable.stop(
        f'too few images of {split} decode to fill an epoch ({per_epoch} per host from two '
        f'passes over its files; {self.undecodable.count} undecodable so far: see the log)')

  def _cache(self, per_epoch: int) -> tf.data.Dataset:
    """The decodable training images, decoded, kept in memory after the first pass."""
    def decode(index, example):
      return {'image': tf_preprocess.decode_rgb(example['image']), 'label': example['label'],
              'index': index}

    def report(expected, index, end, survivors):
      if index > expected:
        self._report_missing(self.train_split, None, 1, np.arange(int(expected), int(index)))
      if bool(end) and 2 * int(survivors) < per_epoch:
        raise self._too_few(self.train_split, per_epoch)
      return True

    def gaps(state, example):  # one pass: a scan per image costs nothing later
      expected, survivors = state
      index, end = example['index'], example['label'] < 0
      reported = tf.cond(tf.logical_or(index > expected, end), lambda: tf.reshape(
          tf.py_function(report, [expected, index, end, survivors], tf.bool), []),
                         lambda: tf.constant(True))
      return (index + 1, survivors + tf.cast(reported, tf.int64)), example

    ds = self._screened(self._records(self.train_split)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    ds = ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), gaps)
    return ds.filter(lambda example: example['label'] >= 0).cache()

  def train_dataset(self, start_step: int) -> tf.data.Dataset:
    """This host's batches start_step, start_step + 1, ... (endless), with each row's 'index'
    in its epoch's screened records (train_iter checks them; label -1: an end record)."""
    local = self.batch_size // self.hosts
    full_batches = self.num_train_examples // self.batch_size
    per_epoch = full_batches * local  # this host's examples in each epoch
    start_epoch, offset = divmod(start_step, full_batches)
    seed = tf.constant(self.seed, tf.int64)
    if self.cache_decoded:
      decoded = self._cache(per_epoch)
      host_examples = self.source.num_examples(self.train_split, self.host, self.hosts)

    def preprocess(e, i, example):
      # Position in the global stream: step * batch + this host's row offset + row.
      position = (e * full_batches * self.batch_size + self.host * local +
                  (i // local) * self.batch_size + i % local + self.stream * (1 << 62))
      image = self._train_image(example['image'], tf.stack([seed, position]))
      return {'image': image, 'label': example['label'], 'index': i}

    def epoch(e):
      order_seed = self._order_seed(e)
      # Resuming mid-epoch skips encoded records (or cached images): no decoding.
      skip = tf.where(tf.equal(e, start_epoch), tf.constant(offset * local, tf.int64),
                      tf.constant(0, tf.int64))
      if self.cache_decoded:
        ds = decoded.shuffle(host_examples, seed=records.seed_hash(order_seed)).repeat(2)
        return ds.take(per_epoch).enumerate().skip(skip).map(
            lambda i, ex: preprocess(e, i, ex), num_parallel_calls=tf.data.AUTOTUNE)
      # Every epoch takes per_epoch images, so that step s is always in epoch s // full_batches:
      # a second pass over the records tops it up when more files fail than the floor leaves
      # out, and end records when even that is not enough (train_iter then stops).
      ds = self._screened(self._records(self.train_split, order_seed).repeat(2), ends=None)
      ds = ds.skip(skip).map(lambda i, ex: preprocess(e, i, ex),
                             num_parallel_calls=tf.data.AUTOTUNE)
      return ds.ignore_errors().take(per_epoch - skip)

    ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch)
    ds = ds.batch(local, drop_remainder=True).prefetch(self.prefetch)
    return ds.with_options(self._options())

  def _batches(self, ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """`ds` as numpy, with an error raised in tf.data for a bad file said plainly."""
    iterator = ds.as_numpy_iterator()
    while True:
      try:
        batch = next(iterator)
      except StopIteration:
        return
      except tf.errors.OpError:
        if self.undecodable.stop_error is not None:
          raise self.undecodable.stop_error from None
        raise
      yield batch

  def _raise_if_stopped(self) -> None:
    if self.undecodable.stop_error is not None:
      raise self.undecodable.stop_error

  def train_iter(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """train_dataset's batches, less their 'index': a gap in it names undecodable files."""
    local = self.batch_size // self.hosts
    full_batches = self.num_train_examples // self.batch_size
    epoch = gaps = None
    for step, batch in enumerate(self._batches(self.train_dataset(start_step)), start_step):
      if step // full_batches != epoch:
        epoch = step // full_batches
        gaps = _Gaps(step % full_batches * local)  # the resumed epoch starts mid-way
      missing = gaps.missing(batch.pop('index'))
      if len(missing):
        self._report_missing(self.train_split, self._order_seed(epoch), 2, missing)
      if (batch['label'] < 0).any():
        raise self._too_few(self.train_split, full_batches * local)
      self._raise_if_stopped()
      yield batch

  def _eval_example(self, encoded: tf.Tensor) -> tf.Tensor:
    return self._with_channels(tf_preprocess.eval_image_from_bytes(
        encoded, self.image_size, self.eval_crop_padding, self.eval_crop_fraction))

  def _eval_dataset(self, local: int) -> tf.data.Dataset:
    def preprocess(index, example):
      return {'image': self._eval_example(example['image']), 'label': example['label'],
              'index': index}

    return (self._screened(self._records(self.eval_split))
            .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
            .batch(local).prefetch(self.prefetch).with_options(self._options()))

  def eval_iter(self) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of every global eval batch; padding rows have mask 0.

    Undecodable images are left out, each decodable one counts once: `eval_skipped` says how
    many were left out on this host, and the log names them."""
    local = self.eval_batch_size // self.hosts
    emitted = examples = 0
    gaps = _Gaps()
    for batch in self._batches(self._eval_dataset(local)):
      missing = gaps.missing(batch.pop('index'))
      if len(missing):
        self._report_missing(self.eval_split, None, 1, missing)
      self._raise_if_stopped()
      kept = batch['label'] >= 0  # not the end record
      if not kept.any():
        continue
      yield _pad({k: v[kept] for k, v in batch.items()}, local)
      emitted += 1
      examples += int(kept.sum())
    empty = {'image': np.zeros((0, *self.eval_image_shape), np.float32),
             'label': np.zeros((0,), np.int32)}
    for _ in range(emitted, self.num_eval_batches):  # hosts with fewer examples
      yield _pad(empty, local)
    self.eval_skipped = self.source.num_examples(self.eval_split, self.host, self.hosts) - examples
    if self.eval_skipped:
      logging.warning('Evaluation left out %d undecodable images of %s (%d evaluated on this '
                      'host).', self.eval_skipped, self.eval_split, examples)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch['label'])
  pad = lambda x: np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
  return {'image': pad(batch['image']), 'label': pad(batch['label']),
          'mask': (np.arange(size) < n).astype(np.float32)}


def create(config, prepare: bool = False, source=None, split: str | None = None,
           batch_size: int | None = None, stream: int = 0) -> StreamingPipeline:
  """The streaming pipeline of a config (data.name: a tfds name, or 'folder'); or, with
  `source`, `split` and `batch_size`, another stream with the config's recipe (the
  pseudo-labeled images, rs.data.pseudo)."""
  d = config.data
  if source is None:
    source = records.open_source(d.name, d.data_dir, d.manual_dir, d.train_split, prepare)
  return StreamingPipeline(
      source, split or d.train_split, split or d.eval_split, d.image_size,
      batch_size or config.batch_size, batch_size or config.eval_batch_size, config.seed,
      randaugment_layers=d.randaugment_layers, randaugment_magnitude=d.randaugment_magnitude,
      randaugment_contrast_mean=d.randaugment_contrast_mean, resize_method=d.resize_method,
      eval_crop_padding=d.eval_crop_padding, eval_crop_fraction=d.eval_crop_fraction,
      shuffle_buffer=d.shuffle_buffer, prefetch=d.prefetch_batches, threads=d.threads,
      cache_decoded=d.cache_decoded, bad_images=d.get('bad_images', 'skip'), stream=stream,
      channels=d.get('channels') or 3)
