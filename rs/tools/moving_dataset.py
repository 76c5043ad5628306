"""Moving Fashion-MNIST as a video dataset, in each form rs reads videos from.

Each clip moves one real Fashion-MNIST image across a canvas (a torus) in one of 8 directions;
the class is the direction (rs/data/moving.py), so one frame says nothing of it. Splits:
'train' from the first 54,000 training images, 'minival' from the last 6,000 (held out for
choices), 'test' from the 10,000 test images: no image appears in two splits.

  python -m rs.tools.moving_dataset --out=/tmp/moving --train=8000 --minival=1000 --test=2000

Formats: 'files' (ROOT/SPLIT/CLASS/NNNNN.mkv, lossless FFV1), 'frames' (ROOT/SPLIT/CLASS/NNNNN/
frame_K.png), 'tfds' (a prepared tfds dataset 'moving_fashion_mnist' with a Video feature, in
the data_dir --out). Train on it with --config.data.name=folder --config.data.data_dir=ROOT
(or data.name=moving_fashion_mnist, data.data_dir=OUT), data.frames and data.flip=False:
a mirror would change the direction.
"""
import io
import os

import numpy as np
from absl import flags

from rs import cli
from rs.data import moving, sources, video_files
from rs.errors import UserError

FORMATS = ('files', 'frames', 'tfds')
MINIVAL = 6000  # the last training images: the minival split's sources
TFDS_NAME = 'moving_fashion_mnist'


def split_images(split: str) -> np.ndarray:
  """The [N, 28, 28] Fashion-MNIST images a split's clips are made from."""
  images = sources.load_array_split('fashion_mnist',
                                    'test' if split == 'test' else 'train').images[..., 0]
  if split == 'test':
    return images
  return images[-MINIVAL:] if split == 'minival' else images[:-MINIVAL]


def make_split(split: str, count: int, frames: int, canvas: int, speed: int, seed: int):
  """(clips uint8 [count, frames, canvas, canvas, 1], labels): a pure function of the args."""
  split_seed = seed * 3 + ('train', 'minival', 'test').index(split)
  return moving.make(split_images(split), count, frames, canvas, speed, seed=split_seed)


def encode_png(frame: np.ndarray) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(frame[..., 0]).save(buffer, format='PNG')
  return buffer.getvalue()


def write_folder(root: str, split: str, clips, labels, as_frames: bool) -> None:
  """ROOT/SPLIT/CLASS/NNNNN.mkv, or NNNNN/frame_K.png per frame; every class folder made."""
  for name in moving.CLASS_NAMES:
    os.makedirs(os.path.join(root, split, name), exist_ok=True)
  for i, (clip, label) in enumerate(zip(clips, labels)):
    path = os.path.join(root, split, moving.CLASS_NAMES[label], f'{i:05d}')
    if as_frames:
      os.makedirs(path, exist_ok=True)
      for t, frame in enumerate(clip):
        with open(os.path.join(path, f'frame_{t}.png'), 'wb') as f:
          f.write(encode_png(frame))
    else:
      with open(path + '.mkv', 'wb') as f:
        f.write(video_files.encode(clip))


def write_tfds(data_dir: str, splits: dict) -> None:
  """A prepared tfds dataset with {split: (clips, labels)} in `data_dir` (PNG frames)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  shape = next(iter(splits.values()))[0].shape[1:]
  features = tfds.features.FeaturesDict({
      'video': tfds.features.Video(shape=(None, *shape[1:]), encoding_format='png'),
      'label': tfds.features.ClassLabel(names=list(moving.CLASS_NAMES))})
  signature = {'video': tf.TensorSpec((None, *shape[1:]), tf.uint8),
               'label': tf.TensorSpec((), tf.int64)}

  def dataset(clips, labels):
    return tf.data.Dataset.from_generator(
        lambda: ({'video': c, 'label': int(l)} for c, l in zip(clips, labels)),
        output_signature=signature)

  tfds.dataset_builders.store_as_tfds_dataset(
      name=TFDS_NAME, version='1.0.0', features=features,
      split_datasets={s: dataset(*data) for s, data in splits.items()}, data_dir=data_dir,
      disable_shuffling=True)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.canvas < 28:
    raise UserError(f'--canvas={f.canvas}: at least 28, the images\' size')
  counts = {'train': f.train, 'minival': f.minival, 'test': f.test}
  splits = {split: make_split(split, n, f.frames, f.canvas, f.speed, f.seed)
            for split, n in counts.items() if n}
  if f.format == 'tfds':
    write_tfds(f.out, splits)
  else:
    for split, (clips, labels) in splits.items():
      write_folder(f.out, split, clips, labels, as_frames=f.format == 'frames')
  print(', '.join(f'{len(labels)} {split}' for split, (_, labels) in splits.items()) +
        f' clips of {f.frames} frames, {f.canvas}x{f.canvas} ({f.format}) in {f.out}')


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  flags.DEFINE_string('out', None, 'Output folder (the data_dir for --format=tfds).',
                      required=True)
  flags.DEFINE_enum('format', 'files', FORMATS, 'Video files, folders of frames, or tfds.')
  flags.DEFINE_integer('train', 8000, 'Training clips.', lower_bound=0)
  flags.DEFINE_integer('minival', 1000, 'Held-out clips from held-out images.', lower_bound=0)
  flags.DEFINE_integer('test', 2000, 'Test clips from the test images.', lower_bound=0)
  flags.DEFINE_integer('frames', 16, 'Frames per clip.', lower_bound=1)
  flags.DEFINE_integer('canvas', 40, 'Canvas side in pixels (>= 28).', lower_bound=1)
  flags.DEFINE_integer('speed', 2, 'Pixels per frame.', lower_bound=1)
  flags.DEFINE_integer('seed', 0, 'Seed of the images, directions and starts.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
