"""Every video source gives the same clips: video files (FFV1, lossless), folders of frame images
(PNG) and a tfds dataset with a Video feature (PNG frames) hold the same moving-Fashion-MNIST
clips, and the pipeline's evaluation views of them are equal pixel for pixel. Frame folders
and tfds videos decode only the sampled frames; bad frames and short videos are skipped and
counted like bad video files."""
import gzip

import jax
import numpy as np
import pytest
import tensorflow as tf


from rs import sharding, validate
from rs.data import moving, records, video_files, video_pipeline
from rs.tools import moving_dataset

FASHION = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz'
FRAMES = 12  # frame_0 ... frame_11: natural order differs from the lexical one


@pytest.fixture(scope='module')
def clips():
  with gzip.open(FASHION) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:50]
  data, labels = moving.make(images, 12, frames=FRAMES, canvas=32, speed=2, seed=3)
  # In the folder source's order (class name, then file name), so every source lists the
  # same videos in the same order.
  order = sorted(range(len(labels)), key=lambda i: (moving.CLASS_NAMES[labels[i]], i))
  return data[order], labels[order]


def _write_folders(root, clips, as_frames):
  """rs.tools.moving_dataset's layout: ROOT/SPLIT/CLASS/NNNNN.mkv or NNNNN/frame_K.png."""
  for split in ('train', 'test'):
    moving_dataset.write_folder(str(root), split, *clips, as_frames=as_frames)
  return str(root)


@pytest.fixture(scope='module')
def sources(tmp_path_factory, clips):
  tmp = tmp_path_factory.mktemp('sources')
  moving_dataset.write_tfds(str(tmp / 'tfds'), {'train': clips, 'test': clips})
  return {'files': ('folder', _write_folders(tmp / 'files', clips, as_frames=False)),
          'frames': ('folder', _write_folders(tmp / 'frames', clips, as_frames=True)),
          'tfds': (moving_dataset.TFDS_NAME, str(tmp / 'tfds'))}


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
    assert pipeline.num_classes == 8 and pipeline.num_eval_examples == len(clips[1])
    assert pipeline.eval_image_shape == (6, 4, 28, 28, 3)
    images, labels = _eval_images(pipeline)
    # Folders number classes by their sorted names, tfds as its ClassLabel lists them.
    views[kind] = images, [pipeline.class_names[label] for label in labels]
  images, labels = views['files']
  assert labels == [moving.CLASS_NAMES[label] for label in clips[1]]
  assert images.shape == (12, 6, 4, 28, 28, 3)
  for kind in ('frames', 'tfds'):
    assert views[kind][1] == labels
    np.testing.assert_array_equal(views[kind][0], images)
  # Independent truth for one view: the second clip of the first video starts at frame 4
  # (linspace(0, 12 - 8, 2)) and takes frames 4, 6, 8, 10 (frame_10 after frame_9: natural
  # order); the 32 px canvas resized to 28 (bilinear, rounded, as the pipeline); one crop
  # (square frames: the three crops coincide).
  second = tf.image.resize(np.repeat(clips[0][0][[4, 6, 8, 10]], 3, -1), (28, 28),
                           method='bilinear')
  np.testing.assert_array_equal(images[0, 3], np.round(np.clip(second, 0, 255)))


def test_frame_folders_and_tfds_train_on_the_same_clips_as_files(tiny, sources):
  """Training draws depend on (seed, position) only: frame folders, listed and permuted like
  the files, give the files' clips exactly; a tfds video source (its own record order) resumes
  exactly."""
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
  path = f'{data_dir}/train/{moving.CLASS_NAMES[clips[1][0]]}/00000'
  packed = records.read_video(path)
  assert video_files.well_formed(tf.constant(packed)).numpy()
  np.testing.assert_array_equal(video_files.decode(packed, path), np.repeat(clips[0][0], 3, -1))


def test_bad_frames_short_videos_and_mixed_folders(tiny, tmp_path, clips, caplog):
  """One class folder mixes video files and frame folders; a frame folder with a corrupt
  frame, an empty one and (with min_video_frames) a short one are skipped and named."""
  root = _write_folders(tmp_path / 'mixed', (clips[0][:6], clips[1][:6]), as_frames=True)
  test = tmp_path / 'mixed' / 'test'
  clip, label = clips[0][6], clips[1][6]
  png = moving_dataset.encode_png
  (test / moving.CLASS_NAMES[label] / 'a_file.mkv').write_bytes(video_files.encode(clip))
  broken = test / moving.CLASS_NAMES[label] / 'broken'
  broken.mkdir()
  for t, frame in enumerate(clip):
    (broken / f'{t}.png').write_bytes(png(frame)[:60] if t == 0 else png(frame))
  (test / moving.CLASS_NAMES[label] / 'empty').mkdir()
  short = test / moving.CLASS_NAMES[label] / 'short'
  short.mkdir()
  for t, frame in enumerate(clip[:3]):
    (short / f'{t}.png').write_bytes(png(frame))

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
  with pytest.raises(validate.ConfigError,
                     match='data.eval_image_size=256: applies to video clips only'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  config = tiny()
  config.data.flip = False
  with pytest.raises(validate.ConfigError, match='data.flip=False: turns flips off for video'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  config = _config(tiny, *sources['files'])
  config.data.eval_image_size = 0
  with pytest.raises(validate.ConfigError, match='data.eval_image_size=0'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))


def test_moving_dataset_command_writes_disjoint_splits(tmp_path):
  from conftest import run_command
  result = run_command('rs.tools.moving_dataset', f'--out={tmp_path}', '--train=16',
                       '--minival=8', '--test=8', '--frames=4', '--canvas=32')
  assert result.status == 0, result.stderr
  assert '16 train, 8 minival, 8 test clips of 4 frames, 32x32 (files)' in result.stdout
  for split, count in (('train', 16), ('minival', 8), ('test', 8)):
    files = sorted(tmp_path.glob(f'{split}/*/*.mkv'))
    assert len(files) == count and {f.parent.name for f in files} <= set(moving.CLASS_NAMES)
    first = video_files.decode(files[0].read_bytes())
    assert first.shape == (4, 32, 32, 3)
  # Minival clips come from the last 6,000 training images, training clips from the rest.
  train, minival = (moving_dataset.split_images(s) for s in ('train', 'minival'))
  assert len(train) == 54_000 and len(minival) == 6_000
  assert not np.array_equal(train[-1], minival[0])
  bad = run_command('rs.tools.moving_dataset', f'--out={tmp_path}', '--canvas=20')
  assert bad.status == 1 and bad.stderr.strip().splitlines()[-1] == (
      "error: --canvas=20: at least 28, the images' size")
