"""rs.predict (issue 7): top-5 names and probabilities of image files, clear errors.

The Fashion-MNIST and photo fixtures write model.json in version 1 of the weights format,
exactly as rs.export wrote it before rs.weights (flat input fields, no "version"), so they also
test that such weights still load and predict; the timm test writes rs.convert's version 1."""
import functools
import glob
import importlib.util
import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, process_env
from rs import checkpoint, predict, weights
from rs.data import eval_input, preprocess, sources, tf_preprocess

skimage_data = pytest.importorskip('skimage.data')
Image = pytest.importorskip('PIL.Image')
TINY = {'stage_sizes': [1, 1, 1, 1], 'width_multiplier': 0.125}
FASHION_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                 'Sneaker', 'Bag', 'Ankle boot']  # the dataset's documented labels


def random_variables(model, x: np.ndarray, seed: int = 0) -> dict:
  """Variables for `model` as if trained: He-normal kernels, BN scales ~1 and biases ~0 (all
  randomised, the zero-initialised last BN scales too), and the BN statistics of one training-
  mode pass over the normalised images `x` (bn_momentum 0 keeps the batch's). Activations then
  depend on the image as in a trained network: logits differ by ~1 between images, and a slip
  in preprocessing (resize, crop, mean) shows far above 1e-4. No model.init: compiling its
  random initialisers takes ~10 s of CPU here."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x[:1])
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    normal = rng.standard_normal(shape.shape).astype(np.float32)
    if path[-1].key == 'kernel':
      return normal * np.sqrt(2 / np.prod(shape.shape[:-1]))
    return 1 + 0.1 * normal if path[-1].key in ('scale', 'var') else 0.1 * normal

  variables = jax.tree_util.tree_map_with_path(leaf, shapes)
  _, stats = jax.jit(functools.partial(model.clone(dropout_rate=0.0).apply, train=True,
                                       mutable=['batch_stats']))(variables, x)
  return {'params': variables['params'], **jax.device_get(stats)}


def model_of(meta: dict):
  """The network a version-1 model.json names, built directly (not through rs.weights)."""
  from rs.models import create_model
  return create_model(meta['model'], num_classes=meta['num_classes'], **meta['overrides'])


def save_version_1(directory, meta: dict, variables) -> str:
  """A weights directory as rs wrote it before model.json had a version."""
  checkpoint.save_tree(str(directory / 'variables'), variables)
  (directory / 'model.json').write_text(json.dumps(meta))
  return str(directory)


def save_weights(directory, meta: dict, images: np.ndarray) -> str:
  """A version-1 weights directory as rs.export wrote it, for a network calibrated on `images`
  (float on 0..255, normalised as model.json says)."""
  x = (images - np.asarray(meta['mean'])) / np.asarray(meta['std'])
  return save_version_1(directory, meta, random_variables(model_of(meta), x.astype(np.float32)))


def softmax_in_process(directory: str, meta: dict, images: np.ndarray) -> np.ndarray:
  """The saved model's softmax on preprocessed float images (0..255), without rs.predict:
  the arrays restored by orbax, the network and normalisation taken from `meta` directly."""
  variables = checkpoint.restore_tree(f'{directory}/variables',
                                      jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  mean, std = np.asarray(meta['mean'], np.float32), np.asarray(meta['std'], np.float32)
  apply = functools.partial(model_of(meta).apply, train=False)
  logits = jax.jit(apply)(variables, (images - mean) / std)
  return np.asarray(jax.nn.softmax(np.asarray(logits, np.float32)))


def run_predict(*args):
  env = process_env()  # the CPU devices rs.predict picks itself: one per core
  return subprocess.run([sys.executable, '-m', 'rs.predict', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def parse_text(stdout: str) -> dict[str, list[tuple[float, str]]]:
  """{path: [(probability, label)] * 5} from the text output."""
  blocks, path = {}, None
  for line in stdout.splitlines():
    if line.startswith('  '):
      probability, label = line.strip().split('  ', 1)
      blocks[path].append((float(probability), label))
    else:
      path = line
      blocks[path] = []
  return blocks


def encode(image: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, fmt)
  return buffer.getvalue()


# Fashion-MNIST: the in-memory pipeline's preprocessing, the tfds label names.

@pytest.fixture(scope='module')
def fashion(tmp_path_factory):
  """Weights of a grayscale Fashion-MNIST model, 4 real test images as PNG and a photograph."""
  tmp = tmp_path_factory.mktemp('fashion')
  meta = {'model': 'resnetrs26', 'num_classes': 10, 'overrides': TINY, 'image_size': 32,
          'channels': 1, 'mean': [72.93], 'std': [90.0], 'dataset': 'fashion_mnist',
          'preprocess': 'resize', 'eval_crop_padding': 32, 'eval_crop_fraction': None,
          'resize_method': 'bicubic', 'class_names': None}
  test = sources.load_array_split('fashion_mnist', 'test[:4]')
  weights = save_weights(tmp / 'weights', meta, preprocess.resize(test.images, 32) * 1.0)
  paths = []
  for i, image in enumerate(test.images):
    paths.append(str(tmp / f'fmnist{i}.png'))
    with open(paths[-1], 'wb') as f:
      f.write(encode(image[..., 0], 'PNG'))
  photo = str(tmp / 'coffee.jpg')  # color, 400 x 600: grayscale, squared, 28 x 28, then 32
  with open(photo, 'wb') as f:
    f.write(encode(skimage_data.coffee(), 'JPEG'))
  return weights, paths, test.images, photo, meta


def fashion_photo_input(path: str) -> np.ndarray:
  """rs.predict's documented path for a photo given to a Fashion-MNIST model."""
  with open(path, 'rb') as f:
    rgb = tf.io.decode_jpeg(f.read()).numpy().astype(np.float32)  # (400, 600, 3)
  # ITU-R 601 luma, its weights scaled to sum to 1 (a gray pixel stays itself), rounded.
  luma = rgb @ (np.float32([0.2989, 0.5870, 0.1140]) / np.float32(0.9999))
  gray = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
  square = np.pad(gray, ((100, 100), (0, 0), (0, 0)))  # centered on black
  return preprocess.resize(preprocess.resize(square[None], 28), 32)[0]


def test_fashion_mnist_top5_is_the_softmax_of_the_eval_images(fashion):
  weights, paths, images, photo, meta = fashion
  run = run_predict(f'--checkpoint={weights}', '--json', *paths, photo)
  assert run.returncode == 0, run.stderr
  results = [json.loads(line) for line in run.stdout.splitlines()]
  assert [r['path'] for r in results] == paths + [photo]
  # The eval split's own preprocessing (rs.data.pipeline: resize 28 -> 32).
  inputs = np.concatenate([preprocess.resize(images, 32), fashion_photo_input(photo)[None]])
  want = softmax_in_process(weights, meta, inputs.astype(np.float32))
  for result, p in zip(results, want):
    top = np.argsort(-p)[:5]
    assert [row['index'] for row in result['top5']] == top.tolist()
    assert [row['label'] for row in result['top5']] == [FASHION_NAMES[k] for k in top]
    np.testing.assert_allclose([row['probability'] for row in result['top5']], p[top],
                               atol=1e-4)
  assert len({r['top5'][0]['index'] for r in results}) > 1  # the images are told apart


# RGB photographs: the streamed eval preprocessing, model.json's class names, bad files.

RGB_NAMES = ['cat', 'coffee', 'astronaut', 'rocket', 'camera', 'other']


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """One rs.predict run of an RGB model over real photos (JPEG, PNG, BMP, GIF) and 3 bad files."""
  tmp = tmp_path_factory.mktemp('photos')
  meta = {'model': 'resnetrs26', 'num_classes': 6, 'overrides': TINY, 'image_size': 64,
          'channels': 3, 'mean': [120.0, 110.0, 100.0], 'std': [60.0, 58.0, 62.0],
          'dataset': 'folder', 'preprocess': 'center_crop', 'eval_crop_padding': 32,
          'eval_crop_fraction': 0.875,
          'resize_method': 'bicubic', 'class_names': RGB_NAMES}
  good = {'astronaut.jpg': (skimage_data.astronaut(), 'JPEG'),
          'coffee.png': (skimage_data.coffee(), 'PNG'),
          'chelsea.bmp': (skimage_data.chelsea(), 'BMP'),
          'rocket.gif': (skimage_data.rocket(), 'GIF')}
  files = {}
  for name, (image, fmt) in good.items():
    files[name] = encode(image, fmt)
  files['notes.jpg'] = b'this is a text file, not a JPEG\n'
  files['cut.jpg'] = files['astronaut.jpg'][:len(files['astronaut.jpg']) // 2]
  for name, data in files.items():
    (tmp / name).write_bytes(data)
  # The official eval crop at model.json's fraction 0.875 (not the padding rule).
  inputs = np.stack([tf_preprocess.eval_image_from_bytes(tf.constant(files[name]), 64,
                                                         crop_fraction=0.875).numpy()
                     for name in good])
  weights = save_weights(tmp / 'weights', meta, inputs)
  missing = str(tmp / 'missing.png')
  paths = [str(tmp / n) for n in ('astronaut.jpg', 'notes.jpg', 'coffee.png', 'cut.jpg',
                                  'chelsea.bmp', 'rocket.gif')] + [missing]
  run = run_predict(f'--checkpoint={weights}', '--batch_size=3', *paths)  # batches 3 + 1
  good_paths = [p for p in paths if os.path.basename(p) in good]
  bad_paths = [p for p in paths if p not in good_paths]
  return weights, run, good_paths, bad_paths, inputs, meta


def test_photos_top5_is_the_softmax_of_the_official_eval_crop(photos):
  weights, run, good_paths, _, inputs, meta = photos
  blocks = parse_text(run.stdout)
  assert list(blocks) == good_paths  # in the order given, the bad files left out
  want = softmax_in_process(weights, meta, inputs)
  for path, p in zip(good_paths, want):
    top = np.argsort(-p)[:5]
    assert [label for _, label in blocks[path]] == [RGB_NAMES[k] for k in top]
    np.testing.assert_allclose([q for q, _ in blocks[path]], p[top], atol=1e-4)


def test_batches_split_over_devices_predict_as_one_device(photos):
  """Batches padded to a multiple of the devices: a full batch of 3 on 2 devices is 4 rows, of
  which the padding row must not be taken for the next image (it once was)."""
  weights, _, good_paths, _, _, _ = photos
  one, two = (predict.Predictor(weights, batch_size=3, devices=jax.devices()[:n]).predict(
      good_paths) for n in (1, 2))
  for a, b in zip(one, two):
    assert [r['index'] for r in a['top5']] == [r['index'] for r in b['top5']]
    np.testing.assert_allclose([r['probability'] for r in a['top5']],
                               [r['probability'] for r in b['top5']], atol=1e-5)


def test_each_unreadable_file_gets_one_line_and_a_failing_exit(photos):
  _, run, good_paths, bad_paths, *_ = photos
  assert run.returncode != 0
  lines = run.stderr.strip().splitlines()
  for path in bad_paths:
    named = [line for line in lines if path in line]
    assert len(named) == 1 and named[0].startswith(f'rs.predict: {path}: '), run.stderr
  why = {os.path.basename(p): next(line for line in lines if p in line) for p in bad_paths}
  assert 'No such file' in why['missing.png']
  assert 'Unknown image file format' in why['notes.jpg']
  assert 'truncated' in why['cut.jpg']
  assert lines[-1] == f'error: 3 of {len(good_paths) + 3} images could not be read (named above)'
  assert 'Traceback' not in run.stderr and len(parse_text(run.stdout)) == len(good_paths)


def test_a_directory_without_weights_is_one_line(tmp_path, photos):
  good_paths = photos[2]
  run = run_predict(f'--checkpoint={tmp_path}', good_paths[0])
  assert run.returncode != 0 and run.stdout == ''
  assert run.stderr.strip().splitlines() == [
      f'error: --checkpoint={tmp_path}: {tmp_path} holds no rs weights (no model.json): '
      'give a directory written by rs.export or rs.convert']


# ImageNet: timm imports get ImageNet's preprocessing, resolution and readable names.

def test_timm_imagenet_weights_name_the_classes_in_wordnet_order(tmp_path, photos):
  """rs.convert's version-1 model.json (the network only) gets the official ImageNet eval."""
  meta = {'model': 'resnetrs50', 'num_classes': 1000, 'source': 'timm', 'overrides': TINY,
          'checkpoint': '/tmp/resnetrs50.pth'}
  model = model_of(meta)
  variables = random_variables(model, np.random.default_rng(0).standard_normal((2, 32, 32, 3)))
  # Logits = the head's bias: 207 first, 281 second, whatever the image.
  bias = np.zeros(1000, np.float32)
  bias[[207, 281]] = 12.0, 9.0
  variables['params']['head'] = {'kernel': np.zeros_like(variables['params']['head']['kernel']),
                                 'bias': bias}
  weights = save_version_1(tmp_path, meta, variables)
  predictor = predict.Predictor(weights)
  from configs import base
  assert predictor.prepare == eval_input.EvalInput(
      image_size=160, channels=3, mean=base.get_config().data.mean,
      std=base.get_config().data.std, method='center_crop',
      crop_padding=32)  # the released rs50_i160's eval
  [result] = predictor.predict([photos[2][0]])
  top = result['top5']
  assert [(r['index'], r['label']) for r in top[:2]] == [(207, 'golden retriever'),
                                                        (281, 'tabby, tabby cat')]
  want = np.exp(bias) / np.exp(bias).sum()
  np.testing.assert_allclose([r['probability'] for r in top], want[[207, 281, 0, 1, 2]],
                             rtol=1e-5)
  assert top[2]['label'] == 'tench, Tinca tinca'


def test_imagenet_names_follow_the_wordnet_ids_of_tfds_imagenet2012():
  """Independent truth: tfds's sorted WordNet ids and timm's id -> lemma table."""
  names = sources.imagenet_class_names()
  tfds_dir = os.path.dirname(importlib.util.find_spec('tensorflow_datasets').origin)
  [wnid_file] = glob.glob(f'{tfds_dir}/**/imagenet2012/labels.txt', recursive=True)
  wnids = open(wnid_file).read().split()
  assert len(names) == len(wnids) == 1000 and wnids[207] == 'n02099601'  # golden retriever
  timm = importlib.util.find_spec('timm')
  if timm is None:
    pytest.skip('timm (the lemma table) is not installed')
  table = os.path.join(os.path.dirname(timm.origin), 'data', '_info',
                       'imagenet_synset_to_lemma.txt')
  lemma = dict(line.rstrip('\n').split('\t', 1) for line in open(table))
  differ = {i: names[i] for i, w in enumerate(wnids) if names[i] != lemma[w]}
  assert differ == {134: 'crane (bird)', 517: 'crane (machine)'}  # WordNet: both 'crane'


def test_class_names_of_version_1_model_json():
  """Version 1 named classes only where given; its upgrade names them from the dataset."""
  meta = {'model': 'resnetrs26', 'num_classes': 10, 'image_size': 32, 'channels': 1,
          'mean': [72.9], 'std': [90.0], 'preprocess': 'resize'}
  upgrade = lambda **changes: weights.Description.from_json({**meta, **changes})
  assert upgrade(dataset='fashion_mnist').names() == FASHION_NAMES
  assert upgrade(dataset='fashion_mnist').input.native_size == 28
  assert upgrade(dataset='folder').names()[7] == 'class 7'
  names = [f'n{i}' for i in range(10)]
  assert upgrade(dataset='fashion_mnist', class_names=names).names() == names
  with pytest.raises(weights.WeightsError, match='names 3 classes, the model has 10'):
    upgrade(class_names=['a', 'b', 'c'])


def test_released_resolutions_are_the_configs():
  """rs.convert's default resolution is the released checkpoint's, each with its config."""
  from rs import cli
  from rs.models import official
  for name, size in official.TIMM_IMAGE_SIZE.items():
    assert weights.released_image_size(name) == size
    if name.startswith('efficientnet_'):  # one config file, the variant after the colon
      variant = name.removeprefix('efficientnet_')
      config = cli.load_config_file(f'{ROOT}/configs/efficientnet.py:{variant}')
      assert (config.model.name, config.data.image_size) == (name, size)
    else:
      assert (name, size) in official.RELEASED
      assert os.path.exists(f'{ROOT}/configs/rs{name.removeprefix("resnetrs")}_i{size}.py')
  assert weights.released_image_size('resnetrs26') is None
