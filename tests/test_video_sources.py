"""Every video source gives the same clips: video files (FFV1, lossless), folders of frame images
(PNG) and a tfds dataset with a Video feature (PNG frames) hold the same moving-Fashion-MNIST
clips, and the pipeline's evaluation views of them are equal pixel for pixel. Frame folders
and tfds videos decode only the sampled frames; bad frames and short videos are skipped and
counted like bad video files."""
import gzip
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import jax

from rs import sharding, validate
from rs.data import moving, records, video_files, video_pipeline

FASHION = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz'
FRAMES = 10  # frame names f1 ... f10: natural order differs from the lexical one


def _png(frame):
  buffer = io.BytesIO()
  Image.fromarray(frame[..., 0]).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.fixture(scope='module')
def clips():
  with gzip.open(FASHION) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:50]
  data, labels = moving.make(images, 12, frames=FRAMES, canvas=32, speed=2, seed=3)
  # In the folder source's order (class name, then file name), so every source lists the
  # same videos in the same order.
  order = sorted(range(len(labels)), key=lambda i: (moving.CLASS_NAMES[labels[i]], i))
  return [(i, data[i], int(labels[i])) for i in order]


def _write_folders(root, clips, as_frames):
  for split in ('train', 'test'):
    for name in moving.CLASS_NAMES:
      (root / split / name).mkdir(parents=True, exist_ok=True)
    for i, clip, label in clips:
      folder = root / split / moving.CLASS_NAMES[label]
      if as_frames:
        (folder / f'{i:03d}').mkdir()
        for t, frame in enumerate(clip):
          (folder / f'{i:03d}' / f'f{t + 1}.png').write_bytes(_png(frame))
      else:
        (folder / f'{i:03d}.mkv').write_bytes(video_files.encode(clip))
  return str(root)


def _write_tfds(data_dir, clips):
  import tensorflow_datasets as tfds
  features = tfds.features.FeaturesDict({
      'video': tfds.features.Video(shape=(None, 32, 32, 1), encoding_format='png'),
      'label': tfds.features.ClassLabel(names=list(moving.CLASS_NAMES))})
  signature = {'video': tf.TensorSpec((None, 32, 32, 1), tf.uint8),
               'label': tf.TensorSpec((), tf.int64)}

  def split():
    return tf.data.Dataset.from_generator(
        lambda: ({'video': clip, 'label': label} for _, clip, label in clips),
        output_signature=signature)

  tfds.dataset_builders.store_as_tfds_dataset(
      name='moving_fashion', version='1.0.0', features=features,
      split_datasets={'train': split(), 'test': split()}, data_dir=str(data_dir),
      disable_shuffling=True)
  return str(data_dir)


@pytest.fixture(scope='module')
def sources(tmp_path_factory, clips):
  tmp = tmp_path_factory.mktemp('sources')
  return {'files': ('folder', _write_folders(tmp / 'files', clips, as_frames=False)),
          'frames': ('folder', _write_folders(tmp / 'frames', clips, as_frames=True)),
          'tfds': ('moving_fashion', _write_tfds(tmp / 'tfds', clips))}


def _config(tiny, name, data_dir):
  config = tiny()
  config.model.name = 'resnet3d_rs50'
  config.data.name = name
  config.data.data_dir = data_dir
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.augment = 'inception_crop'
  config.data.image_size = 24
  config.data.eval_image_size = 28
  config.data.frames = 4
  config.data.frame_stride = 2
  config.data.eval_clips = 2
  config.data.eval_crops = 3
  config.batch_size = 4
  config.eval_batch_size = 4
  return config


def _eval_images(pipeline):
  batches = list(pipeline.eval_iter())
  return (np.concatenate([b['image'][b['mask'] > 0] for b in batches]),
          np.concatenate([b['label'][b['mask'] > 0] for b in batches]))


def test_files_frame_folders_and_tfds_give_the_same_evaluation_views(tiny, sources, clips):
  views = {}
  for kind, (name, data_dir) in sources.items():
    pipeline = video_pipeline.create(_config(tiny, name, data_dir))
    assert pipeline.num_classes == 8 and pipeline.num_eval_examples == len(clips)
    assert pipeline.eval_image_shape == (6, 4, 28, 28, 3)
    images, labels = _eval_images(pipeline)
    # Folders number classes by their sorted names, tfds as its ClassLabel lists them.
    views[kind] = images, [pipeline.class_names[label] for label in labels]
  images, labels = views['files']
  assert labels == [moving.CLASS_NAMES[label] for _, _, label in clips]
  assert images.shape == (len(clips), 6, 4, 28, 28, 3)
  for kind in ('frames', 'tfds'):
    assert views[kind][1] == labels
    np.testing.assert_array_equal(views[kind][0], images)
  # Independent truth for one view: clip 1's frames 0, 2, 4, 6 (start linspace(0, 10 - 8, 2)
  # = 0, 2 for the second clip: frames 2, 4, 6, 8), the 32 px canvas resized to 28 (bilinear,
  # rounded: the pipeline's exact arithmetic), one crop (square: all three crops coincide).
  _, clip, _ = clips[0]
  second = tf.image.resize(np.repeat(clip[[2, 4, 6, 8]], 3, -1), (28, 28), method='bilinear')
  np.testing.assert_array_equal(images[0, 3], np.round(np.clip(second, 0, 255)))


def test_frame_folders_and_tfds_train_on_the_same_clips_as_files(tiny, sources):
  """Training draws depend on (seed, position) only, so with the same record order (one
  video per class in the folder layout) the clips agree too; here: each source's batches are
  a pure function of (seed, step), and frame folders give the files' clips."""
  batches = {}
  for kind in ('files', 'frames'):
    name, data_dir = sources[kind]
    pipeline = video_pipeline.create(_config(tiny, name, data_dir))
    batches[kind] = [b for _, b in zip(range(3), pipeline.train_iter(0))]
  for a, b in zip(batches['files'], batches['frames']):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  name, data_dir = sources['tfds']
  first = list(zip(range(3), video_pipeline.create(_config(tiny, name, data_dir)).train_iter(0)))
  resumed = next(video_pipeline.create(_config(tiny, name, data_dir)).train_iter(2))
  np.testing.assert_array_equal(resumed['image'], first[2][1]['image'])
  assert first[0][1]['image'].shape == (4, 4, 24, 24, 3)


def test_frames_are_read_in_natural_order_and_packed_whole(sources, clips):
  _, data_dir = sources['frames']
  i, clip, label = clips[0]
  path = f'{data_dir}/train/{moving.CLASS_NAMES[label]}/{i:03d}'
  packed = records.read_video(path)
  assert video_files.well_formed(tf.constant(packed)).numpy()
  np.testing.assert_array_equal(video_files.decode(packed, path), np.repeat(clip, 3, -1))


def test_bad_frames_short_videos_and_mixed_folders(tiny, tmp_path, clips, caplog):
  """One class folder mixes video files and frame folders; a frame folder with a corrupt
  frame, an empty one and (with min_video_frames) a short one are skipped and named."""
  root = _write_folders(tmp_path / 'mixed', clips[:6], as_frames=True)
  test = tmp_path / 'mixed' / 'test'
  _, clip, label = clips[6]
  (test / moving.CLASS_NAMES[label] / 'a_file.mkv').write_bytes(video_files.encode(clip))
  broken = test / moving.CLASS_NAMES[label] / 'broken'
  broken.mkdir()
  for t, frame in enumerate(clip):
    (broken / f'{t}.png').write_bytes(_png(frame)[:60] if t == 0 else _png(frame))
  (test / moving.CLASS_NAMES[label] / 'empty').mkdir()
  short = test / moving.CLASS_NAMES[label] / 'short'
  short.mkdir()
  for t, frame in enumerate(clip[:3]):
    (short / f'{t}.png').write_bytes(_png(frame))

  config = _config(tiny, 'folder', root)
  config.data.min_video_frames = 4
  pipeline = video_pipeline.create(config)
  assert pipeline.num_eval_examples == 10  # 6 + the file + 3 bad ones
  images, labels = _eval_images(pipeline)
  assert len(labels) == 7 and pipeline.eval_skipped == 3
  bad = pipeline.undecodable.paths
  assert sorted(p.rsplit('/', 1)[1] for p in bad) == ['broken', 'empty', 'short']
  assert 'frame 0 does not decode' in bad[str(broken)]
  assert 'no frames' in bad[str(test / moving.CLASS_NAMES[label] / 'empty')]
  assert 'fewer than data.min_video_frames=4' in bad[str(short)]
  # The mixed-in video file is evaluated like the frame folders' videos.
  assert images.shape == (7, 6, 4, 28, 28, 3)


def test_bad_video_source_settings_are_one_line(tiny, sources, tmp_path):
  from rs.tools import photo_dataset
  photo_dataset.write_tfds(str(tmp_path), 'still_photos',
                           {'train': photo_dataset.examples(2, 2, size=(40, 30))}, 2)
  config = _config(tiny, 'still_photos', str(tmp_path))
  with pytest.raises(ValueError, match='holds images .* not videos'):
    video_pipeline.create(config)
  config = tiny()
  config.data.eval_image_size = 256
  with pytest.raises(validate.ConfigError, match='data.eval_image_size=256: applies to video clips only'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  config = _config(tiny, *sources['files'])
  config.data.eval_image_size = 0
  with pytest.raises(validate.ConfigError, match='data.eval_image_size=0'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
