"""Video end to end: a folder of real video files (moving Fashion-MNIST, written with FFV1),
streamed as clips into a 3D ResNet-RS by the same trainer; evaluation of K clips x 3 crops per
video, exact over the split; bad videos skipped and counted; batches a pure function of
(seed, step)."""
import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rs import step as step_lib
from rs import train
from rs.data import moving, video_files, video_pipeline
from rs.models import create_model

FASHION = '/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz'


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """ROOT/{train,test}/{east,...}/NNN.mkv: 48 training and 16 test clips of 6 frames, plus one
  file per split that is no video."""
  with gzip.open(FASHION) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:200]
  root = tmp_path_factory.mktemp('moving')
  for split, count, seed in (('train', 48, 0), ('test', 16, 1)):
    clips, labels = moving.make(images, count, frames=6, canvas=32, speed=2, seed=seed)
    for i, (clip, label) in enumerate(zip(clips, labels)):
      folder = root / split / moving.CLASS_NAMES[label]
      folder.mkdir(parents=True, exist_ok=True)
      (folder / f'{i:03d}.mkv').write_bytes(video_files.encode(clip))
    for name in moving.CLASS_NAMES:  # every class present in both splits
      (root / split / name).mkdir(parents=True, exist_ok=True)
    (root / split / 'east' / 'broken.mp4').write_bytes(b'not a video at all')
  return str(root)


def video_config(tiny, root):
  config = tiny(train_steps=4, warmup_steps=1, eval_every_steps=4)
  config.model.name = 'resnet3d_rs50'
  config.model.width_multiplier = 0.125
  config.model.stage_sizes = (1, 1, 1, 1)
  config.data.name = 'folder'
  config.data.data_dir = root
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.augment = 'inception_crop'
  config.data.image_size = 24
  config.data.frames = 4
  config.data.frame_stride = 1
  config.data.eval_clips = 2
  config.data.eval_crops = 3
  config.data.mean = (72.9,) * 3
  config.data.std = (90.0,) * 3
  config.batch_size = 8
  config.eval_batch_size = 8
  return config


@pytest.fixture(scope='module')
def video_run(videos, tmp_path_factory):
  """(workdir, config, final evaluation) of the tiny video run: 4 steps, one evaluation."""
  from conftest import tiny_config
  config = video_config(tiny_config, videos)
  workdir = str(tmp_path_factory.mktemp('video_run') / 'run')
  return workdir, config, train.train_and_evaluate(config, workdir)


def test_a_3d_network_trains_on_video_files_and_evaluates_every_video_once(video_run):
  _, _, result = video_run
  # 16 test videos (the broken file left out), each scored once from its 2 x 3 views.
  assert result['num_examples'] == 16
  assert np.isfinite(result['loss']) and 0 <= result['top1'] <= 1


def test_an_exported_video_network_predicts_and_serves_as_it_evaluated(video_run, videos,
                                                                       tmp_path):
  """rs.export writes the clip views into model.json; rs.predict on a video file and on the
  same video as a folder of frames gives the probabilities the evaluation pipeline's views
  give; the serving function takes (b, views, T, S, S, 3) uint8 and agrees; a bad file is one
  line and the others are still predicted."""
  import json
  import pathlib
  from conftest import run_command
  from rs import export, predict
  from rs.tools import moving_dataset
  workdir, config, _ = video_run
  out = str(tmp_path / 'export')
  export.export(workdir, out, serving=True)
  spec = json.loads((pathlib.Path(out) / 'model.json').read_text())['input']
  assert (spec['method'], spec['frames'], spec['clips'], spec['crops'], spec['image_size']) == (
      'clips', 4, 2, 3, 24)
  # The pipeline's first test video, its views and the EMA weights' probabilities.
  pipeline = video_pipeline.create(config)
  first = next(pipeline.eval_iter())
  path = pipeline.source.names(config.data.eval_split)[0]
  model, variables, description = export.load(out)
  want = np.asarray(jax.nn.softmax(step_lib.logits(model, variables, first['image'][:1],
                                                   config.data.mean, config.data.std)))
  frames_dir = tmp_path / 'frames'
  frames = video_files.decode(pathlib.Path(path).read_bytes())
  moving_dataset.write_folder(str(frames_dir), 'x', frames[None, ..., :1], [0], as_frames=True)
  frame_folder = str(next((frames_dir / 'x').glob('*/*')))
  predictor = predict.Predictor(out)
  np.testing.assert_allclose(predictor.prepare.read(path), first['image'][0])
  for source in (path, frame_folder):
    got = predictor.predict([source])[0]
    top = int(np.argmax(want[0]))
    assert got['top5'][0]['index'] == top
    np.testing.assert_allclose(got['top5'][0]['probability'], want[0, top], rtol=1e-5)
  call, info = export.load_serving(out)
  assert info['input']['shape'] == ['b', 6, 4, 24, 24, 3]
  served = np.asarray(call(first['image'][:2].astype(np.uint8))['probabilities'])
  np.testing.assert_allclose(served[0], want[0], rtol=1e-4, atol=1e-6)
  # rs.evaluate streams the export's clips as the run's final evaluation scored its EMA.
  from rs import evaluate
  _, _, final = video_run
  scored = evaluate.evaluate_weights(out, batch_size=8)
  assert scored['num_examples'] == 16
  np.testing.assert_allclose(scored['top1'], final['ema_top1'])
  np.testing.assert_allclose(scored['loss'], final['ema_loss'], rtol=1e-4)
  broken = str(pathlib.Path(videos) / 'test' / 'east' / 'broken.mp4')
  result = run_command('rs.predict', f'--checkpoint={out}', '--json', path, broken)
  assert result.status == 1 and len(result.stdout.strip().splitlines()) == 1
  assert f'rs.predict: {broken}: does not decode as a video' in result.stderr


def test_clips_are_a_pure_function_of_seed_and_step_and_resume_exactly(tiny, videos):
  config = video_config(tiny, videos)
  pipeline = video_pipeline.create(config)
  assert pipeline.num_classes == 8 and pipeline.image_shape == (4, 24, 24, 3)
  first = [next(it) for it in [pipeline.train_iter(0)] for _ in range(3)]
  again = video_pipeline.create(config)
  resumed = next(again.train_iter(2))
  for key in ('image', 'label'):
    np.testing.assert_array_equal(resumed[key], first[2][key])
  assert first[0]['image'].shape == (8, 4, 24, 24, 3) and first[0]['image'].dtype == np.uint8
  # The broken training video is named and counted once its record comes up.
  list(zip(range(12), pipeline.train_iter(3)))
  assert any(path.endswith('broken.mp4') for path in pipeline.undecodable.paths)
  batches = list(pipeline.eval_iter())
  assert batches[0]['image'].shape == (8, 6, 4, 24, 24, 3)
  assert sum(int(b['mask'].sum()) for b in batches) == 16 and pipeline.eval_skipped == 1


def test_views_are_scored_by_their_mean_probability():
  """eval_step on (batch, views, ...) equals averaging each view's softmax by hand."""
  model = create_model('resnet3d_rs50', width_multiplier=0.125, stage_sizes=(1, 1, 1, 1),
                       num_classes=5)
  views = jax.random.uniform(jax.random.key(0), (3, 4, 2, 16, 16, 3)) * 255
  variables = model.init(jax.random.key(1), views[0])
  labels = jnp.array([0, 3, 4])
  sums = step_lib.eval_step(variables, {'image': views, 'label': labels,
                                        'mask': jnp.ones(3)}, model=model, mean=(0.0,) * 3,
                            std=(255.0,) * 3)
  probs = jnp.stack([jax.nn.softmax(step_lib.logits(model, variables, v, (0.0,) * 3,
                                                    (255.0,) * 3), axis=-1) for v in views])
  mean = probs.mean(axis=1)
  np.testing.assert_allclose(sums['loss'], -jnp.log(mean[jnp.arange(3), labels]).sum(),
                             rtol=1e-5)
  assert float(sums['top1']) == float((mean.argmax(-1) == labels).sum())
  assert float(sums['count']) == 3


def test_video_settings_are_checked(tiny, videos):
  from rs import sharding, validate
  from rs.errors import ConfigError
  config = video_config(tiny, videos)
  config.data.frames = None
  with pytest.raises(ConfigError, match='a 3D network takes video clips'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  config = video_config(tiny, videos)
  config.model.name = 'resnetrs50'
  with pytest.raises(ConfigError, match='takes images: leave data.frames unset'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  config = video_config(tiny, videos)
  config.data.frame_stride = 0
  with pytest.raises(ConfigError, match='data.frame_stride=0'):
    validate.check_config(config, sharding.create_mesh(jax.devices()[:1]))
  config = video_config(tiny, videos)
  config.data.name = 'kinetics400'  # not in tfds's catalogue: the user builds it
  with pytest.raises(FileNotFoundError, match=r"tfds dataset 'kinetics400' unavailable .*"
                     r"not found\.\); `tfds build kinetics400") as error:
    video_pipeline.create(config)
  assert '\n' not in str(error.value)  # not tfds's whole catalogue
