"""Streaming input from a prepared tfds dataset (ImageNet and other image-folder-sized sets).

This version streams the evaluation split with the official preprocessing; the training side
(inception crop, RandAugment, deterministic resumable order) is issue 4. Each host reads its
own share of the split (tfds.split_for_jax_process) and pads it to the same number of
batches as every other host, masking the padding, so no example is dropped or counted twice.
"""
import dataclasses
import math
from typing import Iterator

import jax
import numpy as np

from rs.data import tf_preprocess


def _prepare_hint(name: str) -> str:
  if name.startswith('imagenet2012'):
    return ('download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org '
            'into a folder, then `tfds build imagenet2012 --manual_dir=FOLDER '
            '--data_dir=DATA_DIR` and pass --config.data.data_dir=DATA_DIR')
  return f'`tfds build {name} --data_dir=DATA_DIR` and pass --config.data.data_dir=DATA_DIR'


def open_builder(name: str, data_dir: str | None, split: str):
  """The prepared tfds builder, or a one-line error saying where it looked and what to do."""
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # unknown name, unreadable data_dir
    raise FileNotFoundError(f'tfds dataset {name!r} unavailable in '
                            f'{data_dir or "the default data_dir"} ({e}); {_prepare_hint(name)}'
                            ) from None
  if not builder.is_prepared():
    raise FileNotFoundError(f'no prepared {name} in {builder.data_dir}; {_prepare_hint(name)}')
  base = split.split('[')[0]
  if base not in builder.info.splits:
    raise ValueError(f'{name} has splits {sorted(builder.info.splits)}, not {base!r}')
  return builder


@dataclasses.dataclass
class TfdsEvalPipeline:
  name: str
  split: str
  data_dir: str | None
  image_size: int
  eval_batch_size: int  # global
  crop_padding: int = 32
  crop_fraction: float | None = None

  def __post_init__(self):
    self._builder = open_builder(self.name, self.data_dir, self.split)

  @property
  def num_classes(self) -> int:
    return self._builder.info.features['label'].num_classes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  @property
  def num_eval_examples(self) -> int:
    return self._builder.info.splits[self.split].num_examples

  @property
  def num_eval_batches(self) -> int:
    return math.ceil(self.num_eval_examples / self.eval_batch_size)

  def _dataset(self, local_batch: int):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    split = tfds.split_for_jax_process(self.split, drop_remainder=False)
    ds = self._builder.as_dataset(split=split, shuffle_files=False,
                                  decoders={'image': tfds.decode.SkipDecoding()})

    def preprocess(example):
      image = tf_preprocess.eval_image_from_bytes(example['image'], self.image_size,
                                                  self.crop_padding, self.crop_fraction)
      return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

    return (ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(local_batch).prefetch(tf.data.AUTOTUNE))

  def eval_iter(self) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of every global eval batch; padding rows have mask 0."""
    local_batch = self.eval_batch_size // jax.process_count()
    emitted = 0
    for batch in self._dataset(local_batch).as_numpy_iterator():
      yield _pad(batch, local_batch)
      emitted += 1
    empty = {'image': np.zeros((0, *self.image_shape), np.float32),
             'label': np.zeros((0,), np.int32)}
    for _ in range(emitted, self.num_eval_batches):  # hosts with fewer examples
      yield _pad(empty, local_batch)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch['label'])
  pad = lambda x: np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
  return {'image': pad(batch['image']), 'label': pad(batch['label']),
          'mask': (np.arange(size) < n).astype(np.float32)}
