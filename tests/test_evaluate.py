"""rs.evaluate's streaming tfds input: official preprocessing, whole split, clear errors."""
import numpy as np
import pytest
import tensorflow as tf

from rs.data import records, streaming, tf_preprocess

skimage_data = pytest.importorskip('skimage.data')
tfds = pytest.importorskip('tensorflow_datasets')


@pytest.fixture(scope='module')
def photo_dataset(tmp_path_factory):
  """A prepared tfds dataset of 5 real photographs (JPEG and PNG) in a temporary data_dir."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  photos = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(),
            skimage_data.rocket(), np.repeat(skimage_data.camera()[..., None], 3, -1)]
  examples = [{'image': p, 'label': i % 3} for i, p in enumerate(photos)]
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(num_classes=3)})
  tfds.dataset_builders.store_as_tfds_dataset(
      name='rs_photos', version='1.0.0', features=features,
      split_datasets={'validation': tf.data.Dataset.from_generator(
          lambda: iter(examples), output_signature={
              'image': tf.TensorSpec((None, None, 3), tf.uint8),
              'label': tf.TensorSpec((), tf.int64)})},
      data_dir=data_dir, disable_shuffling=True)
  return data_dir


def eval_pipeline(source, image_size, eval_batch_size, split='validation'):
  return streaming.StreamingPipeline(source, 'train', split, image_size, batch_size=8,
                                     eval_batch_size=eval_batch_size)


def test_eval_batches_cover_the_split_once_with_official_preprocessing(photo_dataset):
  pipeline = eval_pipeline(records.TfdsRecords('rs_photos', photo_dataset), 64, 2)
  batches = list(pipeline.eval_iter())
  assert len(batches) == pipeline.num_eval_batches == 3  # 2 + 2 + 1 padded
  mask = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0])
  labels = np.concatenate([b['label'] for b in batches])[:5]
  np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])
  # Each image is the official eval preprocessing of the stored JPEG bytes.
  stored = tfds.builder('rs_photos', data_dir=photo_dataset).as_dataset(
      split='validation', decoders={'image': tfds.decode.SkipDecoding()})
  images = np.concatenate([b['image'] for b in batches])
  for got, example in zip(images, stored):
    want = tf_preprocess.eval_image_from_bytes(example['image'], 64)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
  assert pipeline.num_classes == 3 and images.shape[1:] == (64, 64, 3)


def test_missing_dataset_says_where_it_looked_and_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match=rf'{tmp_path}.*tfds build imagenet2012 '
                     r'--manual_dir'):
    records.TfdsRecords('imagenet2012', str(tmp_path))


def test_unknown_split_is_a_clear_error(photo_dataset):
  with pytest.raises(ValueError, match=r"splits \['validation'\], not 'test'"):
    eval_pipeline(records.TfdsRecords('rs_photos', photo_dataset), 64, 2, split='test')


def test_evaluate_without_weights_or_data_fails_clearly(tmp_path):
  import jax
  from rs import evaluate, validate, weights
  with pytest.raises(weights.WeightsError, match='holds no rs weights'):
    evaluate.evaluate_weights(str(tmp_path / 'nothing'))
  # ImageNet weights (as rs.convert describes them) and no ImageNet in the data_dir.
  description = weights.imagenet('resnetrs26', {'stage_sizes': (1, 1, 1, 1),
                                                'width_multiplier': 0.125}, 32)
  model = description.build()
  variables = jax.jit(lambda: model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                         train=False))()
  weights.save(str(tmp_path / 'w'), variables, description)
  with pytest.raises(validate.ConfigError, match='no prepared imagenet2012 in .*--config.data.'
                     'manual_dir=FOLDER'):  # one line from rs.evaluate, as from rs.main
    evaluate.evaluate_weights(str(tmp_path / 'w'), data_dir=str(tmp_path / 'tfds'))
