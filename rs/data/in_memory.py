"""The in-memory pipeline: a small dataset (Fashion-MNIST) held as numpy arrays, its batches
built on the host, each a pure function of (seed, step).

The small-image recipe: random shifts and flips ('pad_crop'), then RandAugment when
data.randaugment_layers > 0 (the streamed pipeline's ops, rs.data.randaugment, one stateless
seed per image; a gray image is augmented as RGB and turned back by the same luma rule).

A resumed run therefore sees exactly the batches an uninterrupted run would have, with no
iterator state in the checkpoint. Each host builds only its own rows of a global batch;
rs.sharding.to_global assembles them. (Large datasets stream: rs.data.streaming.)
"""
import concurrent.futures
import dataclasses
import functools
from typing import Iterator

import jax
import numpy as np

from rs.data import preprocess, sources

# data.augment for in-memory datasets: random shifts and flips, or none.
AUGMENTS = ('pad_crop', 'none')


@dataclasses.dataclass(eq=False)  # hashed by identity, for the epoch-order cache
class InMemoryPipeline:
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
  stream: int = 0  # another number gives other random draws from the same seed (rs.data.pseudo)
  randaugment_layers: int = 0
  randaugment_magnitude: float = 10
  randaugment_contrast_mean: str = 'official'

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
    return np.random.default_rng(self._key(epoch)).permutation(len(self.train))

  def _key(self, *parts: int) -> list[int]:
    """An RNG key: (seed, *parts), and the stream where it is not 0."""
    return [self.seed, *parts] + ([self.stream] if self.stream else [])

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
      images = preprocess.pad_crop_flip(images, np.random.default_rng(self._key(step, 1)),
                                        self.pad)
    images = self._local_rows(images)
    if self.randaugment_layers:
      # Seeds for the global batch, sliced like its rows: each image's ops do not depend on
      # the host count either.
      seeds = np.random.default_rng(self._key(step, 2)).integers(0, 2**31, (len(rows), 2))
      images = randaugment_batch(images, self._local_rows(seeds), self.randaugment_layers,
                                 self.randaugment_magnitude, self.randaugment_contrast_mean)
    return {'image': images, 'label': self._local_rows(self.train.labels[rows])}

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


def recipe(data) -> dict:
  """The training augmentation a config's `data` asks of an in-memory pipeline."""
  return dict(augment=data.augment, pad=data.crop_padding, prefetch=data.prefetch_batches,
              randaugment_layers=data.randaugment_layers,
              randaugment_magnitude=data.randaugment_magnitude,
              randaugment_contrast_mean=data.randaugment_contrast_mean)


def randaugment_batch(images: np.ndarray, seeds: np.ndarray, layers: int, magnitude: float,
                      contrast_mean: str = 'official') -> np.ndarray:
  """uint8 (n, S, S, 1 or 3) -> RandAugment of each image with its own (2,) seed, as the
  streamed pipeline draws them (rs.data.randaugment.distort); one graph per setting."""
  return _randaugment_fn(layers, float(magnitude), contrast_mean)(images, seeds).numpy()


@functools.lru_cache(maxsize=None)
def _randaugment_fn(layers: int, magnitude: float, contrast_mean: str):
  import tensorflow as tf  # only runs that ask for RandAugment pay for TensorFlow here
  from rs.data import randaugment, tf_preprocess

  def one(args):
    image, seed = args
    gray = image.shape[-1] == 1
    rgb = tf.tile(image, [1, 1, 3]) if gray else image
    out = randaugment.distort(rgb, layers, magnitude, seed, contrast_mean=contrast_mean)
    return tf_preprocess.grayscale(out) if gray else out

  @tf.function  # traced once per batch shape: a run has one or two
  def batch(images, seeds):
    return tf.map_fn(one, (tf.convert_to_tensor(images), tf.convert_to_tensor(seeds)),
                     fn_output_signature=tf.uint8, parallel_iterations=16)

  return batch
