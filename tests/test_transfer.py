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
