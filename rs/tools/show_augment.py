"""What the model sees: a grid of augmented training images from a config's input pipeline.

  python -m rs.tools.show_augment --config=configs/rs50_i160.py \
      --config.data.name=folder --config.data.data_dir=/tmp/photos --out=aug.png

The images are the first training batches exactly as the train step receives them (crop,
flip, RandAugment; before the on-device mean/std normalisation), so --config.seed and
--start_step pick which ones.
"""
import os

import numpy as np
from absl import flags

from rs import cli
from rs.errors import UserError


def grid(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
  """(N, H, W, C) images, any float/uint8 on 0..255 -> one uint8 (rows*(H+gap), ..., 3) tile."""
  images = np.clip(np.round(images.astype(np.float32)), 0, 255).astype(np.uint8)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  n, h, w, _ = images.shape
  rows = -(-n // columns)
  out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
  return out


def augmented_images(config, count: int, start_step: int = 0) -> np.ndarray:
  """The first `count` training images from batch `start_step` on (this host's rows)."""
  from rs.data import pipeline as pipeline_lib
  pipeline = pipeline_lib.create_pipeline(config, prepare=False)
  images, batches = [], pipeline.train_iter(start_step)
  while sum(len(b) for b in images) < count:
    images.append(next(batches)['image'])
  return np.concatenate(images)[:count]


def main(argv):
  from PIL import Image
  del argv
  f = flags.FLAGS
  folder = os.path.dirname(os.path.abspath(f.out))
  if os.path.isdir(f.out) or not f.out.lower().endswith('.png'):
    raise UserError(f'--out={f.out}: give the path of a .png file to write')
  if not os.path.isdir(folder):
    raise UserError(f'--out={f.out}: the folder {folder} does not exist; create it first')
  images = augmented_images(f.config, f.rows * f.columns, f.start_step)
  Image.fromarray(grid(images, f.columns)).save(f.out)
  print(f'{len(images)} augmented training images ({images.shape[1]}x{images.shape[2]}) '
        f'-> {f.out}')


def define_flags():
  """Command-line flags, defined only when run as a program (library imports stay flag-free)."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file.')
  flags.DEFINE_string('out', 'augment.png', 'The PNG to write.')
  flags.DEFINE_integer('rows', 4, 'Rows of the grid.', lower_bound=1)
  flags.DEFINE_integer('columns', 8, 'Columns of the grid.', lower_bound=1)
  flags.DEFINE_integer('start_step', 0, 'The first training batch to show.', lower_bound=0)
  flags.mark_flags_as_required(['config'])


if __name__ == '__main__':
  define_flags()
  cli.run(main)
