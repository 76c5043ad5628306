"""data.channels (issue 21): every source gives the network 1 or 3 channels, gray and color
alike, by one luma rule in numpy and in TF."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from rs import sharding, validate
from rs.data import pipeline as pipeline_lib, preprocess, tf_preprocess


def test_numpy_and_tf_grayscale_agree_and_keep_gray_pixels():
  rgb = np.random.default_rng(0).integers(0, 256, (3, 17, 19, 3)).astype(np.uint8)
  np.testing.assert_array_equal(preprocess.with_channels(rgb, 1),
                                tf_preprocess.grayscale(tf.constant(rgb)).numpy())
  # Independent: ITU-R 601 luma with weights summing to 1, rounded.
  luma = rgb.astype(np.float64) @ (np.array([0.2989, 0.5870, 0.1140]) / 0.9999)
  assert np.abs(preprocess.with_channels(rgb, 1)[..., 0] - luma).max() <= 0.5 + 1e-6
  gray = np.repeat(rgb[..., :1], 3, axis=-1)
  np.testing.assert_array_equal(preprocess.with_channels(gray, 1), gray[..., :1])
  as_float = tf_preprocess.grayscale(tf.constant(gray, tf.float32)).numpy()
  np.testing.assert_allclose(as_float, gray[..., :1], atol=1e-4)
  np.testing.assert_array_equal(preprocess.with_channels(gray[..., :1], 3), gray)


def test_fashion_mnist_as_three_channels(tiny):
  config = tiny()
  config.data.channels = 3
  config.data.mean, config.data.std = (72.9,) * 3, (90.0,) * 3
  pipeline = pipeline_lib.create_pipeline(config)
  assert pipeline.image_shape == (24, 24, 3)
  batch = next(pipeline.eval_iter())['image']
  np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
  one = pipeline_lib.create_pipeline(tiny())
  np.testing.assert_array_equal(next(one.eval_iter())['image'][..., 0], batch[..., 0])


@pytest.mark.parametrize('channels, frames, why', [
    (2, None, r'data.channels=2: set --config.data.channels to 1 \(grayscale\) or 3 \(RGB\)'),
    (1, 4, 'data.channels=1: video clips are RGB so far')])
def test_bad_channels_are_one_line(tiny, channels, frames, why):
  config = tiny()
  config.data.channels = channels
  if frames:
    config.model.name = 'resnet3d_rs50'
    config.data.frames = frames
  with pytest.raises(validate.ConfigError, match=why):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))


def test_a_one_channel_streamed_network_reads_files_as_its_evaluation_does(tmp_path):
  """rs.predict's reading of a file (EvalInput.read) for a 1-channel class-folder network gives
  exactly the streamed evaluation's image of it, and that is the luma of the RGB network's."""
  import glob
  from rs.data.eval_input import EvalInput
  from rs.tools import photo_dataset
  items = photo_dataset.examples(2, 3, size=(70, 50))
  photo_dataset.write_folder(str(tmp_path), 'validation', items, fmt='png')
  spec = {c: EvalInput(image_size=32, channels=c, mean=(0.0,) * c, std=(1.0,) * c)
          for c in (1, 3)}
  evaluated = {c: np.concatenate([b['image'][b['mask'] > 0] for b in pipeline_lib.eval_pipeline(
      'folder', 'validation', spec[c], 8, str(tmp_path), train_split='validation').eval_iter()])
               for c in (1, 3)}
  assert evaluated[1].shape == (6, 32, 32, 1)
  files = sorted(glob.glob(str(tmp_path / 'validation/*/*.png')))  # the folders' order
  for i, path in enumerate(files):
    np.testing.assert_array_equal(spec[1].read(path), evaluated[1][i])
  luma = tf_preprocess.grayscale(tf.constant(evaluated[3])).numpy()
  np.testing.assert_allclose(luma, evaluated[1], atol=1e-3)
