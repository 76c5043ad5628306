"""Training and evaluation input: which pipeline a config (or a weights directory's
evaluation input) gets, and what every pipeline offers the trainer (`Pipeline`).

Two pipelines, both giving batches that are pure functions of (seed, step), so a resumed run
sees exactly the batches an uninterrupted one would:
- rs.data.in_memory.InMemoryPipeline: small datasets held as arrays (data.augment 'pad_crop'
  or 'none', RandAugment optional; Fashion-MNIST, the embedded default);
- rs.data.streaming.StreamingPipeline: tf.data streams of encoded images, ImageNet's recipe
  (data.augment 'inception_crop'; tfds datasets and class folders).
"""
import dataclasses
import functools
from typing import Iterator, Protocol

import jax
import numpy as np

from rs import memory
from rs.data import in_memory, preprocess, pseudo, records, sources, streaming
from rs.data.eval_input import EvalInput

# data.augment: the streamed ImageNet recipe, or an in-memory one.
AUGMENTS = ('inception_crop', *in_memory.AUGMENTS)


class Pipeline(Protocol):
  """What the trainer, rs.evaluate and the tools read from a pipeline."""
  num_classes: int
  class_names: 'list[str] | tuple[str, ...] | None'  # by label index, where known
  image_shape: tuple[int, int, int]  # of a batch's images, (S, S, channels)
  native_size: int | None  # in-memory datasets: the side of their own images
  steps_per_epoch: float
  num_eval_batches: int
  eval_skipped: int  # undecodable images the last evaluation left out (this host)

  def train_iter(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of training batches start_step, start_step + 1, ..."""

  def eval_iter(self) -> Iterator[dict[str, np.ndarray]]:
    """The eval split once, in order; the last batch padded, with a 'mask' of real rows."""


def create_pipeline(config, prepare: bool = True, local_devices: int | None = None) -> Pipeline:
  """The input pipeline the config asks for.

  data.augment 'pad_crop' is the small-image recipe: the whole dataset in memory (Fashion-MNIST,
  CIFAR-sized tfds sets). 'inception_crop' streams with tf.data (rs.data.streaming): ImageNet
  and any tfds or class-folder dataset, with the official preprocessing and RandAugment.
  With `prepare`, an unprepared tfds dataset is prepared first (single host only). With
  data.pseudo.ratio > 0, pseudo-labeled images join every training batch (rs.data.pseudo),
  split over this host's `local_devices` (default: all of its devices).
  """
  labeled = _labeled_pipeline(config, prepare)
  rows = pseudo.pseudo_rows(config)
  if not rows:
    return labeled
  mix = (pseudo.mixed_in_memory if isinstance(labeled, in_memory.InMemoryPipeline)
         else pseudo.mixed_streamed)
  return mix(labeled, config, local_devices or jax.local_device_count(), rows)


def _labeled_pipeline(config, prepare: bool) -> Pipeline:
  d = config.data
  if d.get('frames'):  # clips of videos (rs.data.video_pipeline)
    from rs.data import video_pipeline
    return video_pipeline.create(config, prepare=prepare and jax.process_count() == 1)
  if d.augment == 'inception_crop':
    return streaming.create(config, prepare=prepare and jax.process_count() == 1)
  if d.augment not in in_memory.AUGMENTS:
    raise ValueError(f"data.augment={d.augment!r}: use 'inception_crop' (streamed, ImageNet "
                     "recipe), 'pad_crop' or 'none' (in-memory small images)")
  channels = d.get('channels')
  train, native_size = _in_memory_split(d.name, d.train_split, d.image_size, d.data_dir,
                                        d.manual_dir, channels)
  evaluation, _ = _in_memory_split(d.name, d.eval_split, d.image_size, d.data_dir, d.manual_dir,
                                   channels)
  return in_memory.InMemoryPipeline(train, evaluation, config.batch_size, config.eval_batch_size,
                                    config.seed, native_size=native_size, **in_memory.recipe(d))


@functools.lru_cache(maxsize=4)
def _in_memory_split(name: str, split: str, image_size: int, data_dir, manual_dir,
                     channels: int | None = None):
  """(the split held in memory, resized to image_size, with `channels` channels (None: its
  own); the side of its own images, if square).

  Kept for the process's later runs: a notebook, a sweep or a test session that trains several
  runs on one dataset reads and resizes it once (Fashion-MNIST's 60,000 images take ~3.5 s on
  a 2-core CPU). The arrays are read-only, so no run can change what another one reads.
  """
  data = sources.load_array_split(name, split, data_dir, manual_dir)
  side = data.images.shape[1] if data.images.shape[1] == data.images.shape[2] else None
  held = len(data.images) * image_size**2 * (channels or data.images.shape[-1])
  host = memory.host_memory_bytes()
  if held > host // 4:  # the train split, the eval split and the batches being built
    raise ValueError(f'data.image_size={image_size}: the {split} split of {name} held in memory '
                     f'at that size takes {held / memory.GIB:.1f} GiB of the host\'s '
                     f'{host / memory.GIB:.1f}; lower --config.data.image_size')
  data = dataclasses.replace(data, images=preprocess.with_channels(
      preprocess.resize(data.images, image_size), channels))
  data.images.flags.writeable = data.labels.flags.writeable = False
  return data, side


def create_eval_pipeline(config) -> Pipeline:
  """Only the evaluation side, as the config's training evaluates (nothing is prepared or
  downloaded)."""
  d = config.data
  return eval_pipeline(d.name, d.eval_split, EvalInput.from_config(config, len(d.mean)),
                       config.eval_batch_size, d.data_dir, d.manual_dir,
                       train_split=d.train_split, bad_images=d.get('bad_images', 'skip'))


def eval_pipeline(name: str, split: str, spec: EvalInput, batch_size: int,
                  data_dir: str | None = None, manual_dir: str | None = None,
                  train_split: str = 'train', bad_images: str = 'skip',
                  class_names=None) -> Pipeline:
  """Evaluation batches of dataset `name`'s `split`, prepared as `spec` says (a weights
  directory's model.json, or a config's evaluation): 'resize' holds the split in memory,
  'center_crop' streams it. A class-folder dataset numbers its classes as `class_names` lists
  them (a weights directory's), else by the folders of `train_split` (as training did)."""
  if spec.method == 'clips':  # a video network's views of clips
    from rs.data import video_pipeline
    return video_pipeline.for_evaluation(name, split, spec, batch_size, data_dir, manual_dir,
                                         train_split, bad_images, class_names)
  if spec.method == 'resize':
    data, native_size = _in_memory_split(name, split, spec.image_size, data_dir, manual_dir,
                                         spec.channels)
    return in_memory.InMemoryPipeline(None, data, batch_size, batch_size, seed=0,
                                      augment='none', native_size=native_size)
  source = records.open_source(name, data_dir, manual_dir, train_split, class_names=class_names)
  return streaming.StreamingPipeline(
      source, split, split, spec.image_size, batch_size, batch_size,
      eval_crop_padding=spec.crop_padding, eval_crop_fraction=spec.crop_fraction,
      bad_images=bad_images, channels=spec.channels)
