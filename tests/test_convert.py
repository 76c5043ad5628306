"""rs's network against timm's independent ResNet-RS, through rs.convert (issue 3)."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, process_env, run_command
from rs import convert, weights
from rs.models import create_model

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')
skimage_data = pytest.importorskip('skimage.data')

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


def photographs(size: int) -> np.ndarray:
  """Four real photographs, resized to size x size and normalised: float32 NHWC."""
  import tensorflow as tf
  images = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(),
            skimage_data.rocket()]
  batch = np.stack([tf.image.resize(i, (size, size), method='bicubic').numpy() for i in images])
  return ((batch - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def randomized_timm(name: str, seed: int = 0, **kwargs):
  """A timm model whose BN weights, biases and running statistics are random too: zero-init
  gammas and unit statistics would hide mistakes in the BN and residual mapping."""
  torch.manual_seed(seed)
  model = timm.create_model(name, pretrained=False, **kwargs)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.3, 1.0)
        m.bias.uniform_(-0.2, 0.2)
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 2.0)
  return model


def logits_of(timm_model, rs_name, images, train=False, **overrides):
  variables = convert.from_timm(timm_model.state_dict(), rs_name, **overrides)
  model = create_model(rs_name, num_classes=variables['params']['head']['bias'].shape[0],
                       dropout_rate=0.0, **overrides)
  x = jnp.asarray(images)
  if train:
    ours, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  else:
    ours = model.apply(variables, x, train=False)
  timm_model.train(train)
  with torch.no_grad():
    theirs = timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  return np.asarray(ours), theirs


@pytest.mark.parametrize('name,size', [('resnetrs50', 160), ('resnetrs152', 64)])
def test_inference_logits_match_timm(name, size):
  ours, theirs = logits_of(randomized_timm(name), name, photographs(size))
  assert np.abs(theirs).max() > 0.1  # the comparison is not between near-zero outputs
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_training_mode_logits_match_timm():
  """Batch statistics instead of running ones; dropout and stochastic depth off in both."""
  ours, theirs = logits_of(randomized_timm('resnetrs50', seed=1), 'resnetrs50', photographs(128),
                           train=True)
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize('name,size', [('efficientnet_b0', 224), ('efficientnet_b3', 130)])
def test_efficientnet_logits_match_timms_tf_ports(name, size):
  """timm's tf_efficientnet_b* (TF 'SAME' padding, BN eps 1e-3), random BN statistics, real
  photographs: at 224 every stride-2 layer sees an even input (padding (0, 1) or (1, 2)); at
  130 the sizes run 130, 65, 33, 17, 9 and odd ones pad evenly."""
  ours, theirs = logits_of(randomized_timm(f'tf_{name}'), name, photographs(size))
  assert np.abs(theirs).max() > 0.1
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_efficientnet_training_mode_logits_match_timm():
  ours, theirs = logits_of(randomized_timm('tf_efficientnet_b0', seed=1), 'efficientnet_b0',
                           photographs(96), train=True, stochastic_depth_rate=0.0)
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_vanilla_resnet50_converts_too():
  """Every ResNet-RS switch off is timm's plain resnet50 (7x7 stem, max-pool, no SE)."""
  ours, theirs = logits_of(randomized_timm('resnet50'), 'resnet50', photographs(96))
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_every_rs_variable_is_filled_exactly_once():
  state = randomized_timm('resnetrs50').state_dict()
  variables = convert.from_timm(state, 'resnetrs50')
  model = create_model('resnetrs50')
  want = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  flat = lambda t: {'/'.join(k): v.shape for k, v in
                    flax.traverse_util.flatten_dict(dict(t)).items()}
  assert flat(variables) == flat(want)
  used = {convert.timm_name(path, deep_stem=True, avg_down=True)
          for path in flax.traverse_util.flatten_dict(variables)}
  assert len(used) == len(flat(want))  # no two rs variables read the same tensor
  assert used == {k for k in state if not k.endswith('num_batches_tracked')}


def test_mismatches_are_errors_that_name_the_tensor():
  state = {k: v.numpy() for k, v in randomized_timm('resnetrs50').state_dict().items()}
  missing = dict(state)
  del missing['layer3.2.se.fc1.bias']
  with pytest.raises(convert.ConversionError, match=r'layer3\.2\.se\.fc1\.bias'):
    convert.from_timm(missing, 'resnetrs50')
  with pytest.raises(convert.ConversionError, match=r'layer3\.\d+\.\S+ not in the checkpoint.*'
                     r'stage3_block\d+.*timm resnetrs101'):
    convert.from_timm(state, 'resnetrs101')  # RS-101 has 23 blocks in stage 3, RS-50 6
  with pytest.raises(convert.ConversionError, match=r'has shape .* needs .*wrong --model'):
    convert.from_timm(state, 'resnetrs50', width_multiplier=0.5)
  extra = dict(state, **{'head.extra.weight': np.zeros(3)})
  with pytest.raises(convert.ConversionError, match=r'head\.extra\.weight'):
    convert.from_timm(extra, 'resnetrs50')


def test_checkpoint_files_convert_evaluate_and_fine_tune(tmp_path, tiny):
  """A timm state dict on disk (.pth and .safetensors) -> rs weights that rs.evaluate scores
  exactly as timm does on the same real images, and that a training run starts from."""
  from safetensors.numpy import save_file

  from rs import evaluate, sharding, train
  from rs.data import pipeline as pipeline_lib

  config = tiny()
  config.model.conv_lowering = 'native'
  # timm's ResNet-RS at rs's tiny size: width 1/8 (stem 4/8, stages 8..64), 1 block per stage.
  timm_model = randomized_timm('resnetrs50', layers=(1, 1, 1, 1), stem_width=4,
                               channels=(8, 16, 32, 64), in_chans=1, num_classes=10)
  pth, st = tmp_path / 'm.pth', tmp_path / 'm.safetensors'
  torch.save(timm_model.state_dict(), pth)
  save_file({k: v.numpy() for k, v in timm_model.state_dict().items()}, str(st))
  overrides = dict(stage_sizes=(1, 1, 1, 1), width_multiplier=0.125)
  from_pth = convert.convert_file(str(pth), 'resnetrs26', str(tmp_path / 'w'), 24, **overrides)
  from_st = convert.convert_file(str(st), 'resnetrs26', str(tmp_path / 'w2'), 24, **overrides)
  jax.tree.map(np.testing.assert_array_equal, from_pth, from_st)
  loaded, description = weights.load(str(tmp_path / 'w'))
  jax.tree.map(np.testing.assert_array_equal, loaded, from_pth)
  assert (description.model, description.num_classes) == ('resnetrs26', 10)
  assert description.architecture == overrides
  # A grayscale timm network (in_chans=1): one channel, ImageNet's normalisation averaged.
  spec = description.input
  assert (spec.image_size, spec.channels, spec.method, spec.crop_padding) == (
      24, 1, 'center_crop', 32)
  assert spec.mean == pytest.approx((IMAGENET_MEAN.mean(),))
  assert spec.std == pytest.approx((IMAGENET_STD.mean(),))
  assert description.class_names is None and description.dataset is None  # 10 classes
  assert description.source == {'tool': 'rs.convert', 'from': 'timm', 'checkpoint': str(pth)}

  # rs.evaluate's accuracy equals timm's on the same 500 test images.
  result = evaluate.evaluate_weights(str(tmp_path / 'w'), config)
  pipeline = pipeline_lib.create_pipeline(config)
  correct = n = 0
  timm_model.eval()
  for batch in pipeline.eval_iter():
    x = (batch['image'].astype(np.float32) - config.data.mean[0]) / config.data.std[0]
    with torch.no_grad():
      logits = timm_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    correct += np.sum((logits.argmax(-1) == batch['label']) * batch['mask'])
    n += batch['mask'].sum()
  assert result['num_examples'] == n == 500
  assert result['top1'] == pytest.approx(correct / n, abs=1e-9)

  # Fine-tuning starts from the weights: with LR 0 and BN statistics frozen, the run's
  # evaluation is exactly that of the converted weights.
  config.init_from = str(tmp_path / 'w')
  config.optimizer.base_learning_rate = 0.0
  config.model.bn_momentum = 1.0
  config.train_steps = 2
  config.eval_every_steps = 2
  tuned = train.train_and_evaluate(config, str(tmp_path / 'run'),
                                   mesh=sharding.create_mesh(jax.devices()[:1]))
  assert tuned['top1'] == pytest.approx(result['top1'])
  assert tuned['ema_top1'] == pytest.approx(result['top1'])


def test_converted_imagenet_weights_predict_as_timm_with_no_config(tmp_path):
  """RS-50 from a timm .safetensors file describes itself: the released resolution, the
  official eval crop and ImageNet's names; rs.predict on a photo gives timm's probabilities
  on the same official eval input."""
  import tensorflow as tf
  from safetensors.numpy import save_file

  from rs import predict
  from rs.data import sources, tf_preprocess
  timm_model = randomized_timm('resnetrs50')
  save_file({k: v.numpy() for k, v in timm_model.state_dict().items()},
            str(tmp_path / 'rs50.safetensors'))
  convert.convert_file(str(tmp_path / 'rs50.safetensors'), 'resnetrs50', str(tmp_path / 'w'))
  description = weights.read(str(tmp_path / 'w'))
  assert (description.input.image_size, description.input.method) == (160, 'center_crop')
  assert description.names() == sources.imagenet_class_names()
  assert description.dataset['name'] == 'imagenet2012'

  photo = tf.io.encode_jpeg(skimage_data.chelsea()).numpy()
  (tmp_path / 'cat.jpg').write_bytes(photo)
  [result] = predict.Predictor(str(tmp_path / 'w')).predict([str(tmp_path / 'cat.jpg')])
  x = tf_preprocess.eval_image_from_bytes(tf.constant(photo), 160).numpy()
  x = ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
  timm_model.eval()
  with torch.no_grad():
    want = torch.softmax(timm_model(torch.from_numpy(x.transpose(2, 0, 1)[None])), -1)[0]
  top = np.argsort(-want.numpy())[:5]
  assert [r['index'] for r in result['top5']] == top.tolist()
  np.testing.assert_allclose([r['probability'] for r in result['top5']], want.numpy()[top],
                             rtol=1e-3, atol=1e-5)


def test_command_lines_convert_then_evaluate(tmp_path):
  """The README's commands: rs.convert on a .safetensors file, then rs.evaluate on it."""
  import json
  import subprocess
  import sys

  from safetensors.numpy import save_file
  timm_model = randomized_timm('resnetrs50', layers=(1, 1, 1, 1), stem_width=4,
                               channels=(8, 16, 32, 64), in_chans=1, num_classes=10)
  save_file({k: v.numpy() for k, v in timm_model.state_dict().items()},
            str(tmp_path / 'm.safetensors'))
  env = process_env()
  run = lambda *args: subprocess.run([sys.executable, '-m', *args], cwd=ROOT, env=env,
                                     capture_output=True, text=True, check=True).stdout
  out = run('rs.convert', '--from=timm', '--model=resnetrs26', '--stage_sizes=1,1,1,1',
            '--width_multiplier=0.125', f'--checkpoint={tmp_path}/m.safetensors',
            f'--out={tmp_path}/w', '--image_size=16', '--json')
  converted = json.loads(out)  # --json: stdout holds the JSON only
  assert converted['model'] == 'resnetrs26'
  with pytest.raises(subprocess.CalledProcessError) as error:  # wrong architecture: named
    run('rs.convert', '--model=resnetrs26', f'--checkpoint={tmp_path}/m.safetensors',
        f'--out={tmp_path}/bad', '--image_size=16')  # the registered (2, 2, 2, 2), full width
  last = error.value.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'wrong --model' in last
  # The config's data and evaluation input (its network is model.json's).
  out = run('rs.evaluate', '--config=configs/fashion_mnist.py', f'--weights={tmp_path}/w',
            '--config.data.image_size=16', "--config.data.eval_split=test[:200]",
            '--config.eval_batch_size=100', '--json')  # one device
  result = json.loads(out)
  assert result['num_examples'] == 200 and 0 <= result['top1'] <= 1
  # Without --json, one line for a person: the same figures.
  text = run_command('rs.evaluate', '--config=configs/fashion_mnist.py', f'--weights={tmp_path}/w',
                     '--config.data.image_size=16', "--config.data.eval_split=test[:200]",
                     '--config.eval_batch_size=96').stdout  # the tests' 8 devices
  assert text.startswith(f"{tmp_path}/w: top-1 {100 * result['top1']:.2f}%, top-5 "
                         f"{100 * result['top5']:.2f}%, loss ")  # summed in another order
  assert text.endswith(', on 200 images\n') and len(text.splitlines()) == 1
  text = run_command('rs.convert', '--model=resnetrs26', '--stage_sizes=1,1,1,1',
                     '--width_multiplier=0.125', f'--checkpoint={tmp_path}/m.safetensors',
                     f'--out={tmp_path}/w2', '--image_size=16').stdout
  assert text == (f"Wrote resnetrs26 ({converted['params']:,} parameters) to {tmp_path}/w2; "
                  f'score it with: python -m rs.evaluate --weights={tmp_path}/w2\n')
