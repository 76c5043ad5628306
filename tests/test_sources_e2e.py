"""An RS config end to end on real photographs in each source format rs reads.

Each format is built here from scikit-image's photographs: a class-folder tree, a prepared tfds
dataset, and an imagenet2012 manual-download directory that rs prepares itself. The config is
configs/rs50_i160.py (inception crop, RandAugment N=2 M=10, bf16) shrunk to seconds.
"""
import os

import numpy as np
import pytest

from rs import checkpoint, train

pytest.importorskip('skimage.data')
from rs.tools import photo_dataset  # noqa: E402

TRAIN = photo_dataset.examples(3, 6, size=(100, 75))  # 18 images of 3 photographs
VALIDATION = photo_dataset.examples(3, 2, size=(100, 75), seed=1)  # 6


def rs_config(**data):
  from configs import rs50_i160
  c = rs50_i160.get_config()
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.width_multiplier = 0.25
  c.data.image_size = 32
  c.batch_size = 16  # 2 per device on the tests' 8 CPU devices
  c.eval_batch_size = 16
  c.train_steps = 3
  c.warmup_steps = 1
  c.eval_every_steps = 3
  c.log_every_steps = 1
  c.checkpoint_every_steps = 3
  for key, value in data.items():
    c.data[key] = value
  return c


def check_run(result, workdir, num_eval, num_classes):
  assert result['num_examples'] == num_eval
  assert np.isfinite(result['loss']) and 0 <= result['top1'] <= 1
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), 1, 1)
  assert ckpt.restore()['params']['head']['kernel'].shape[-1] == num_classes
  ckpt.close()


def test_class_folder_tree(tmp_path):
  root = str(tmp_path / 'photos')
  photo_dataset.write_folder(root, 'train', TRAIN)
  photo_dataset.write_folder(root, 'validation', VALIDATION, fmt='png')
  config = rs_config(name='folder', data_dir=root)
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  check_run(result, str(tmp_path / 'run'), len(VALIDATION), 3)


def test_tfds_dataset(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  photo_dataset.write_tfds(data_dir, 'rs_photos', {'train': TRAIN, 'validation': VALIDATION}, 3)
  config = rs_config(name='rs_photos', data_dir=data_dir)
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  check_run(result, str(tmp_path / 'run'), len(VALIDATION), 3)


def test_imagenet2012_manual_download_is_prepared_and_trained_on(tmp_path):
  manual_dir = str(tmp_path / 'manual')
  val_labels = photo_dataset.write_imagenet_manual(manual_dir, TRAIN, num_val=5)
  config = rs_config(name='imagenet2012', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=manual_dir)
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  check_run(result, str(tmp_path / 'run'), 5, 1000)
  # tfds kept the official validation labels of ILSVRC2012_val_00000001...5.
  from rs.data import records
  stored = [int(ex['label']) for ex in records.TfdsRecords(
      'imagenet2012', str(tmp_path / 'tfds')).records('validation')]
  assert sorted(stored) == sorted(val_labels)
