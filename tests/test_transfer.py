"""Fine-tuning: partial loading with a new classifier, frozen or slower backbones, the configs."""
import functools
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rs import checkpoint, optim, programs, train, transfer, validate, weights
from rs.state import path_name


def variables_of(config, seed, num_classes=10):
  model = programs.build_model(config, num_classes)
  size = config.data.image_size
  return jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(seed), jnp.zeros((1, size, size, 1)))


def test_merge_loads_all_but_the_skipped_and_names_every_difference(tiny):
  config = tiny()
  initial, saved = variables_of(config, 0), variables_of(config, 1)
  merged, report = transfer.merge(initial, saved, skip='^head/')
  for (p, x), y, z in zip(jax.tree_util.tree_flatten_with_path(merged)[0],
                          jax.tree.leaves(initial), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(x, y if '/head/' in f'/{path_name(p)}' else z)
  assert report['skipped'] == ['params/head/bias', 'params/head/kernel']
  assert len(report['loaded']) == len(jax.tree.leaves(initial)) - 2 and not report['unexpected']

  # Another number of classes: the head's shapes differ; an error unless it is skipped.
  other = variables_of(config, 1, num_classes=5)
  with pytest.raises(transfer.WeightsMismatch,
                     match=r'shapes differ for params/head/bias \(saved \(5,\), model \(10,\)\)'):
    transfer.merge(initial, other)
  transfer.merge(initial, other, skip='^head/')
  # Missing and unexpected parameters are named.
  pruned = jax.tree.map(lambda x: x, saved)
  del pruned['params']['stem1']
  pruned['params']['extra'] = {'kernel': np.zeros(3)}
  with pytest.raises(transfer.WeightsMismatch, match=r'missing from the weights: '
                     r'params/stem1/bn/bias, params/stem1/bn/scale, params/stem1/conv/kernel'):
    transfer.merge(initial, pruned)
  _, report = transfer.merge(initial, pruned, skip='^stem1/')
  assert report['unexpected'] == ['params/extra/kernel']


def test_param_groups_scale_freeze_and_skip_decay_analytically():
  """One SGD step from zero momentum: update = -lr * multiplier * (grad + wd * param)."""
  params = {'head': {'kernel': jnp.full((2, 2), 2.0)}, 'stem': {'kernel': jnp.full((3,), 2.0)},
            'stage1': {'bn': {'scale': jnp.full((3,), 2.0)}}}
  grads = jax.tree.map(jnp.ones_like, params)
  opt = {'weight_decay': 0.1, 'momentum': 0.9, 'nesterov': False,
         'param_groups': ('^head/:10', '^stage1/:0')}
  tx = optim.create_optimizer(_Config(opt), optax.constant_schedule(0.5))
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['head']['kernel'], -0.5 * 10 * (1 + 0.1 * 2.0))
  np.testing.assert_allclose(updates['stem']['kernel'], -0.5 * (1 + 0.1 * 2.0))
  np.testing.assert_array_equal(updates['stage1']['bn']['scale'], 0.0)  # frozen
  with pytest.raises(ValueError, match=r"'\^head/': write 'REGEX:MULTIPLIER'"):
    transfer.parse_param_groups(('^head/',))


class _Config(dict):
  """A dict with attribute access, as ml_collections gives the optimizer section."""
  __getattr__ = dict.__getitem__


def test_finetune_with_a_frozen_backbone_changes_only_the_new_head_and_keeps_bn_statistics(tiny, tmp_path):
  source = tiny()
  saved = variables_of(source, 7)
  weights.save(str(tmp_path / 'weights'), saved,
               weights.describe(source, 10, 1, source=({'tool': 'test'})))
  config = tiny(init_from=str(tmp_path / 'weights'), init_skip='^head/', train_steps=3)
  config.optimizer.param_groups = ('^head/:1', '.*:0')
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'run' / 'checkpoints'), 1, 1)
  tuned = jax.device_get(ckpt.restore())
  ckpt.close()
  saved = jax.device_get(saved)
  for name, value in transfer.named_leaves(tuned['params']).items():
    before = transfer.named_leaves(saved['params'])[name]
    if name.startswith('head/'):  # re-initialised, then trained: neither the saved one...
      assert not np.allclose(value, before)
    else:  # ...while every backbone parameter is exactly as saved
      np.testing.assert_array_equal(value, before, err_msg=name)
  # A linear probe: the backbone's BN statistics are the saved ones too (freeze_bn_statistics).
  for name, value in transfer.named_leaves(tuned['batch_stats']).items():
    np.testing.assert_array_equal(value, transfer.named_leaves(saved['batch_stats'])[name],
                                  err_msg=name)
  fresh = variables_of(config, 0)['params']['head']['kernel']  # the run's own init (seed 0)
  assert not np.allclose(tuned['params']['head']['kernel'], fresh)  # trained


def test_weights_for_another_head_are_refused_before_anything_is_written(tiny, tmp_path):
  """init_from with 7-class weights for a 10-class dataset and no init_skip: one line naming
  both networks and the fix, and no workdir."""
  source = tiny()
  saved = variables_of(source, 7, num_classes=7)
  weights.save(str(tmp_path / 'weights'), saved,
               weights.describe(source, 7, 1, source={'tool': 'test'}))
  with pytest.raises(validate.ConfigError) as error:
    train.train_and_evaluate(tiny(init_from=str(tmp_path / 'weights')), str(tmp_path / 'run'))
  assert str(error.value).startswith(
      f"init_from='{tmp_path}/weights': the weights are resnetrs14 with 7 classes for "
      '1-channel images; the config builds resnetrs14 with 10 classes for 1-channel images. '
      'shapes differ for params/head/bias (saved (7,), model (10,)), params/head/kernel')
  assert "set --config.init_skip to a regex" in str(error.value)
  assert not (tmp_path / 'run').exists()


def test_transfer_config_is_a_vanilla_resnet152_without_sd_or_ema():
  timm = pytest.importorskip('timm')
  from configs import transfer_resnet152
  config = transfer_resnet152.get_config()
  model = programs.build_model(config, 1000)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))
  reference = sum(p.numel() for p in timm.create_model('resnet152').parameters())
  assert ours == reference == 60_192_808  # torchvision's ResNet-152 count too
  assert model.se_ratio == 0 and not model.resnetd_shortcut and model.stem == 'classic'
  assert model.stochastic_depth_rate == 0 and config.ema_decay == 0
  assert config.data.randaugment_layers > 0 and config.label_smoothing > 0
  assert config.model.dropout_rate > 0 and config.optimizer.schedule == 'cosine'


# Input channels (issue 21): the input convolution adapted between 1- and 3-channel images.

def test_channel_rules_are_timms():
  kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32)
  np.testing.assert_allclose(transfer.adapt_channels(kernel, 1), kernel.sum(2, keepdims=True),
                             rtol=1e-6)
  gray = kernel[:, :, :1]
  np.testing.assert_allclose(transfer.adapt_channels(gray, 3), np.repeat(gray, 3, 2) / 3)
  four = transfer.adapt_channels(kernel, 4)  # RGB, R again; x 3/4 (timm's adapt_input_conv)
  np.testing.assert_allclose(four, np.concatenate([kernel, kernel[:, :, :1]], 2) * 0.75,
                             rtol=1e-6)
  with pytest.raises(ValueError, match='no rule adapts 4 input channels to 2'):
    transfer.adapt_channels(four, 2)


def _random_bn(variables, seed):
  """Variables whose BN statistics are random (positive variances): a real check of the
  whole network, not of a freshly initialised one."""
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda x: np.abs(rng.normal(1.0, 0.3, x.shape)).astype(np.float32)
                       if x.ndim else x, variables['batch_stats'])
  return {'params': variables['params'], 'batch_stats': stats}


@pytest.mark.parametrize('have, want', [(3, 1), (1, 3)])
def test_adapted_input_conv_gives_the_original_output_on_a_gray_image(tiny, have, want):
  """The issue's test: a 3-channel network's weights in a 1-channel network, on a grayscale
  image, give exactly the original's logits on the image replicated to RGB (and the reverse),
  with the same normalisation on every channel."""
  from rs import step as step_lib
  config = tiny()
  model = programs.build_model(config, 10)
  size = config.data.image_size
  init = lambda c, seed: jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(seed), jnp.zeros((1, size, size, c)))
  saved = _random_bn(init(have, 1), 2)
  merged, report = transfer.merge(init(want, 0), saved, channels=(have, want))
  assert report['channels_adapted'] == ['params/stem1/conv/kernel']
  assert len(report['loaded']) == len(jax.tree.leaves(saved))
  gray = np.random.default_rng(3).integers(0, 256, (2, size, size, 1)).astype(np.float32)
  rgb = np.repeat(gray, 3, -1)
  logits = lambda v, x: np.asarray(step_lib.logits(model, v, x, (120.0,) * x.shape[-1],
                                                   (60.0,) * x.shape[-1]))
  images = {1: gray, 3: rgb}
  np.testing.assert_allclose(logits(merged, images[want]), logits(saved, images[have]),
                             rtol=1e-4, atol=1e-4)
  # Without the channel counts nothing is adapted: the mismatch is named.
  with pytest.raises(transfer.WeightsMismatch, match='shapes differ for params/stem1/conv'):
    transfer.merge(init(want, 0), saved)


def test_the_embedded_default_fine_tunes_on_a_folder_of_gray_pngs(tiny_run, tmp_path, caplog):
  """The issue's walk-through: Fashion-MNIST weights (1 channel), exported, fine-tuned with
  configs/finetune.py on a class folder of grayscale PNGs with one color JPEG mixed in, read
  as RGB (the folder's default): the stem is adapted 1 -> 3 with one log line, and the result
  predicts files. As 1 channel (data.channels=1) the folder gives gray images, the color one
  through TF's luma weights, and the weights fit as they are."""
  import gzip
  import logging
  from PIL import Image
  from conftest import ROOT, run_command
  from rs import cli, export
  from rs.data import pipeline as pipeline_lib, preprocess
  workdir, _ = tiny_run
  export.export(workdir, str(tmp_path / 'weights'))
  with gzip.open('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz') as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:24]
  for i, image in enumerate(images):
    folder = tmp_path / 'digits' / ('train' if i < 16 else 'validation') / 'ab'[i % 2]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f'{i}.png')
  color = np.stack([images[0], images[1], images[2]], -1)
  Image.fromarray(color).save(tmp_path / 'digits' / 'validation' / 'a' / 'color.png')

  def finetune_config(channels):
    config = cli.load_config_file(f'{ROOT}/configs/finetune.py')
    config.model.name = 'resnetrs14'
    config.model.width_multiplier = 0.125
    config.init_from = str(tmp_path / 'weights')
    config.data.data_dir = str(tmp_path / 'digits')
    config.data.image_size = 28  # the files' size: the eval crop keeps all of them
    config.data.eval_crop_fraction = 1.0
    config.data.channels = channels
    if channels == 1:
      config.data.mean, config.data.std = (72.9,), (90.0,)
    config.batch_size = config.eval_batch_size = 8
    config.train_steps, config.warmup_steps, config.eval_every_steps = 2, 1, 2
    return config

  gray = pipeline_lib.create_pipeline(finetune_config(1))
  assert gray.image_shape == (28, 28, 1)
  batch = np.concatenate([b['image'][b['mask'] > 0] for b in gray.eval_iter()])
  assert batch.shape == (9, 28, 28, 1)
  # Class 'a' in file order: 16, 18, 20, 22, color; a gray file comes through as it is (the
  # whole image, resized to its own size), the color one as its luma (to within the uint8
  # rounding that with_channels adds).
  np.testing.assert_allclose(batch[0, ..., 0], images[16], atol=1e-3)
  luma = preprocess.with_channels(color[None], 1)[0, ..., 0]
  np.testing.assert_allclose(batch[4, ..., 0], luma, atol=1.0)
  validate.check_init_fits(finetune_config(1), 2, gray.image_shape)  # no adaptation needed

  with caplog.at_level(logging.INFO):
    result = train.train_and_evaluate(finetune_config(None), str(tmp_path / 'run'))
  assert result['num_examples'] == 9 and np.isfinite(result['loss'])
  adapted = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Adapted')]
  assert adapted == ['Adapted params/stem1/conv/kernel from 1-channel to 3-channel images '
                     '(repeated and divided by 3).']
  export.export(str(tmp_path / 'run'), str(tmp_path / 'tuned'))
  result = run_command('rs.predict', f'--checkpoint={tmp_path}/tuned', '--json',
                       str(tmp_path / 'digits' / 'validation' / 'a' / '16.png'),
                       str(tmp_path / 'digits' / 'validation' / 'a' / 'color.png'))
  assert result.status == 0 and len(result.stdout.strip().splitlines()) == 2
