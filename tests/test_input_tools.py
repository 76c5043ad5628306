"""rs.tools.show_augment and rs.tools.bench_input on a folder of real photographs."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

pytest.importorskip('skimage.data')
from rs.tools import photo_dataset, show_augment  # noqa: E402


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('photos'))
  photo_dataset.write_folder(root, 'train', photo_dataset.examples(4, 4, size=(120, 90)))
  photo_dataset.write_folder(root, 'validation', photo_dataset.examples(4, 1, size=(120, 90)))
  return root


def rs_config(root):
  from configs import rs50_i160
  c = rs50_i160.get_config()
  c.data.name = 'folder'
  c.data.data_dir = root
  c.data.image_size = 24
  c.batch_size = 8
  return c


def test_grid_places_every_image_in_reading_order():
  images = np.arange(5)[:, None, None, None] * np.ones((5, 3, 4, 1)) * 50
  tile = show_augment.grid(images, columns=2, gap=1)
  assert tile.shape == (3 * 4 - 1, 2 * 5 - 1, 3) and tile.dtype == np.uint8
  for i in range(5):
    r, c = divmod(i, 2)
    np.testing.assert_array_equal(tile[r * 4:r * 4 + 3, c * 5:c * 5 + 4], 50 * i)
  np.testing.assert_array_equal(tile[8:11, 5:9], 255)  # the empty sixth cell stays white


def test_show_augment_writes_the_pipelines_first_images(photos, tmp_path):
  from rs.data import pipeline as pipeline_lib
  out = str(tmp_path / 'aug.png')
  subprocess.run([sys.executable, '-m', 'rs.tools.show_augment',
                  '--config=configs/rs50_i160.py', '--config.data.name=folder',
                  f'--config.data.data_dir={photos}', '--config.data.image_size=24',
                  '--config.batch_size=8', '--rows=2', '--columns=3', f'--out={out}'],
                 cwd=ROOT, check=True, capture_output=True)
  tile = np.asarray(Image.open(out))
  assert tile.shape == (2 * 26 - 2, 3 * 26 - 2, 3)
  first = next(pipeline_lib.create_pipeline(rs_config(photos), prepare=False).train_iter(0))
  np.testing.assert_array_equal(tile[:24, :24], first['image'][0])  # uint8 after RandAugment
  np.testing.assert_array_equal(tile[26:50, 52:76], first['image'][5])


def test_bench_input_measures_both_pipelines_on_the_same_files(photos):
  from rs.tools import bench_input
  config = rs_config(photos)
  paths, labels = bench_input.records.FolderRecords(photos).files('train')
  plain = next(iter(bench_input.plain_dataset(paths, labels, config.data, 4, 2)))
  ours = next(iter(bench_input.rs_dataset(photos, config, 4, 2)))
  for batch in (plain, ours):
    assert batch['image'].shape == (4, 24, 24, 3) and batch['image'].dtype.name == 'uint8'
    assert set(batch['label'].numpy()) <= set(labels)
  result = subprocess.run([sys.executable, '-m', 'rs.tools.bench_input',
                           '--config=configs/rs50_i160.py', f'--data={photos}',
                           '--batch_size=4', '--batches=2', '--rounds=2', '--threads=2',
                           '--json'], cwd=ROOT, check=True, capture_output=True, text=True)
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert figures['files'] == 16 and figures['threads'] == 2 and figures['image_size'] == 160
  assert figures['rs_images_per_sec'] > 0 and figures['plain_images_per_sec'] > 0
  assert figures['ratio_rs_over_plain'] == pytest.approx(
      figures['rs_images_per_sec'] / figures['plain_images_per_sec'])
